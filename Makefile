# One entry for everything; each target creates and uses .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-deep bench bench-scale lint services clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

## demo: broker + collector (SQLite, demo registry) + simulated fleet; Ctrl-C stops all
demo: $(STAMP)
	$(BIN)/gnahat-sim demo

## test: the whole test suite against real Mosquitto/SQLite (and PostgreSQL if configured),
## three pytest workers per core (every test has its own brokers, files and database; most
## of a test's time is waiting on brokers, units and timeouts, so cores are shared)
WORKERS     ?= $(shell echo $$(( $$(nproc) * 3 )))
PYTEST_ARGS ?= -n $(WORKERS) --dist worksteal --durations=20
test: $(STAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-deep: the same, with the API fuzzed at full depth (200 examples per operation)
test-deep: $(STAMP) services
	GNAHAT_FUZZ_EXAMPLES=200 $(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: every benchmark; prints figures and writes bench-results.json
bench: $(STAMP) services
	$(BIN)/python -m bench

## bench-scale: the year-long figures measured in full (a year's forwarding backlog, retention of ~5 M events; ~20 min)
bench-scale: $(STAMP) services
	GNAHAT_BENCH_SCALE=1 $(BIN)/python -m bench pages forward

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## services: install Mosquitto, nats-server and Chromium if absent (needs root and apt); tests start their own brokers
services:
	@bash .ci/ensure-mosquitto
	@bash .ci/ensure-nats
	@bash .ci/ensure-chromium || echo "no chromium: browser tests will be skipped (they fail under CI)" >&2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results.json

"""Retention: deleting a backlog of old raw events in bounded batches (documented
defaults), and the longest a batch holds a stream — on SQLite and PostgreSQL.

The issue's target (5 M rows) needs the year-of-data generator; this measures 100 000
rows and reports the rate, from which a larger apply scales linearly (set-based
deletes per stream, a fixed batch size)."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bench.bench_collector import payloads, pg_schema, pg_url, prepared_db
from bench.common import Results
from collector.db import make_engine, session_factory
from collector.intake.retention import RetentionReport, apply_retention
from collector.intake.store import Received, Store

EVENTS = 100_000


def measure(url: str) -> tuple[float, float]:
    prepared_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    store = Store(sessions)
    now = datetime(2026, 11, 25, tzinfo=UTC)
    msgs = [Received(t, b, now) for t, b in payloads(EVENTS, "ret")]
    for i in range(0, len(msgs), 2000):
        store.process(msgs[i : i + 2000])
    report, elapsed, longest = timed_apply(sessions, date(2026, 12, 31), now)
    engine.dispose()
    if report.events_deleted != EVENTS:
        raise RuntimeError(f"deleted {report.events_deleted} of {EVENTS}")
    return EVENTS / elapsed, longest


def timed_apply(
    sessions: sessionmaker[Session], cutoff: date, now: datetime
) -> tuple[RetentionReport, float, float]:
    """``apply_retention`` with its documented batch size: the report, the seconds it
    took and the longest time between two committed batches."""
    longest = 0.0
    last = time.perf_counter()

    def tick(device: str, stream: str, n: int) -> None:
        nonlocal longest, last
        t = time.perf_counter()
        longest, last = max(longest, t - last), t

    t0 = time.perf_counter()
    report = apply_retention(sessions, cutoff, now=now, on_batch=tick)
    return report, time.perf_counter() - t0, longest


def run(results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="gnahat-ret-") as d:
        rate, longest = measure(f"sqlite:///{Path(d) / 'ret.db'}")
    results.add("retention.apply_sqlite_events_per_s", rate, "events/s")
    results.add("retention.longest_batch_sqlite_s", longest, "s")
    base = pg_url()
    if base is None:
        results.missing("retention.apply_postgres_*", "no PostgreSQL answers")
        return
    rate, longest = measure(pg_schema(base, "bench_retention"))
    results.add("retention.apply_postgres_events_per_s", rate, "events/s")
    results.add("retention.longest_batch_postgres_s", longest, "s")

"""The OpenAPI document describes the API: schemathesis fuzzes every operation against
a live server on a real database, with no token, a revoked one and every role's, and
finds no 5xx and no answer the schema does not describe.

`positive_data_acceptance` is left out: the rules that tie two parameters together
(`start` <= `end`, at most 366 days) and calendar validity (`2026-02-30`) cannot be
written in JSON Schema, so a schema-valid request may rightly get a 422; they are in
each parameter's description instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, create_token, revoke_token
from collector.intake.store import Store
from collector.main import create_app
from tests.collector.helpers import T0, event, msg, served

#: Fuzzed examples per operation: fewer in the everyday run (`make test`), the full count
#: in `make test-deep` (``GNAHAT_FUZZ_EXAMPLES=200``).
EXAMPLES = int(os.environ.get("GNAHAT_FUZZ_EXAMPLES", "20"))
DEEP = EXAMPLES >= 200
#: The coverage phase (every boundary and wrong type of every parameter, whatever the
#: example count) sends the same values through the same validation whatever the token:
#: in the everyday run it goes with the token that reaches every handler (admin) and
#: with none; the other identities get examples, fuzzing and the stateful phase. In
#: `make test-deep`, every phase for every identity.
COVERAGE_FOR = {"admin", "none"}
#: In the everyday run, the identities that reach fewer handlers get fewer examples: the
#: roles that are refused on most routes half, a revoked token (refused everywhere,
#: before any parameter is read) a quarter. `make test-deep` gives each the full count.
SHARE = {"admin": 1.0, "none": 1.0, "analyst": 0.5, "technician": 0.5, "manager": 0.5,
         "revoked": 0.25}  # fmt: skip


def examples_for(who: str) -> int:
    return EXAMPLES if DEEP else max(5, round(EXAMPLES * SHARE[who]))


@pytest.fixture
def live(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> Iterator[tuple[str, dict[str, str]]]:
    store.process([msg(event(i)) for i in range(1, 30)])
    tokens: dict[str, str] = {}
    with sessions() as s, s.begin():
        for role in (Role.ADMIN, Role.ANALYST, Role.TECHNICIAN):
            tokens[role.value] = create_token(s, name=role.value, role=role)[1]
        tokens["manager"] = create_token(s, name="m", role=Role.MANAGER, centres=["SH-GYUMRI1"])[1]
        row, tokens["revoked"] = create_token(s, name="r", role=Role.ANALYST)
        s.flush()
        revoke_token(s, row.id)
    app = create_app(Settings(database_url=database_url, feed_settle_s=0))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with served(app) as url:
        yield url, tokens


@pytest.mark.slow
@pytest.mark.parametrize("who", ["none", "revoked", "admin", "analyst", "technician", "manager"])
def test_the_schema_describes_every_answer(
    live: tuple[str, dict[str, str]], who: str, tmp_path: Path
) -> None:
    base, tokens = live
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency"
    argv = [
        st, "run", f"{base}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(examples_for(who)),
        "--phases", "examples,coverage,fuzzing,stateful"
        if DEEP or who in COVERAGE_FOR else "examples,fuzzing,stateful",
        "--generation-deterministic",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    if who != "none":
        argv += ["--header", f"Authorization: Bearer {tokens[who]}"]
    # In the test's own folder: schemathesis keeps a cache beside where it runs.
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    generated = re.search(r"(\d+) generated", r.stdout)
    assert generated and int(generated.group(1)) > 0, r.stdout[-2000:]

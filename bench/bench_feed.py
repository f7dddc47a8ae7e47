"""The analyst feed: how fast a full export pages through stored events (NDJSON pages of
10 000 over HTTP, documented defaults), on SQLite and PostgreSQL."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from bench.bench_collector import payloads, pg_schema, pg_url, prepared_db
from bench.common import Results
from collector.config import Settings
from collector.db import make_engine, session_factory
from collector.edge.auth import Role, create_token
from collector.intake.store import Received, Store
from collector.main import create_app

EVENTS = 60_000


def export_rate(url: str) -> float:
    prepared_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    store = Store(sessions)
    now = datetime.now(UTC)
    msgs = [Received(t, b, now - timedelta(hours=1)) for t, b in payloads(EVENTS, "feed")]
    for i in range(0, len(msgs), 2000):
        store.process(msgs[i : i + 2000])
    if engine.dialect.name == "postgresql":
        # As autovacuum would have done on a live table (a table filled a moment ago has
        # no statistics, and its plans are those of an empty one).
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    with sessions() as s, s.begin():
        token = create_token(s, name="bench", role=Role.ANALYST)[1]
    app = create_app(Settings(database_url=url))
    got, after = 0, 0
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        t0 = time.perf_counter()
        while True:
            r = client.get(
                "/api/v1/feeds/events", params={"after": after, "limit": 10_000}, headers=headers
            )
            lines = r.text.count("\n")
            if not lines:
                break
            got += lines
            after = int(r.headers["X-Next-Cursor"])
        elapsed = time.perf_counter() - t0
    engine.dispose()
    if got != EVENTS:
        raise RuntimeError(f"exported {got} of {EVENTS}")
    return got / elapsed


def run(results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="gnahat-feed-") as d:
        rate = export_rate(f"sqlite:///{Path(d) / 'feed.db'}")
        results.add("feed.export_sqlite_events_per_s", rate, "events/s", goal=">= 100000")
    base = pg_url()
    if base is None:
        results.missing("feed.export_postgres_events_per_s", "no PostgreSQL answers")
        return
    rate = export_rate(pg_schema(base, "bench_feed"))
    results.add("feed.export_postgres_events_per_s", rate, "events/s", goal=">= 100000")

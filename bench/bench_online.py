"""The phone channel: how long a visitor waits for "received" after pressing Send, on the
documented defaults (``GNAHAT_ONLINE_PROOF=visit``: each rating with its desk code),
over real HTTP to the collector served by uvicorn, on SQLite and PostgreSQL.

Each visitor is a fresh phone (its own cookie) that opens the desk's page from the code
on the desk's screen, then sends a score and two factor answers; the figure is the send
(the proof checked and spent, the rating and its factors stored with their aggregates in
one transaction). The desks are the demo registry's 141, each rated about once a minute.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.bench_collector import pg_schema, pg_url, prepared_db
from bench.common import Results, percentile
from collector.config import Settings
from collector.edge import online
from collector.main import create_app
from collector.models import Assignment

RATINGS = 400
SECRET = "bench-online-secret-0123456789abcdef"
START = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # a Tuesday, 09:00 in Yerevan


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` on a loopback port by uvicorn, as ``serve`` runs it."""
    import uvicorn

    from simulator.broker import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            server_header=False, proxy_headers=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the collector did not start")
        threading.Event().wait(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def submit_times(url: str) -> list[float]:
    prepared_db(url)
    app = create_app(Settings(database_url=url, secret_key=SECRET, alerts_enabled=False))
    now = [START]
    app.state.gnahat.clock = lambda: now[0]
    with app.state.gnahat.sessions() as s:
        desks = sorted({d for (d,) in s.query(Assignment.device_id).all()})
    times: list[float] = []
    with served(app) as base:
        for i in range(RATINGS):
            device = desks[i % len(desks)]
            if i and i % len(desks) == 0:
                now[0] += timedelta(seconds=61)  # every desk shows its next code
            path = f"/r/{online.desk_token(SECRET, device)}"
            with httpx.Client(base_url=base, timeout=10) as phone:
                page = phone.get(path, params={"c": online.desk_code(SECRET, device, now[0])})
                found = re.search(r'name="visit" value="([^"]+)"', page.text)
                if found is None:
                    raise RuntimeError(f"no form for {device}: {page.status_code}")
                form: dict[str, Any] = {"visit": found.group(1), "score": str(1 + i % 4),
                                        "solved": "yes", "conduct": "3", "lang": "hy"}  # fmt: skip
                t0 = time.perf_counter()
                r = phone.post(path, data=form)
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"rating {i} refused: {r.status_code}")
    return times


def run(results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="gnahat-online-") as d:
        times = submit_times(f"sqlite:///{Path(d) / 'online.db'}")
    results.add("online.submit_sqlite_p50_ms", percentile(times, 50), "ms")
    results.add("online.submit_sqlite_p99_ms", percentile(times, 99), "ms", goal="<= 100")
    base = pg_url()
    if base is None:
        results.missing("online.submit_postgres_p99_ms", "no PostgreSQL answers")
        return
    times = submit_times(pg_schema(base, "bench_online"))
    results.add("online.submit_postgres_p50_ms", percentile(times, 50), "ms")
    results.add("online.submit_postgres_p99_ms", percentile(times, 99), "ms", goal="<= 100")

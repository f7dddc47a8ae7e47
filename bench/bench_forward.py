"""Forwarding a backlog to the M&E IS: daily cells of 100 centres pushed to the
simulator's DHIS2-like fake answering each push after 200 ms, with the documented
defaults (``GNAHAT_FORWARD_CONCURRENCY``, rounds of 200), on SQLite.

The default run forwards a month's backlog (about 2 200 batches) and says how long a
year's would take at the measured rate, named as a projection; ``GNAHAT_BENCH_SCALE=1``
(``make bench-scale``) forwards a whole year and measures it. Goal: a year's backlog in
<= 15 min against a 200 ms receiver.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select

from bench.bench_pages import CENTRES, UNITS, registry
from bench.common import Results
from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.models import Assignment, DailyAggregate, ForwardBatch
from collector.outbound.forward import Forwarder
from collector.registry import import_registry
from simulator.me_is import FakeMeIs
from simulator.me_is_server import FakeMeIsServer, serve_registry

RECEIVER_S = 0.2
GOAL = "a year's backlog <= 15 min"


def weekdays(days: int) -> list[date]:
    """The last ``days`` days up to yesterday (Yerevan), opening days only."""
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Yerevan")).date()
    out = [today - timedelta(days=i) for i in range(1, days + 1)]
    return sorted(d for d in out if d.weekday() < 5)


def load(sessions: Any, days: list[date]) -> int:
    """Daily cells as ingest keeps them: every unit's desk, ~45 ratings a day."""
    with sessions() as s, s.begin():
        import_registry(s, registry(), now=datetime(2025, 1, 1, tzinfo=UTC))
        desks = s.execute(
            select(Assignment.centre_id, Assignment.default_employee_id, Assignment.service_id)
        ).all()
        assert len(desks) == CENTRES * UNITS
        now = datetime.now(UTC)
        rows = []
        for day in days:
            for centre, employee, service in desks:
                rows.append(
                    {"day": day, "centre_id": centre, "employee_id": employee or 0,
                     "service_id": service or 0, "scale": 4, "n1": 6, "n2": 3, "n3": 8,
                     "n4": 28, "n5": 0, "n": 45, "excluded": 0, "changed_at": now}
                )  # fmt: skip
        for i in range(0, len(rows), 5000):
            s.execute(insert(DailyAggregate), rows[i : i + 5000])
    return len(days) * CENTRES


def measure(days: int, work: Path) -> tuple[int, float, float]:
    """(batches, seconds to plan them all, seconds until every one is sent)."""
    url = f"sqlite:///{work / 'forward.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    batches = load(sessions, weekdays(days))
    fake = FakeMeIs(username="gnahat", password="bench")
    serve_registry(fake, sessions, work / "mapping.csv")
    fake.faults.delay_s = RECEIVER_S
    with FakeMeIsServer(fake) as server:
        settings = Settings(
            database_url=url,
            forward_url=server.url,
            forward_username="gnahat",
            forward_password="bench",
            forward_mapping=work / "mapping.csv",
        )
        fwd = Forwarder(sessions, settings)
        t0 = time.perf_counter()
        planned = fwd.plan()
        plan_s = time.perf_counter() - t0
        if planned != batches:
            raise RuntimeError(f"planned {planned} of {batches} batches")
        sent = 0
        while sent < batches:
            outcomes = fwd.send_due()
            if set(outcomes) - {"sent"}:
                raise RuntimeError(f"unexpected outcomes {outcomes}")
            if not outcomes:
                break
            sent += outcomes.get("sent", 0)
        total_s = time.perf_counter() - t0
        fwd.http.close()
    with sessions() as s:
        done = len(s.scalars(select(ForwardBatch.id).where(ForwardBatch.state == "sent")).all())
    engine.dispose()
    if done != batches:
        raise RuntimeError(f"{done} of {batches} batches sent")
    return batches, plan_s, total_s


def run(results: Results) -> None:
    scale = os.environ.get("GNAHAT_BENCH_SCALE") == "1"
    days = 365 if scale else 31
    with tempfile.TemporaryDirectory(prefix="gnahat-fwd-") as d:
        batches, plan_s, total_s = measure(days, Path(d))
    concurrency = Settings().forward_concurrency
    prefix = f"forward.backlog_{days}d_{CENTRES}c_200ms"
    results.add(f"{prefix}.batches", batches, "batches")
    results.add(f"{prefix}.concurrency", concurrency, "pushes in flight")
    results.add(f"{prefix}.first_plan_s", plan_s, "s")
    results.add(f"{prefix}.total_s", total_s, "s")
    results.add(f"{prefix}.batches_per_s", batches / total_s, "batches/s")
    year = len(weekdays(365)) * CENTRES
    if scale:
        results.add("forward.year_backlog_min", total_s / 60, "min", GOAL)
    else:
        results.add(
            "forward.year_backlog_projected_min",
            year / (batches / total_s) / 60,
            "min (projected from the month's rate; GNAHAT_BENCH_SCALE=1 measures it)",
            GOAL,
        )

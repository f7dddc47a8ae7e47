"""Daily aggregate cells rebuilt from raw events: set-based, in short steps, and only
what changed is touched.

Ingest keeps the cells exact incrementally (atomic ``+=`` upserts under the aggregate
lock); a rebuild is for after a bulk fix. It goes a few days at a time, each step one
transaction: one ``GROUP BY`` over those days' events, compared with the cells kept;
cells whose counts differ are written and stamped (so forwarding re-sends only them),
cells with no events left are removed; each step also recomputes its days' hourly
counts (the hour x weekday picture). Then each month's cells are summed again from its
daily cells, one month per transaction. Ingest waits at most one step for the lock.
Days whose raw events retention deleted keep their cells: they are the only record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    and_,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, sessionmaker

from collector.models import (
    EXCLUDED_FROM_SCORES,
    ChannelAggregate,
    DailyAggregate,
    Event,
    FactorAggregate,
    HourlyCount,
    Meta,
    MonthlyAggregate,
)
from device import protocol as p

AGG_LOCK_KEY = 0x676E6168  # "gnah": serialises aggregate updates across processes (PostgreSQL)
COUNTERS = ("n1", "n2", "n3", "n4", "n5", "n", "excluded")
#: Days per step of a rebuild (one transaction each).
STEP_DAYS = 7

CellKey = tuple[date, int, int, int, int]


@dataclass
class RebuildReport:
    days: int = 0
    cells: int = 0
    changed: int = 0
    removed: int = 0
    longest_step_s: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.days} day(s), {self.cells} cells checked, {self.changed} changed, "
            f"{self.removed} removed; longest step {self.longest_step_s * 1000:.0f} ms"
        )


def lock(session: Session) -> None:
    """Take the aggregate lock for this transaction (PostgreSQL; SQLite has one writer)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AGG_LOCK_KEY})


def factor_levels(answers: dict[str, Any], scale: int) -> list[tuple[str, int, int]]:
    """(factor, scale, level) of each answered factor: the scaled ones on the rating's
    scale; ``solved`` on its own three levels (1 no, 2 partly, 3 yes)."""
    out = []
    for factor, value in answers.items():
        if factor == "solved":
            if value in p.SOLVED_ANSWERS:
                out.append((factor, 3, p.SOLVED_ANSWERS.index(value) + 1))
        elif factor in p.SCALED_FACTORS and isinstance(value, int):
            out.append((factor, scale, value))
    return out


def purged_before(session: Session) -> date | None:
    row = session.get(Meta, "purged_before")
    return date.fromisoformat(row.value) if row is not None and row.value else None


def cells_from_events(
    session: Session, first: date, last: date
) -> tuple[dict[CellKey, tuple[int, ...]], dict[tuple[Any, ...], tuple[int, ...]]]:
    """The daily cells and the per-channel cells of ``first..last`` as the events say,
    from one GROUP BY (by employee and channel too, summed apart here)."""
    scored = Event.flags.op("&")(int(EXCLUDED_FROM_SCORES)) == 0
    emp = func.coalesce(Event.employee_id, 0)
    svc = func.coalesce(Event.service_id, 0)
    query = (
        select(
            Event.day,
            Event.centre_id,
            emp,
            svc,
            Event.scale,
            Event.channel,
            # count(*) FILTER: a third cheaper than sum(CASE ...) on PostgreSQL, measured
            *(func.count().filter(and_(scored, Event.score == level)) for level in range(1, 6)),
            func.count().filter(scored),
            func.count().filter(~scored),
        )
        .where(
            Event.type == p.EventType.RATING.value,
            Event.day >= first,
            Event.day <= last,
            Event.centre_id.is_not(None),
        )
        .group_by(Event.day, Event.centre_id, emp, svc, Event.scale, Event.channel)
    )
    daily: dict[Any, list[int]] = {}
    channels: dict[Any, list[int]] = {}
    for r in session.execute(query):
        counts = [int(x) for x in r[6:]]
        for cells, key in (
            (daily, (r[0], r[1], r[2], r[3], r[4])),
            (channels, (r[0], r[1], r[3], r[5], r[4])),  # day, centre, service, channel, scale
        ):
            acc = cells.get(key)
            if acc is None:
                cells[key] = list(counts)
            else:
                for i, x in enumerate(counts):
                    acc[i] += x
    return (
        {k: tuple(v) for k, v in daily.items()},
        {k: tuple(v) for k, v in channels.items()},
    )


def rebuild(sessions: sessionmaker[Session], *, clock: Callable[[], datetime]) -> RebuildReport:
    """Make every cell equal what the events say (see the module docstring)."""
    report = RebuildReport()
    with sessions() as s:
        kept_from = purged_before(s)
        bounds = s.execute(
            select(func.min(Event.day), func.max(Event.day)).where(
                Event.type == p.EventType.RATING.value
            )
        ).one()
        cell_bounds = s.execute(
            select(func.min(DailyAggregate.day), func.max(DailyAggregate.day))
        ).one()
    lows = [d for d in (bounds[0], cell_bounds[0]) if d is not None]
    highs = [d for d in (bounds[1], cell_bounds[1]) if d is not None]
    if not lows:
        return report
    first, end = min(lows), max(highs)
    if kept_from is not None:
        first = max(first, kept_from)
    day = first
    while day <= end:
        last = min(day + timedelta(days=STEP_DAYS - 1), end)
        started = time.perf_counter()
        with sessions() as s, s.begin():
            lock(s)
            _rebuild_step(s, day, last, clock(), report)
        report.longest_step_s = max(report.longest_step_s, time.perf_counter() - started)
        report.days += (last - day).days + 1
        day = last + timedelta(days=1)
    month = first.replace(day=1)
    while month <= end:
        following = (month + timedelta(days=32)).replace(day=1)
        started = time.perf_counter()
        with sessions() as s, s.begin():
            lock(s)
            rollup_month(s, month, following - timedelta(days=1))
        report.longest_step_s = max(report.longest_step_s, time.perf_counter() - started)
        month = following
    return report


def rollup_month(s: Session, month: date, last: date) -> None:
    """Make a month's cells the sum of its daily cells (one ``INSERT ... SELECT``)."""
    m = MonthlyAggregate
    d = DailyAggregate
    s.execute(delete(m).where(m.month == month))
    s.execute(
        insert(m).from_select(
            ["month", "centre_id", "employee_id", "service_id", "scale", *COUNTERS, "changed_at"],
            select(
                literal(month, Date()).label("month"),
                d.centre_id,
                d.employee_id,
                d.service_id,
                d.scale,
                *(func.sum(getattr(d, c)) for c in COUNTERS),
                func.max(d.changed_at),
            )
            .where(d.day >= month, d.day <= last)
            .group_by(d.centre_id, d.employee_id, d.service_id, d.scale),
        )
    )


def _hours_query(first: date, last: date) -> Any:
    """Counted ratings by (centre, day, UTC hour) of ``first..last``, as the events say."""
    utc_hour = sql_cast(func.extract("hour", Event.pressed_at), Integer)
    return (
        select(Event.centre_id, Event.day, utc_hour, func.count())
        .where(
            Event.type == p.EventType.RATING.value,
            Event.day >= first,
            Event.day <= last,
            Event.centre_id.is_not(None),
            Event.flags.op("&")(int(EXCLUDED_FROM_SCORES)) == 0,
        )
        .group_by(Event.centre_id, Event.day, utc_hour)
    )


def hours_from_events(
    session: Session, first: date, last: date
) -> dict[tuple[int, date, int], int]:
    """Counted ratings by (centre, day, UTC hour) of ``first..last``, as the events say."""
    rows = session.execute(_hours_query(first, last))
    return {(int(c or 0), d, int(h)): int(n) for c, d, h, n in rows}


def _rebuild_hours(s: Session, first: date, last: date) -> None:
    """The days' hourly counts made again in the database (nothing is forwarded from
    them, so they are simply replaced)."""
    from collector.intake.store.driver import Driver  # collector.intake.store imports this module

    # Read, then written in one statement: PostgreSQL runs a SELECT in parallel, never
    # the SELECT of an INSERT ... SELECT (0.26 vs 0.17 s a week of a generated year).
    rows = [
        {"centre_id": c, "day": d, "utc_hour": hour, "n": n}
        for c, d, hour, n in s.execute(_hours_query(first, last))
    ]
    h = HourlyCount
    s.execute(delete(h).where(h.day >= first, h.day <= last))
    if rows:
        Driver(s.connection(), h.__table__).upsert_many(
            ("centre_id", "day", "utc_hour", "n"),
            rows,
            "centre_id, day, utc_hour",
            "n = excluded.n",
        )


def _rebuild_step(
    s: Session, first: date, last: date, now: datetime, report: RebuildReport
) -> None:
    if s.get_bind().dialect.name == "postgresql":
        # These queries are costed high enough to be compiled by the JIT every time,
        # which costs more than it saves on a week's events.
        s.execute(text("SET LOCAL jit = off"))
        # Planned for the step's own days, every time: psycopg prepares a statement run
        # five times, and the generic plan gives up the parallel scan (338 vs 174 ms a
        # week's events, measured on a generated year).
        s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    want, channels = cells_from_events(s, first, last)
    agg = DailyAggregate
    kept: dict[CellKey, tuple[int, ...]] = {
        (r[0], r[1], r[2], r[3], r[4]): tuple(int(x) for x in r[5:])
        for r in s.execute(
            select(
                agg.day, agg.centre_id, agg.employee_id, agg.service_id, agg.scale,
                *(getattr(agg, c) for c in COUNTERS),
            ).where(agg.day >= first, agg.day <= last)
        )
    }  # fmt: skip
    report.cells += len(want)
    gone = [k for k, v in kept.items() if k not in want and any(v)]
    changed = [k for k, v in want.items() if kept.get(k) != v]
    for start in range(0, len(gone), 500):
        s.execute(
            delete(agg).where(
                tuple_(agg.day, agg.centre_id, agg.employee_id, agg.service_id, agg.scale).in_(
                    gone[start : start + 500]
                )
            )
        )
    if changed:
        _replace(
            s, agg, DAILY_KEYS, COUNTERS,
            [(*k, *want[k], now) for k in changed],
        )  # fmt: skip
    report.changed += len(changed)
    report.removed += len(gone)
    _rebuild_hours(s, first, last)
    _sync(s, ChannelAggregate, CHANNEL_KEYS, COUNTERS, channels, first, last, now)
    _sync(s, FactorAggregate, FACTOR_KEYS, ("n", "excluded"),
          factors_from_events(s, first, last), first, last, now)  # fmt: skip


DAILY_KEYS = ("day", "centre_id", "employee_id", "service_id", "scale")
CHANNEL_KEYS = ("day", "centre_id", "service_id", "channel", "scale")
FACTOR_KEYS = ("day", "centre_id", "service_id", "channel", "factor", "scale", "level")


def factors_from_events(
    session: Session, first: date, last: date
) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """Per-factor cells of ``first..last`` as the ``factors`` events say."""
    out: dict[tuple[Any, ...], list[int]] = {}
    rows = session.execute(
        select(
            Event.day, Event.centre_id, Event.service_id, Event.channel, Event.scale,
            Event.flags, Event.answers,
        ).where(
            # Through the partial index ix_events_factors_day: SQLite matches it with
            # the bound value, PostgreSQL in the step's custom plan.
            Event.type == p.EventType.FACTORS.value,
            Event.day >= first,
            Event.day <= last,
            Event.centre_id.is_not(None),
        )
    )  # fmt: skip
    for day, centre, service, channel, scale, flags, answers in rows:
        left_out = bool(flags & EXCLUDED_FROM_SCORES)
        for factor, sc, level in factor_levels(answers or {}, scale or 0):
            c = out.setdefault((day, centre, service or 0, channel, factor, sc, level), [0, 0])
            c[1 if left_out else 0] += 1
    return {k: tuple(v) for k, v in out.items()}


def _sync(
    s: Session,
    model: Any,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    want: dict[tuple[Any, ...], tuple[int, ...]],
    first: date,
    last: date,
    now: datetime,
) -> None:
    """Make the cells of ``first..last`` equal ``want``: only those that differ are
    written (and stamped), those with nothing behind them removed."""
    cols = [getattr(model, k) for k in keys]
    kept = {
        tuple(r[: len(keys)]): tuple(int(x) for x in r[len(keys) :])
        for r in s.execute(
            select(*cols, *(getattr(model, v) for v in values)).where(
                model.day >= first, model.day <= last
            )
        )
    }
    gone = [k for k in kept if k not in want]
    for start in range(0, len(gone), 300):
        s.execute(delete(model).where(tuple_(*cols).in_(gone[start : start + 300])))
    fresh = [(*k, *v, now) for k, v in want.items() if kept.get(k) != v]
    if fresh:
        _replace(s, model, keys, values, fresh)


def _replace(
    s: Session,
    model: Any,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """Write ``rows`` (keys, values, changed_at) over whatever cells have those keys: one
    statement per step on PostgreSQL (``unnest``), not one per row."""
    from collector.intake.store.driver import Driver  # collector.intake.store imports this module

    cols = (*keys, *values, "changed_at")
    Driver(s.connection(), model.__table__).upsert_many(
        cols,
        [dict(zip(cols, r, strict=True)) for r in rows],
        ", ".join(keys),
        ", ".join(f"{c} = excluded.{c}" for c in (*values, "changed_at")),
    )

"""Aggregate series for analysts: counts per level, n and CSAT with its interval, by day,
ISO week or month, and by centre, marz, service or the whole country.

Rows come from the daily aggregates: one GROUP BY over the period, by the period's
first day (the database buckets them); by month, whole months come from the monthly
cells (about twelve rows per cell for a year instead of ~250) and only the partial
months at the period's edges from the daily ones. Each row carries ``updated_at``, the newest
change of any cell behind it, so a nightly job asks ``updated_since`` and gets every
row a late event touched, whole.

Three encodings: JSON, CSV (one row per series row) and SDMX-CSV 2.0 (one observation
per row and measure, see :func:`sdmx_csv`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import DateTime, cast, func, select
from sqlalchemy.orm import Session

from collector.models import Centre, ChannelAggregate, DailyAggregate, MonthlyAggregate, Service
from collector.reading.scores import Counts, month_spans, wilson

Grain = Literal["day", "week", "month"]
By = Literal["centre", "marz", "service", "channel", "national"]
NATIONAL = "AM"
NO_SERVICE = "NONE"
COLUMNS = (
    "period",
    "grain",
    "by",
    "group",
    "scale",
    "n",
    "n1",
    "n2",
    "n3",
    "n4",
    "n5",
    "csat",
    "csat_low",
    "csat_high",
    "updated_at",
)
#: The SDMX structure the SDMX-CSV answer refers to (agency, id, version).
DSD = ("AM_MLSA", "GNAHAT_RATINGS", "1.0")
SDMX_DIMENSIONS = ("FREQ", "REF_AREA", "SERVICE", "CHANNEL", "SCALE", "MEASURE", "TIME_PERIOD")
MEASURES = ("N", "N1", "N2", "N3", "N4", "N5", "CSAT", "CSAT_LOW", "CSAT_HIGH")
FREQ = {"day": "D", "week": "W", "month": "M"}


def _period_start(session: Session, day: Any, grain: Grain) -> Any:
    """The first day of the period a cell's day falls in, computed by the database, so
    that a year by month comes back as twelve rows per group, not 365 (ISO weeks start
    on Monday; ``bucket`` names the period from its first day)."""
    if grain == "day":
        return day
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(grain, cast(day, DateTime))  # no time zone involved
    if grain == "week":  # the Sunday on or after the day, less six days: its Monday
        return func.date(day, "weekday 0", "-6 days")
    return func.strftime("%Y-%m-01", day)


def bucket(day: date, grain: Grain) -> str:
    """The period a day belongs to: ``2026-11-24``, ISO week ``2026-W48``, ``2026-11``."""
    if grain == "day":
        return day.isoformat()
    if grain == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


@dataclass
class Row:
    period: str
    group: str
    scale: int
    counts: Counts
    updated_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, grain: str, by: str) -> dict[str, Any]:
        c = self.counts
        levels = c.levels + [None] * (5 - c.scale)
        out: dict[str, Any] = {
            "period": self.period,
            "grain": grain,
            "by": by,
            "group": self.group,
            "scale": c.scale,
            "n": c.n,
            **{f"n{i + 1}": levels[i] for i in range(5)},
            "csat": None,
            "csat_low": None,
            "csat_high": None,
            "updated_at": self.updated_at,
        }
        if c.n:
            lo, hi = wilson(c.top_two, c.n)
            out.update(
                csat=round(c.top_two / c.n, 4), csat_low=round(lo, 4), csat_high=round(hi, 4)
            )
        return out


def series(
    session: Session,
    first: date,
    last: date,
    *,
    grain: Grain = "day",
    by: By = "centre",
    updated_since: datetime | None = None,
) -> list[Row]:
    daily: Any = ChannelAggregate if by == "channel" else DailyAggregate
    parts: list[tuple[Any, Any, date, date]] = [(daily, daily.day, first, last)]
    if grain == "month" and by != "channel":
        # Whole months from the monthly cells (~12 rows per cell for a year, not ~250),
        # the partial months at the edges from the daily ones.
        months, edges = month_spans(first, last)
        if months is not None:
            parts = [(daily, daily.day, lo, hi) for lo, hi in edges]
            parts.append((MonthlyAggregate, MonthlyAggregate.month, *months))
    rows: dict[tuple[str, str, int], Row] = {}
    for table, when, lo, hi in parts:
        _collect(session, rows, table, when, lo, hi, grain, by)
    out = sorted(rows.values(), key=lambda x: (x.period, x.group, x.scale))
    if updated_since is not None:
        out = [x for x in out if x.updated_at >= updated_since]
    return out


def _collect(
    session: Session,
    rows: dict[tuple[str, str, int], Row],
    a: Any,
    when: Any,
    first: date,
    last: date,
    grain: Grain,
    by: By,
) -> None:
    """Add the cells of ``a`` dated ``first..last`` (by ``when``) to ``rows``, grouped
    by period, group and scale."""
    group_col: Any
    if by == "channel":  # each channel on its own: counter (units) and online (phones)
        group_col = a.channel
    elif by == "centre":
        group_col = Centre.code
    elif by == "marz":
        group_col = Centre.marz
    elif by == "service":
        group_col = func.coalesce(Service.code, NO_SERVICE)
    else:
        group_col = None
    period = when if a is MonthlyAggregate else _period_start(session, when, grain)
    cols: list[Any] = [
        period,
        a.scale,
        *(func.sum(getattr(a, f"n{i}")) for i in range(1, 6)),
        func.max(a.changed_at),
    ]
    query = select(*cols, *([group_col] if group_col is not None else []))
    if by in ("centre", "marz"):
        query = query.join(Centre, Centre.id == a.centre_id)
    elif by == "service":
        query = query.outerjoin(Service, Service.id == a.service_id)
    query = query.where(when >= first, when <= last).group_by(
        period, a.scale, *([group_col] if group_col is not None else [])
    )
    for r in session.execute(query):
        start = r[0] if type(r[0]) is date else date.fromisoformat(str(r[0])[:10])
        scale = int(r[1])
        group = str(r[8]) if group_col is not None else NATIONAL
        key = (bucket(start, grain), group, scale)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key[0], group, scale, Counts(scale), r[7])
        row.counts.add([int(x or 0) for x in r[2:7]])
        if r[7] > row.updated_at:
            row.updated_at = r[7]


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow(
            {
                **r,
                "updated_at": r["updated_at"].isoformat(),
                **{k: "" if r[k] is None else r[k] for k in COLUMNS if k != "updated_at"},
            }
        )
    return buf.getvalue()


def sdmx_csv(records: Iterable[dict[str, Any]]) -> str:
    """SDMX-CSV 2.0: ``STRUCTURE,STRUCTURE_ID,ACTION``, the dimensions, ``OBS_VALUE``.

    Dimensions: ``FREQ`` (D, W, M), ``REF_AREA`` (centre code, marz ISO 3166-2 code, or
    ``AM``), ``SERVICE`` (service code, ``_T`` for all), ``CHANNEL`` (``COUNTER``,
    ``ONLINE``, ``_T`` for both), ``SCALE``, ``MEASURE`` (N, N1-N5,
    CSAT, CSAT_LOW, CSAT_HIGH) and ``TIME_PERIOD`` (SDMX's ``2026-11-24``,
    ``2026-W48``, ``2026-11``). Every observation is ``ACTION`` I (information).
    """
    agency, ident, version = DSD
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["STRUCTURE", "STRUCTURE_ID", "ACTION", *SDMX_DIMENSIONS, "OBS_VALUE"])
    for r in records:
        channel = "_T"
        if r["by"] == "service":
            area, service = NATIONAL, r["group"]
        elif r["by"] == "channel":
            area, service, channel = NATIONAL, "_T", r["group"].upper()
        else:
            area, service = r["group"], "_T"
        for measure in MEASURES:
            value = r[measure.lower()]
            if value is None:
                continue
            w.writerow(
                [
                    "datastructure",
                    f"{agency}:{ident}({version})",
                    "I",
                    FREQ[r["grain"]],
                    area,
                    service,
                    channel,
                    r["scale"],
                    measure,
                    r["period"],
                    value,
                ]
            )
    return buf.getvalue()

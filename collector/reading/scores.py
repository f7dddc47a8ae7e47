"""Scores from daily counts: what managers, analysts and the public may see.

Counts per score level are the primitive; everything else is derived here:

- per cell: n, mean, CSAT (share of the top two levels) with its Wilson 95 % interval;
- rankings of centres: the Dirichlet posterior with the national distribution as prior
  (``prior_weight`` pseudo-votes), over a rolling window, with a 95 % interval, so that
  3 ratings cannot top a centre with 3 000. The top-two share of a Dirichlet posterior
  is Beta-distributed, which also makes centres on different scales comparable;
- disclosure: an employee's figure only where n >= 5 (else "not enough ratings"); the
  public table of centre × service cells only where n >= 10, with complementary
  suppression so that no hidden cell can be derived from a row or column total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.models import DailyAggregate, Employee, MonthlyAggregate

Z95 = 1.959963984540054
EMPLOYEE_MIN_N = 5
PUBLIC_MIN_N = 10
NOT_ENOUGH = "not enough ratings"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


@dataclass
class Counts:
    """Ratings per level (index 0 = level 1) on one scale."""

    scale: int
    levels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.levels:
            self.levels = [0] * self.scale

    @property
    def n(self) -> int:
        return sum(self.levels)

    @property
    def top_two(self) -> int:
        return sum(self.levels[-2:])

    def add(self, other: Sequence[int]) -> None:
        for i, c in enumerate(other[: self.scale]):
            self.levels[i] += c

    def summary(self) -> dict[str, Any]:
        n = self.n
        out: dict[str, Any] = {"scale": self.scale, "n": n, "counts": list(self.levels)}
        if n:
            lo, hi = wilson(self.top_two, n)
            out.update(
                mean=round(sum((i + 1) * c for i, c in enumerate(self.levels)) / n, 3),
                csat=round(self.top_two / n, 4),
                csat_ci95=[round(lo, 4), round(hi, 4)],
            )
        else:
            out.update(mean=None, csat=None, csat_ci95=None)
        return out


def posterior_top_two(
    top: int, n: int, prior_share: float, prior_weight: float
) -> tuple[float, float, float]:
    """Posterior mean and 95 % interval of the top-two share under a Dirichlet prior
    whose top-two mass is ``prior_share`` with ``prior_weight`` pseudo-votes (its
    top-two marginal is a Beta; the interval uses the Beta's normal approximation)."""
    a = top + prior_weight * prior_share
    b = n - top + prior_weight * (1 - prior_share)
    if a + b == 0:
        return prior_share, 0.0, 1.0
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return mean, max(0.0, mean - Z95 * sd), min(1.0, mean + Z95 * sd)


# ---------------------------------------------------------------- queries


#: Counts per level summed over a group; rows start with these five columns.
LEVEL_SUMS = tuple(func.sum(getattr(DailyAggregate, f"n{i}")) for i in range(1, 6))


def _levels(row: Any, scale: int) -> list[int]:
    return [int(row[i] or 0) for i in range(scale)]


def month_spans(start: date, end: date) -> tuple[tuple[date, date] | None, list[tuple[date, date]]]:
    """``[start, end]`` as whole calendar months (first days of the first and last) and the
    day ranges left at either edge."""
    first = start if start.day == 1 else (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    after = end + timedelta(days=1)
    stop = after.replace(day=1)  # the first day not inside a whole month
    if first >= stop:
        return None, [(start, end)]
    edges = []
    if start < first:
        edges.append((start, first - timedelta(days=1)))
    if stop <= end:
        edges.append((stop, end))
    last_month = (stop - timedelta(days=1)).replace(day=1)
    return (first, last_month), edges


def level_sums(
    session: Session,
    start: date,
    end: date,
    keys: Sequence[str],
    centre_ids: Iterable[int] | None = None,
) -> dict[tuple[Any, ...], list[int]]:
    """Counts per level (n1..n5) over ``[start, end]`` grouped by ``keys`` (columns the
    daily and monthly cells share): whole months read the monthly cells, the edges the
    daily ones, so a year reads ~12 rows per cell instead of ~250."""
    months, edges = month_spans(start, end)
    parts: list[tuple[Any, Any, date, date]] = [
        (DailyAggregate, DailyAggregate.day, lo, hi) for lo, hi in edges
    ]
    if months is not None:
        parts.append((MonthlyAggregate, MonthlyAggregate.month, *months))
    ids = list(centre_ids) if centre_ids is not None else None
    out: dict[tuple[Any, ...], list[int]] = {}
    for table, when, lo, hi in parts:
        group = [getattr(table, k) for k in keys]
        q = (
            select(*group, *(func.sum(getattr(table, f"n{i}")) for i in range(1, 6)))
            .where(when >= lo, when <= hi)
            .group_by(*group)
        )
        if ids is not None:
            q = q.where(table.centre_id.in_(ids))
        for row in session.execute(q):
            acc = out.setdefault(tuple(row[: len(keys)]), [0] * 5)
            for i in range(5):
                acc[i] += int(row[len(keys) + i] or 0)
    return out


def centre_service_counts(
    session: Session, start: date, end: date, centre_ids: Iterable[int] | None = None
) -> dict[tuple[int, int, int], Counts]:
    """(centre, service, scale) → counts over [start, end], all employees together."""
    out = {}
    sums = level_sums(session, start, end, ("centre_id", "service_id", "scale"), centre_ids)
    for (cid, sid, scale), levels in sums.items():
        c = Counts(scale, levels[:scale])
        if c.n:
            out[(cid, sid, scale)] = c
    return out


def _names(
    session: Session, centre_ids: Iterable[int] | None = None
) -> tuple[dict[int, Any], dict[int, str]]:
    """Centres (plain rows) and service codes by id, from the registry cache."""
    from collector.reading.names import names

    known = names(session)
    return known.centre_by_id, known.service_code


def centre_scores(
    session: Session, start: date, end: date, centre_ids: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """Per centre: its total and each service (per scale), with n always shown."""
    ids = list(centre_ids) if centre_ids is not None else None
    centres, services = _names(session, ids)
    cells = centre_service_counts(session, start, end, ids)
    by_centre: dict[int, list[tuple[int, int, Counts]]] = {}
    for (cid, sid, scale), c in cells.items():
        by_centre.setdefault(cid, []).append((sid, scale, c))
    out = []
    for cid in sorted(by_centre, key=lambda i: centres[i].code):
        rows = sorted(by_centre[cid], key=lambda t: (services.get(t[0], ""), t[1]))
        totals: dict[int, Counts] = {}
        for _sid, scale, c in rows:
            totals.setdefault(scale, Counts(scale)).add(c.levels)
        centre = centres[cid]
        out.append(
            {
                "centre": centre.code,
                "name_hy": centre.name_hy,
                "name_en": centre.name_en,
                "total": [totals[s].summary() for s in sorted(totals)],
                "services": [
                    {"service": services.get(sid, "NONE"), **c.summary()} for sid, _scale, c in rows
                ],
            }
        )
    return out


def employee_scores(
    session: Session, centre_id: int, start: date, end: date
) -> list[dict[str, Any]]:
    """A manager's view of their staff: figures only where n >= 5, ordered by code
    (never as a league table)."""
    a = DailyAggregate
    q = (
        select(
            *LEVEL_SUMS,
            a.employee_id,
            a.scale,
        )
        .where(a.centre_id == centre_id, a.day >= start, a.day <= end)
        .group_by(a.employee_id, a.scale)
    )
    employees = {
        e.id: e for e in session.scalars(select(Employee).where(Employee.centre_id == centre_id))
    }
    counts: dict[tuple[int, int], Counts] = {}
    for row in session.execute(q):
        counts[(row[5], row[6])] = Counts(row[6], _levels(row, row[6]))
    out = []
    for eid, emp in sorted(employees.items(), key=lambda kv: kv[1].code):
        scales: list[int | None] = [s for (e, s) in sorted(counts) if e == eid] or [None]
        for scale in scales:
            c = counts.get((eid, scale)) if scale is not None else None
            entry: dict[str, Any] = {
                "employee": emp.code,
                "name": emp.name,
                "position": emp.position,
            }
            if c is None or c.n < EMPLOYEE_MIN_N:
                entry.update(n=c.n if c else 0, figure=NOT_ENOUGH)
            else:
                entry.update(c.summary())
            out.append(entry)
    unattributed = sum(c.n for (e, _s), c in counts.items() if e == 0)
    if unattributed:
        out.append({"employee": None, "name": "unattributed", "n": unattributed})
    return out


def centre_rankings(
    session: Session,
    start: date,
    end: date,
    *,
    prior_weight: float = 15.0,
    cells: dict[tuple[int, int, int], Counts] | None = None,
) -> list[dict[str, Any]]:
    """Centres by posterior top-two share, shrunk towards the national share.

    ``cells``: :func:`centre_service_counts` of the period, if the caller has them."""
    centres, _ = _names(session)
    per_centre: dict[int, list[int]] = {}  # [top two, n]: scale-free
    if cells is None:
        cells = centre_service_counts(session, start, end)
    for (cid, _sid, _scale), c in cells.items():
        acc = per_centre.setdefault(cid, [0, 0])
        acc[0] += c.top_two
        acc[1] += c.n
    national_n = sum(n for _t, n in per_centre.values())
    if not national_n:
        return []
    prior = sum(t for t, _n in per_centre.values()) / national_n
    ranked: list[dict[str, Any]] = []
    for cid, (top, n) in per_centre.items():
        mean, lo, hi = posterior_top_two(top, n, prior, prior_weight)
        ranked.append(
            {
                "centre": centres[cid].code,
                "name_hy": centres[cid].name_hy,
                "name_en": centres[cid].name_en,
                "n": n,
                "csat_raw": round(top / n, 4),
                "score": round(mean, 4),
                "score_ci95": [round(lo, 4), round(hi, 4)],
            }
        )
    ranked.sort(key=lambda r: (-float(r["score"]), str(r["centre"])))
    for i, r in enumerate(ranked, start=1):
        r["rank"] = i
    return ranked


# ---------------------------------------------------------------- public release


def suppress(table: dict[tuple[str, str], int], min_n: int = PUBLIC_MIN_N) -> set[tuple[str, str]]:
    """Cells of a (row, column) → n table to hide: every cell below ``min_n`` (primary),
    then, in any row or column left with exactly one hidden cell, the smallest other
    non-empty cell too (complementary), repeated until stable, so that no hidden
    cell can be computed from the published row and column totals."""
    hidden = {k for k, n in table.items() if 0 < n < min_n}
    changed = True
    while changed:
        changed = False
        for axis in (0, 1):
            lines: dict[str, list[tuple[str, str]]] = {}
            for k, n in table.items():
                if n > 0:
                    lines.setdefault(k[axis], []).append(k)
            for cells in lines.values():
                hid = [k for k in cells if k in hidden]
                if len(hid) == 1:
                    others = sorted((table[k], k) for k in cells if k not in hidden)
                    if others:
                        hidden.add(others[0][1])
                        changed = True
    return hidden


def public_table(session: Session, start: date, end: date) -> list[dict[str, Any]]:
    """Open data: centre × service cells with counts where n >= 10 and not
    complementarily suppressed; hidden cells say so, without numbers."""
    centres, services = _names(session)
    merged: dict[tuple[str, str], list[int]] = {}  # [top two, n]: scale-free
    for (cid, sid, _scale), c in centre_service_counts(session, start, end).items():
        acc = merged.setdefault((centres[cid].code, services.get(sid, "NONE")), [0, 0])
        acc[0] += c.top_two
        acc[1] += c.n
    hidden = suppress({k: n for k, (_t, n) in merged.items()})
    out = []
    for (centre, service), (top, n) in sorted(merged.items()):
        if (centre, service) in hidden:
            out.append({"centre": centre, "service": service, "suppressed": True})
            continue
        lo, hi = wilson(top, n)
        out.append(
            {
                "centre": centre,
                "service": service,
                "suppressed": False,
                "n": n,
                "csat": round(top / n, 4),
                "csat_ci95": [round(lo, 4), round(hi, 4)],
            }
        )
    return out


def daily_series(session: Session, centre_id: int, start: date, end: date) -> list[dict[str, Any]]:
    """One row per day with ratings at a centre: n and CSAT (scale-free) with its interval."""
    a = DailyAggregate
    q = (
        select(
            *LEVEL_SUMS,
            a.day,
            a.scale,
        )
        .where(a.centre_id == centre_id, a.day >= start, a.day <= end)
        .group_by(a.day, a.scale)
    )
    days: dict[date, list[int]] = {}
    for row in session.execute(q):
        c = Counts(row[6], _levels(row, row[6]))
        acc = days.setdefault(row[5], [0, 0])
        acc[0] += c.top_two
        acc[1] += c.n
    out = []
    for day in sorted(days):
        top, n = days[day]
        if not n:
            continue
        lo, hi = wilson(top, n)
        out.append(
            {
                "day": day,
                "n": n,
                "csat": round(top / n, 4),
                "csat_ci95": [round(lo, 4), round(hi, 4)],
            }
        )
    return out


# ---------------------------------------------------------------- factors and channels


def favourable(factor: str, scale: int, level: int) -> bool:
    """A favourable answer: "yes" for ``solved``, the top two levels of a scaled factor."""
    return level == 3 if factor == "solved" else level >= scale - 1


def factor_summary(
    session: Session, centre_id: int, start: date, end: date
) -> list[dict[str, Any]]:
    """Per assessment factor over the period: answers counted, the favourable share
    (the top two levels of a scaled factor; "yes" for ``solved``) with its Wilson 95 %
    interval: where visitors are lost (waiting, solving, conduct, competence)."""
    from collector.models import FactorAggregate as F

    rows = session.execute(
        select(F.factor, F.scale, F.level, func.sum(F.n))
        .where(F.centre_id == centre_id, F.day >= start, F.day <= end)
        .group_by(F.factor, F.scale, F.level)
    ).all()
    acc: dict[str, list[int]] = {}
    for factor, scale, level, n in rows:
        a = acc.setdefault(factor, [0, 0])
        n = int(n or 0)
        a[1] += n
        if favourable(factor, scale, level):
            a[0] += n
    out = []
    for factor in ("procedure", "solved", "conduct", "competence"):
        good, n = acc.get(factor, [0, 0])
        lo, hi = wilson(good, n)
        out.append({"factor": factor, "n": n, "share": good / n if n else None, "ci": (lo, hi)})
    return out


def channel_counts(session: Session, centre_id: int, start: date, end: date) -> dict[str, int]:
    """Ratings counted per channel (``counter``, ``online``) over the period."""
    from collector.models import ChannelAggregate as C

    return {
        str(channel): int(n or 0)
        for channel, n in session.execute(
            select(C.channel, func.sum(C.n))
            .where(C.centre_id == centre_id, C.day >= start, C.day <= end)
            .group_by(C.channel)
        )
    }

"""You said, we did: a centre's months as the public may see them, the low ones, and the
managers' answers beside them.

A month is the period people answer: its figures are the share of satisfied visitors
(the top two levels, every scale together) and each assessment factor's favourable
share, each shown only from :data:`~collector.reading.scores.PUBLIC_MIN_N` ratings, as
in the open data. A figure is *low* when it is shown and under the low share (a
setting, 70 % by default). An answer covers the month it names and, when it names a
factor, that factor; an answer about the score itself covers the whole month.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.models import Answer, FactorAggregate
from collector.reading import scores

#: The assessment factors, in the order pages show them.
FACTORS = ("procedure", "solved", "conduct", "competence")
#: The months a public page shows (this one and the five before it).
MONTHS_SHOWN = 6
#: Closed months the ministry's list looks back over.
LOOK_BACK_MONTHS = 3


@dataclass(frozen=True, slots=True)
class Figure:
    """A share over ``n`` ratings; ``share`` is None when there are too few to show."""

    n: int
    share: float | None
    ci: tuple[float, float] | None

    @classmethod
    def of(cls, good: int, n: int, min_n: int) -> Figure:
        if n < min_n or n == 0:
            return cls(n, None, None)
        return cls(n, good / n, scores.wilson(good, n))

    def low(self, low_share: float) -> bool:
        return self.share is not None and self.share < low_share


@dataclass(slots=True)
class Month:
    """One month of one centre: its figures, what is low in it, and the answers."""

    start: date
    end: date
    total: Figure
    factors: dict[str, Figure]
    answers: list[Answer] = field(default_factory=list)
    low: list[str | None] = field(default_factory=list)
    """What is low: None for the score itself, else a factor."""

    @property
    def key(self) -> str:
        return self.start.strftime("%Y-%m")

    def figure(self, factor: str | None) -> Figure:
        return self.total if factor is None else self.factors[factor]

    def answered(self, factor: str | None) -> bool:
        return any(a.factor is None or a.factor == factor for a in self.answers)

    @property
    def unanswered(self) -> list[str | None]:
        return [f for f in self.low if not self.answered(f)]


def month_of(day: date) -> tuple[date, date]:
    """The calendar month holding ``day``: its first and last day."""
    first = day.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt - timedelta(days=1)


def months_back(today: date, count: int) -> list[tuple[date, date]]:
    """This month (to ``today``) and the ``count - 1`` before it, the newest first."""
    out = []
    first, last = month_of(today)
    for _ in range(count):
        out.append((first, min(last, today)))
        first, last = month_of(first - timedelta(days=1))
    return out


def _totals(
    session: Session, start: date, end: date, centre_ids: Iterable[int] | None
) -> dict[int, list[int]]:
    """centre → [top two, n] over the period, every scale together."""
    out: dict[int, list[int]] = {}
    for (cid, _sid, _scale), c in scores.centre_service_counts(
        session, start, end, centre_ids
    ).items():
        acc = out.setdefault(cid, [0, 0])
        acc[0] += c.top_two
        acc[1] += c.n
    return out


def _factor_counts(
    session: Session, start: date, end: date, centre_ids: Sequence[int] | None
) -> dict[tuple[int, str], list[int]]:
    """(centre, factor) → [favourable, n] over the period."""
    f = FactorAggregate
    q = (
        select(f.centre_id, f.factor, f.scale, f.level, func.sum(f.n))
        .where(f.day >= start, f.day <= end)
        .group_by(f.centre_id, f.factor, f.scale, f.level)
    )
    if centre_ids is not None:
        q = q.where(f.centre_id.in_(list(centre_ids)))
    out: dict[tuple[int, str], list[int]] = {}
    for cid, factor, scale, level, n in session.execute(q):
        acc = out.setdefault((cid, str(factor)), [0, 0])
        acc[1] += int(n or 0)
        if scores.favourable(str(factor), scale, level):
            acc[0] += int(n or 0)
    return out


def _figure(counts: list[int] | None, min_n: int) -> Figure:
    good, n = counts or (0, 0)
    return Figure.of(good, n, min_n)


def _months(
    session: Session,
    spans: Sequence[tuple[date, date]],
    centre_ids: Sequence[int] | None,
    low_share: float,
    min_n: int,
) -> dict[int, list[Month]]:
    """centre → its months over ``spans`` (in that order), with answers and what is low."""
    out: dict[int, list[Month]] = {}
    for start, end in spans:
        totals = _totals(session, start, end, centre_ids)
        factors = _factor_counts(session, start, end, centre_ids)
        ids = set(totals) | {cid for cid, _f in factors}
        if centre_ids is not None:
            ids |= set(centre_ids)
        for cid in ids:
            good, n = totals.get(cid, [0, 0])
            month = Month(
                start,
                end,
                Figure.of(good, n, min_n),
                {f: _figure(factors.get((cid, f)), min_n) for f in FACTORS},
            )
            month.low = [f for f in (None, *FACTORS) if month.figure(f).low(low_share)]
            out.setdefault(cid, []).append(month)
    if spans:
        q = select(Answer).where(
            Answer.period_start <= spans[0][1], Answer.period_end >= spans[-1][0]
        )
        if centre_ids is not None:
            q = q.where(Answer.centre_id.in_(list(centre_ids)))
        for answer in session.scalars(q.order_by(Answer.created_at, Answer.id)):
            for month in out.get(answer.centre_id, []):
                if answer.period_start <= month.end and answer.period_end >= month.start:
                    month.answers.append(answer)
    return out


def centre_months(
    session: Session,
    centre_id: int,
    today: date,
    *,
    low_share: float,
    count: int = MONTHS_SHOWN,
    min_n: int = scores.PUBLIC_MIN_N,
) -> list[Month]:
    """A centre's last ``count`` months, the newest first."""
    return _months(session, months_back(today, count), [centre_id], low_share, min_n).get(
        centre_id, []
    )


def unanswered(
    session: Session,
    today: date,
    *,
    due_days: int,
    low_share: float,
    look_back: int = LOOK_BACK_MONTHS,
    min_n: int = scores.PUBLIC_MIN_N,
) -> list[dict[str, Any]]:
    """Low figures of closed months with no answer ``due_days`` after the month ended,
    over the last ``look_back`` such months: the centres the ministry should ask."""
    spans = []
    for start, end in months_back(today, look_back + 3)[1:]:
        if end + timedelta(days=due_days) < today:
            spans.append((start, end))
    spans = spans[:look_back]
    out: list[dict[str, Any]] = []
    for cid, months in _months(session, spans, None, low_share, min_n).items():
        for month in months:
            for factor in month.unanswered:
                fig = month.figure(factor)
                due = month.end + timedelta(days=due_days)
                out.append(
                    {
                        "centre_id": cid,
                        "month": month.start,
                        "factor": factor,
                        "share": fig.share,
                        "n": fig.n,
                        "due": due,
                        "overdue_days": (today - due).days,
                    }
                )
    out.sort(key=lambda r: (-int(r["overdue_days"]), float(r["share"] or 0.0)))
    return out


class KeptUnanswered:
    """The ministry's list of unanswered low figures, kept a short while.

    The list reads only closed months (their monthly and factor cells) and the answers,
    so it changes rarely: when an answer is published, or a late press or a rebuild
    touches a month that closed at least ``due_days`` before. Each ministry page would
    otherwise read three months of cells for it. An answer published through this
    process forgets the list at once (:meth:`forget`); one published through another
    worker, or a late press, shows within ``ttl``. ``clock``: the app's wall clock
    (injectable); a clock that went back counts as expired.
    """

    def __init__(self, clock: Callable[[], datetime], ttl: timedelta = timedelta(seconds=60)):
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._kept: tuple[tuple[Any, ...], datetime, list[dict[str, Any]]] | None = None

    def get(
        self, session: Session, today: date, *, due_days: int, low_share: float
    ) -> list[dict[str, Any]]:
        key = (today, due_days, low_share)
        now = self.clock()
        with self._lock:
            kept = self._kept
        if kept is not None and kept[0] == key and kept[1] <= now < kept[1] + self.ttl:
            return [dict(row) for row in kept[2]]
        rows = unanswered(session, today, due_days=due_days, low_share=low_share)
        with self._lock:
            self._kept = (key, now, rows)
        return [dict(row) for row in rows]

    def forget(self) -> None:
        with self._lock:
            self._kept = None

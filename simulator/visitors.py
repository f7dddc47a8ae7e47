"""Visitors and staff over simulated time: who presses what, when. Seeded, so replayable.

Arrivals follow opening hours (Mon–Fri 09:00–18:00 Asia/Yerevan) with a morning
burst and a lunch dip; each desk's employee logs in with a badge at opening and
out at closing; each employee has a score mix of their own around a national
mix; a few visitors mash the buttons.
"""

from __future__ import annotations

import enum
import heapq
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Yerevan")
OPEN, CLOSE = time(9, 0), time(18, 0)
#: Best-to-worst mix seen on four-button terminals (62/17/7/14), as worst-first weights.
NATIONAL_MIX_4 = (14, 7, 17, 62)


class Kind(enum.StrEnum):
    PRESS = "press"
    BADGE = "badge"
    MASH = "mash"
    FACTORS = "factors"
    """A kiosk visitor answers the follow-up questions (``value``: JSON answers)."""
    ONLINE = "online"
    """A visitor rates on their phone by the desk's QR code (``value``: JSON score and
    answers) instead of pressing."""


@dataclass(frozen=True, order=True)
class Action:
    at: datetime
    device: str
    kind: Kind
    value: str


@dataclass(frozen=True)
class Desk:
    device: str
    badge: str | None
    scale: int = 4
    mix: list[float] | None = None
    """Worst-first score weights of this desk's visitors; None: a mix of its own around
    the national one (the demo gives one desk a sinking mix)."""
    kiosk: bool = False
    """A touch screen: most visitors answer some of the factor questions after the score."""
    online_share: float = 0.0
    """The share of visitors who rate on their phone instead of at the desk."""


def factor_answers(rng: random.Random, score: int, scale: int) -> dict[str, object]:
    """What a visitor who gave ``score`` answers to the factor questions: each asked one
    answered four times in five; the waiting is judged a little harsher than the score,
    conduct a little kinder; "solved" follows the score."""
    out: dict[str, object] = {}
    lean = {"procedure": -0.7, "conduct": 0.4, "competence": 0.0}
    for factor in ("procedure", "solved", "conduct", "competence"):
        if rng.random() >= 0.8:
            continue
        if factor == "solved":
            share = (score - 1) / (scale - 1)
            out[factor] = rng.choices(["no", "partly", "yes"], [1 - share, 0.6, share * 2])[0]
        else:
            value = round(score + lean[factor] + rng.gauss(0, 0.7))
            out[factor] = min(scale, max(1, value))
    return out


def hourly_weight(t: time) -> float:
    """Relative arrival rate within the day: a burst at opening, a lunch dip."""
    h = t.hour + t.minute / 60
    if h < 9 or h >= 18:
        return 0.0
    w = 1.0 + 0.8 * math.exp(-((h - 9.5) ** 2) / 0.5)
    if 13 <= h < 14:
        w *= 0.3
    return w


def score_mix(rng: random.Random, scale: int) -> list[float]:
    base = list(NATIONAL_MIX_4)
    if scale == 3:
        base = [14 + 7, 17, 62]
    elif scale == 5:
        base = [10, 7, 12, 25, 46]
    return [max(0.5, w * rng.uniform(0.5, 1.5)) for w in base]


def desk_actions(
    desk: Desk,
    start: datetime,
    end: datetime,
    *,
    rng: random.Random,
    per_day: tuple[int, int] = (10, 60),
    mash_share: float = 0.02,
) -> Iterator[Action]:
    """Actions of one desk between ``start`` and ``end`` (aware datetimes), in time order."""
    mix = desk.mix or score_mix(rng, desk.scale)
    daily = rng.uniform(*per_day)
    day = start.astimezone(TZ).date()
    while True:
        opening = datetime.combine(day, OPEN, TZ)
        if opening >= end:
            return
        if opening.weekday() < 5:
            closing = datetime.combine(day, CLOSE, TZ)
            if desk.badge and start <= opening + timedelta(minutes=2) < end:
                yield Action(
                    opening + timedelta(minutes=rng.uniform(0, 5)),
                    desk.device,
                    Kind.BADGE,
                    desk.badge,
                )
            total = sum(hourly_weight(time(h, m)) for h in range(9, 18) for m in range(0, 60, 5))
            t = opening
            while t < closing:
                slot = 5 * 60  # seconds
                lam = daily * hourly_weight(t.timetz().replace(tzinfo=None)) / total
                for _ in range(_poisson(rng, lam)):
                    at = t + timedelta(seconds=rng.uniform(0, slot))
                    if start <= at < end:
                        score = rng.choices(range(1, desk.scale + 1), weights=mix)[0]
                        if desk.online_share and rng.random() < desk.online_share:
                            rating = {"score": score, **factor_answers(rng, score, desk.scale)}
                            yield Action(at, desk.device, Kind.ONLINE, json.dumps(rating))
                            continue
                        kind = Kind.MASH if rng.random() < mash_share else Kind.PRESS
                        yield Action(at, desk.device, kind, str(score))
                        if desk.kiosk and kind is Kind.PRESS and rng.random() < 0.6:
                            answers = factor_answers(rng, score, desk.scale)
                            if answers:
                                later = at + timedelta(seconds=rng.uniform(5, 15))
                                yield Action(later, desk.device, Kind.FACTORS, json.dumps(answers))
                t += timedelta(seconds=slot)
            if desk.badge and start <= closing < end:
                yield Action(
                    closing + timedelta(minutes=rng.uniform(0, 10)),
                    desk.device,
                    Kind.BADGE,
                    desk.badge,
                )
        day += timedelta(days=1)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def schedule(
    desks: Sequence[Desk],
    start: datetime,
    end: datetime,
    *,
    seed: int = 1,
    per_day: tuple[int, int] = (10, 60),
    mash_share: float = 0.02,
) -> Iterator[Action]:
    """Every desk's actions merged in time order; the same seed gives the same run."""
    streams = []
    for i, desk in enumerate(desks):
        rng = random.Random(f"{seed}:{i}:{desk.device}")
        streams.append(
            desk_actions(desk, start, end, rng=rng, per_day=per_day, mash_share=mash_share)
        )
    return heapq.merge(*(_sorted_stream(s) for s in streams))


def _sorted_stream(actions: Iterator[Action]) -> Iterator[Action]:
    # Badge logout jitter can step past presses of the same day; sort per day.
    buf = sorted(actions)
    yield from buf


def next_opening(now: datetime) -> datetime:
    """The next weekday 09:00 in Yerevan at or after ``now`` (today if before closing)."""
    local = now.astimezone(TZ)
    day = local.date()
    while True:
        opening = datetime.combine(day, OPEN, TZ)
        closing = datetime.combine(day, CLOSE, TZ)
        if opening.weekday() < 5 and local < closing:
            return max(opening, local)
        day += timedelta(days=1)

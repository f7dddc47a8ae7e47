"""Opening hours of a centre: when "silent" means silent.

The registry's ``centres.csv`` may give each centre an ``hours`` column in a small
subset of OpenStreetMap's ``opening_hours`` syntax: rules separated by ``;``, each a
day list (``Mo``..``Su``, ranges ``Mo-Fr``, lists ``Mo,We``) and time ranges
(``09:00-13:00,14:00-18:00``) or ``off``; or ``24/7``. Without one, a centre keeps the
usual hours of Armenian public offices, ``Mo-Fr 09:00-13:00,14:00-18:00``, and is
closed on the public holidays below. Times are Asia/Yerevan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time

DEFAULT = "Mo-Fr 09:00-13:00,14:00-18:00"
DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
#: Fixed-date public holidays of Armenia (month, day); check the current law.
HOLIDAYS = frozenset(
    {(1, 1), (1, 2), (1, 6), (1, 28), (3, 8), (4, 24), (5, 1), (5, 9), (5, 28), (7, 5),
     (9, 21), (12, 31)}
)  # fmt: skip
_TIME = r"([01]\d|2[0-4]):([0-5]\d)"
_SPAN = re.compile(rf"^{_TIME}-{_TIME}$")


class HoursError(ValueError):
    pass


@dataclass(frozen=True)
class Hours:
    """Open spans per weekday (0 = Monday), in minutes since midnight."""

    spans: tuple[tuple[tuple[int, int], ...], ...]
    text: str
    holidays: bool = True

    def is_open(self, local: datetime) -> bool:
        """Whether the centre is open at ``local`` (a Yerevan wall-clock time)."""
        if self.holidays and (local.month, local.day) in HOLIDAYS:
            return False
        minute = local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.spans[local.weekday()])

    def open_on(self, day: date) -> bool:
        if self.holidays and (day.month, day.day) in HOLIDAYS:
            return False
        return bool(self.spans[day.weekday()])

    def open_minutes_between(self, start: datetime, end: datetime) -> float:
        """Minutes of opening time between two local times of the same or later days."""
        total = 0.0
        day = start.date()
        while day <= end.date():
            if self.open_on(day):
                for a, b in self.spans[day.weekday()]:
                    lo = datetime.combine(day, _minute_time(a), start.tzinfo)
                    hi = (
                        datetime.combine(day, _minute_time(b), start.tzinfo)
                        if b < 1440
                        else (datetime.combine(day, time(23, 59, 59, 999999), start.tzinfo))
                    )
                    lo, hi = max(lo, start), min(hi, end)
                    if hi > lo:
                        total += (hi - lo).total_seconds() / 60
            day = date.fromordinal(day.toordinal() + 1)
        return total


def _minute_time(m: int) -> time:
    return time(m // 60, m % 60)


def _days(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in DAYS or b not in DAYS:
                raise HoursError(f"{part!r}: days are {', '.join(DAYS)}")
            i, j = DAYS.index(a), DAYS.index(b)
            out += list(range(i, j + 1)) if i <= j else [*range(i, 7), *range(0, j + 1)]
        elif part in DAYS:
            out.append(DAYS.index(part))
        else:
            raise HoursError(f"{part!r}: days are {', '.join(DAYS)}")
    return out


def parse(text: str | None) -> Hours:
    """Read an ``hours`` value (empty: the default); :class:`HoursError` says what is wrong."""
    text = (text or "").strip() or DEFAULT
    if text == "24/7":
        return Hours(tuple(((0, 1440),) for _ in range(7)), text, holidays=False)
    spans: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for rule in filter(None, (r.strip() for r in text.split(";"))):
        parts = rule.split(None, 1)
        if len(parts) != 2:
            raise HoursError(f"{rule!r}: a rule is days then times, e.g. Mo-Fr 09:00-18:00")
        days, times = _days(parts[0]), parts[1].strip()
        if times == "off":
            for d in days:
                spans[d] = []
            continue
        found: list[tuple[int, int]] = []
        for span in times.split(","):
            m = _SPAN.match(span.strip())
            if not m:
                raise HoursError(f"{span.strip()!r}: a time range is HH:MM-HH:MM")
            a = int(m[1]) * 60 + int(m[2])
            b = int(m[3]) * 60 + int(m[4])
            if a >= b or b > 1440:
                raise HoursError(f"{span.strip()!r}: a range ends after it starts, by 24:00")
            found.append((a, b))
        for d in days:
            spans[d] = sorted(found)
    return Hours(tuple(tuple(s) for s in spans), text)

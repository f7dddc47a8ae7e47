"""When was a button pressed? Date every event by the best evidence, never refuse it.

The rule, in order (docs/protocol.md, "Dating a press"):

1. The unit's clock was synchronised at the press: its ``at``.
2a. Else what every message of the press's boot said of its clock: a message heard at
   ``R`` with the unit's monotonic time ``m`` (a heartbeat's ``mono_ms``, an event's
   ``sent_mono_ms``) puts the boot's zero at most at ``R − m``, as any delay only makes
   it later; the press lies at the lowest such zero plus its ``mono_ms``. For an event
   received while the collector drained what was held for it after an absence, only
   evidence heard before the absence began counts.
2. Else the event was sent in the boot that pressed it: the collector's receipt time
   less the time it waited on the unit (``sent_mono_ms − mono_ms``). If it came in
   while the collector drained what the broker held for it after an absence, it may
   have waited there too: the press lies between the absence's start and that time,
   an estimate (``CLOCK_UNTRUSTED``; ``DAY_UNCERTAIN`` when that spans midnight).
3. Else another event of the same stream and the *same boot* has a trusted time
   (rule 1 or 2): the monotonic clock gives the exact distance to it.
4. Else bound the press by its trusted neighbours in the stream — seq order is press
   order, so it lies after the latest earlier trusted press and before the earliest
   later one (or before its own receipt) — and estimate inside the bounds: the unit's
   own clock if it falls between two bounds, else the upper bound less the monotonic
   distance to the last press of its boot in hand (so presses keep their spacing and
   a backlog never looks like a burst). The event keeps both bounds and is flagged
   ``CLOCK_UNTRUSTED`` (an estimate); ``DAY_UNCERTAIN`` when the bounds do not lie in
   one business day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import DeviceState, Event, Flag
from device import protocol as p


@dataclass(frozen=True, slots=True)
class Dating:
    pressed_at: datetime
    flags: Flag
    correction_ms: int | None = None
    lo: datetime | None = None
    hi: datetime | None = None


class Anchor(NamedTuple):
    """A press of the stream whose time is trusted."""

    seq: int
    boot: str
    mono_ms: int
    pressed_at: datetime


#: ``(device, stream, seq, later, boot)`` → the nearest trusted press before (``later``
#: False) or after ``seq``, of that boot only when ``boot`` is given.
Finder = Callable[[str, str, int, bool, str | None], Anchor | None]

TRUSTED = int(Flag.CLOCK_UNTRUSTED)


def db_finder(session: Session) -> Finder:
    """Neighbours already stored (one indexed look-up each; untrusted presses are rare)."""

    def find(device: str, stream: str, seq: int, later: bool, boot: str | None) -> Anchor | None:
        q = select(Event.seq, Event.boot, Event.mono_ms, Event.pressed_at).where(
            Event.device == device,
            Event.stream == stream,
            Event.seq > seq if later else Event.seq < seq,
            Event.flags.op("&")(TRUSTED) == 0,
        )
        if boot is not None:
            q = q.where(Event.boot == boot)
        q = q.order_by(Event.seq.asc() if later else Event.seq.desc()).limit(1)
        row = session.execute(q).first()
        return None if row is None else Anchor(row[0], row[1], row[2], row[3])

    return find


def corrected_time(event: p.Event, received_at: datetime) -> datetime | None:
    """Receipt time less the time the event waited on the unit (same boot), if it exists."""
    if (
        event.sent_mono_ms is None
        or event.sent_boot != event.boot
        or event.sent_mono_ms < event.mono_ms
    ):
        return None
    try:
        return received_at - timedelta(milliseconds=event.sent_mono_ms - event.mono_ms)
    except OverflowError:  # a wait longer than the calendar: no evidence at all
        return None


def _shift(anchor: Anchor, mono_ms: int) -> datetime | None:
    try:
        return anchor.pressed_at + timedelta(milliseconds=mono_ms - anchor.mono_ms)
    except OverflowError:
        return None


#: Older than this, a boot's kept zero gives way to any newer evidence of the boot: a
#: unit's crystal drifts (50 ppm is 0.18 s an hour), so the lowest value must stay recent.
CLOCK_STALE_MS = 3_600_000


class ClockZero(NamedTuple):
    """Where a boot's monotonic clock stood at zero, by the collector's clock.

    A message of the boot heard at ``R`` carrying the unit's monotonic time ``m`` when it
    was sent (a heartbeat's ``mono_ms``, an event's ``sent_mono_ms``) says the zero lies
    at most at ``R − m``: any delay on the way (a broker holding it, a stalled link, a
    busy collector) only makes it later. The lowest value heard is the best, and a press
    lies at ``zero + mono_ms``.
    """

    boot: str
    zero_ms: int
    """Epoch milliseconds."""
    heard_ms: int
    """When the value was (last) heard, epoch milliseconds."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(milliseconds=1)


def heard(boot: object, mono_ms: object, received_at: datetime) -> ClockZero | None:
    """The evidence of one message: ``None`` unless it names a boot and a monotonic time."""
    if not isinstance(boot, str) or not boot or len(boot) > 64:
        return None
    if not isinstance(mono_ms, int) or isinstance(mono_ms, bool) or not 0 <= mono_ms < 2**53:
        return None
    now = epoch_ms(received_at)
    return ClockZero(boot, now - mono_ms, now)


def better(kept: ClockZero | None, new: ClockZero) -> ClockZero:
    """What to keep of a unit's clock zero when ``new`` is heard (also in SQL:
    :func:`collector.intake.store.driver.newer`): a new boot heard later replaces the
    old; within a boot the lower value wins, and a kept value older than
    :data:`CLOCK_STALE_MS` gives way."""
    if kept is None:
        return new
    if kept.boot != new.boot:
        return new if new.heard_ms >= kept.heard_ms else kept
    if new.zero_ms <= kept.zero_ms or new.heard_ms - kept.heard_ms > CLOCK_STALE_MS:
        return new
    return kept


#: ``device`` → what is known of its boots' clock zeros (the kept one, the batch's own).
Clocks = Callable[[str], Sequence[ClockZero]]


def db_clocks(session: Session, batch: dict[str, list[ClockZero]] | None = None) -> Clocks:
    """The units' kept clock zeros as stored in ``device_state`` (read once per unit), with
    what the batch itself heard (``batch``)."""
    seen: dict[str, ClockZero | None] = {}
    batch = batch or {}

    def get(device: str) -> Sequence[ClockZero]:
        if device not in seen:
            row = session.execute(
                select(
                    DeviceState.clock_boot, DeviceState.clock_zero_ms, DeviceState.clock_heard_ms
                ).where(DeviceState.device == device)
            ).first()
            zero = None
            if row is not None:
                boot, zero_ms, heard_ms = row
                if boot is not None and zero_ms is not None and heard_ms is not None:
                    zero = ClockZero(boot, zero_ms, heard_ms)
            seen[device] = zero
        kept = seen[device]
        return ([kept] if kept is not None else []) + batch.get(device, [])

    return get


def _by_clock(event: p.Event, clocks: Clocks | None, since: datetime | None) -> datetime | None:
    """Rule 2a: the press at the lowest clock zero of its boot. For an event received in a
    drain (``since``: when the absence began), only evidence heard before the absence
    counts: what was heard during the drain may have waited too."""
    if clocks is None:
        return None
    limit = None if since is None else epoch_ms(since)
    zeros = [
        z.zero_ms
        for z in clocks(event.device)
        if z.boot == event.boot and (limit is None or z.heard_ms <= limit)
    ]
    if not zeros:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=min(zeros) + event.mono_ms)
    except OverflowError:
        return None


def _same_boot(nearest: Finder, event: p.Event) -> datetime | None:
    """Rule 3: the press by the monotonic distance to the nearest press of its stream and
    boot whose time is known (before it, else after it)."""
    for later in (False, True):
        anchor = nearest(event.device, event.stream, event.seq, later, event.boot)
        if anchor is not None:
            shifted = _shift(anchor, event.mono_ms)
            if shifted is not None:
                return shifted
    return None


def date_events(
    items: Sequence[tuple[p.Event, datetime]],
    find: Finder,
    timezone: ZoneInfo,
    *,
    clocks: Clocks | None = None,
    held_since: dict[p.EventKey, datetime] | None = None,
) -> dict[p.EventKey, Dating]:
    """A :class:`Dating` for every event of ``items`` (events with their receipt time).

    ``clocks``: what is known of each unit's boot clock zero (rule 2a). ``held_since``: for an
    event received while the collector drained what the broker held for it, the
    earliest time it can have been sent (when the collector's previous session ended):
    rule 2 then gives only bounds, since its time in the broker is unknown.
    """
    out: dict[p.EventKey, Dating] = {}
    trusted: dict[tuple[str, str], list[Anchor]] = {}
    untrusted: list[tuple[p.Event, datetime]] = []
    held: list[tuple[p.Event, datetime, datetime, datetime]] = []
    held_since = held_since or {}
    for event, received_at in items:
        device_at = event.at_datetime.astimezone(UTC)
        if event.clock_synced:
            out[event.key] = Dating(device_at, Flag(0))
        else:
            since = held_since.get(event.key)
            by_clock = _by_clock(event, clocks, since)
            by_wait = corrected_time(event, received_at)
            # Each is an upper bound (a delay on the way only makes it later): the earlier
            # of the two is the better one.
            if by_clock is not None and by_wait is not None and by_wait < by_clock:
                by_clock = by_wait
            corrected = by_clock or by_wait
            if corrected is None:
                untrusted.append((event, received_at))
                continue
            corrected = corrected.astimezone(UTC)
            if by_clock is None and since is not None and since < received_at:
                # It may have waited in the broker since ``since``: dated below, from a
                # press of its boot whose time is known (rule 3), else only bounds.
                held.append((event, received_at, corrected, since))
                continue
            correction = round((corrected - device_at).total_seconds() * 1000)
            out[event.key] = Dating(corrected, Flag.CLOCK_CORRECTED, correction)
        trusted.setdefault((event.device, event.stream), []).append(
            Anchor(event.seq, event.boot, event.mono_ms, out[event.key].pressed_at)
        )

    def nearest(device: str, stream: str, seq: int, later: bool, boot: str | None) -> Anchor | None:
        here = [
            a
            for a in trusted.get((device, stream), ())
            if (a.seq > seq if later else a.seq < seq) and (boot is None or a.boot == boot)
        ]
        best = min(here, key=lambda a: abs(a.seq - seq)) if here else None
        stored = find(device, stream, seq, later, boot)
        if best is None or (stored is not None and abs(stored.seq - seq) < abs(best.seq - seq)):
            return stored
        return best

    for event, received_at, corrected, since in held:
        device_at = event.at_datetime.astimezone(UTC)
        shifted = _same_boot(nearest, event)
        if shifted is not None:
            correction = round((shifted - device_at).total_seconds() * 1000)
            out[event.key] = Dating(shifted, Flag.CLOCK_CORRECTED, correction)
            continue
        wait = received_at - corrected
        low, high = (since - wait).astimezone(UTC), corrected
        guess = device_at if low <= device_at <= high else high
        flags = Flag.CLOCK_UNTRUSTED
        if low.astimezone(timezone).date() != high.astimezone(timezone).date():
            flags |= Flag.DAY_UNCERTAIN
        out[event.key] = Dating(guess, flags, None, low, high)
    if not untrusted:
        return out

    # The last press in hand of each untrusted (stream, boot): estimates keep spacing.
    last_mono: dict[tuple[str, str, str], int] = {}
    for event, _ in untrusted:
        k = (event.device, event.stream, event.boot)
        last_mono[k] = max(last_mono.get(k, event.mono_ms), event.mono_ms)

    for event, received_at in untrusted:
        device_at = event.at_datetime.astimezone(UTC)
        rule3 = _same_boot(nearest, event)
        if rule3 is not None:
            correction = round((rule3 - device_at).total_seconds() * 1000)
            out[event.key] = Dating(rule3, Flag.CLOCK_CORRECTED, correction)
            continue
        before = nearest(event.device, event.stream, event.seq, False, None)
        after = nearest(event.device, event.stream, event.seq, True, None)
        hi = min(after.pressed_at, received_at) if after is not None else received_at
        lo = before.pressed_at if before is not None and before.pressed_at <= hi else None
        if lo is not None and lo <= device_at <= hi:
            estimate = device_at  # an unsynced clock (a kept RTC) that fits the evidence
        else:
            gap = last_mono[(event.device, event.stream, event.boot)] - event.mono_ms
            try:
                estimate = hi - timedelta(milliseconds=gap)
            except OverflowError:
                estimate = hi
            if lo is not None and estimate < lo:
                estimate = lo
        flags = Flag.CLOCK_UNTRUSTED
        if lo is None or lo.astimezone(timezone).date() != hi.astimezone(timezone).date():
            flags |= Flag.DAY_UNCERTAIN
        out[event.key] = Dating(estimate, flags, None, lo, hi)
    return out

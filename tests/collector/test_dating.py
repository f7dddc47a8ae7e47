"""Every press dated by the best evidence, never refused for its time (real databases)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.store import Store
from collector.models import Event, Flag, Quarantine
from collector.registry import import_registry
from tests.collector.helpers import DEV, T0, event, msg

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rows(sessions: sessionmaker[Session]) -> list[Event]:
    with sessions() as s:
        return list(s.scalars(select(Event).order_by(Event.seq)))


def test_a_backlog_from_a_clockless_boot_lands_on_its_day_with_bounds(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """No RTC: boot b1 ran at 1970 and lost power with presses 2..4 unsent; boot b2
    sends them. Press 1 (synced, earlier) and press 5 (after the reboot, corrected)
    frame them."""
    store.process([msg(event(1, at=T0, boot="b0", sent_boot="b0"), at=T0 + timedelta(seconds=1))])
    backlog = [
        event(
            seq,
            at=EPOCH + timedelta(minutes=seq),
            clock_synced=False,
            boot="b1",
            mono_ms=seq * 60_000,
            sent_mono_ms=500,
            sent_boot="b2",
        )
        for seq in (2, 3, 4)
    ]
    received = T0 + timedelta(hours=3)
    after = event(
        5,
        at=EPOCH + timedelta(seconds=9),
        clock_synced=False,
        boot="b2",
        mono_ms=9_000,
        sent_mono_ms=10_000,
        sent_boot="b2",
    )
    result = store.process([msg([*backlog, after], at=received)])
    assert result.stored == 4 and not result.quarantined
    assert result.acks == {(DEV, "s1"): {2, 3, 4, 5}}
    r = {e.seq: e for e in rows(sessions)}
    assert r[5].pressed_at == received - timedelta(seconds=1)  # same-boot correction
    for seq in (2, 3, 4):
        e = r[seq]
        assert e.flags & Flag.CLOCK_UNTRUSTED and not e.flags & Flag.DAY_UNCERTAIN
        assert e.pressed_lo == T0 + timedelta(minutes=1) and e.pressed_hi == r[5].pressed_at
        assert e.pressed_lo <= e.pressed_at <= e.pressed_hi
        assert e.day == date(2026, 11, 24)  # the day of the visit, never 1970
    # Their spacing is kept (a minute apart): no fake burst.
    assert r[3].pressed_at - r[2].pressed_at == timedelta(minutes=1)


def test_no_lower_bound_says_the_day_is_uncertain(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    received = T0 + timedelta(hours=2)
    lone = event(
        1,
        at=EPOCH,
        clock_synced=False,
        boot="b0",
        sent_mono_ms=5,
        sent_boot="b9",
    )
    store.process([msg(lone, at=received)])
    (e,) = rows(sessions)
    assert e.pressed_at == received and e.pressed_hi == received and e.pressed_lo is None
    assert e.flags & Flag.CLOCK_UNTRUSTED and e.flags & Flag.DAY_UNCERTAIN


def test_an_unsynced_clock_inside_its_bounds_is_believed(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(1, at=T0, boot="b0", sent_boot="b0"), at=T0)])
    rtc = event(
        2,
        at=T0 + timedelta(minutes=30),
        clock_synced=False,
        boot="b1",
        sent_mono_ms=1,
        sent_boot="b2",
    )
    store.process([msg(rtc, at=T0 + timedelta(hours=1))])
    e = rows(sessions)[1]
    assert e.pressed_at == T0 + timedelta(minutes=30) + timedelta(minutes=2)
    assert e.flags & Flag.CLOCK_UNTRUSTED


def test_re_sends_of_stored_events_are_duplicates_before_any_registry_check(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(i)) for i in (1, 2)])
    # The unit is retired, then its un-acked copies come again: duplicates, acked.
    with sessions() as s, s.begin():
        import_registry(
            s, {"devices": f"device,kind,scale,retired_at\n{DEV},buttons,4,2026-11-01\n"}
        )
    result = store.process([msg(event(i)) for i in (1, 2, 3)])
    assert result.duplicates == 2 and result.stored == 0
    assert result.quarantined == {"retired_device": 1}
    assert result.acks == {(DEV, "s1"): {1, 2, 3}}
    with sessions() as s:
        assert [q.seq for q in s.scalars(select(Quarantine))] == [3]


def test_replay_repairs_what_an_older_collector_quarantined_for_its_1970_clock(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    import hashlib

    from device import protocol as p

    store.process([msg(event(1, at=T0, boot="b0", sent_boot="b0"), at=T0)])
    store.process(
        [msg(event(3, at=T0 + timedelta(hours=2), boot="b0"), at=T0 + timedelta(hours=2))]
    )
    lost = event(2, at=EPOCH, clock_synced=False, boot="b1", sent_mono_ms=3, sent_boot="b2")
    raw = p.encode_event(lost)
    topic = p.event_topic(DEV)
    with sessions() as s, s.begin():  # as the old rule left it: refused for 1970
        s.add(
            Quarantine(
                digest=hashlib.sha256(topic.encode() + b"\0" + raw).hexdigest(),
                topic=topic,
                raw=raw,
                reason="unassigned_device",
                detail="device has no assignment at 1970-01-01T00:02:00+00:00",
                device=DEV,
                stream="s1",
                seq=2,
                first_seen=T0 + timedelta(hours=3),
                last_seen=T0 + timedelta(hours=3),
                count=1,
            )
        )
    assert store.replay_quarantine(reason="unassigned_device") == {"stored": 1}
    before, e, after = rows(sessions)
    assert e.seq == 2 and e.day == date(2026, 11, 24)
    assert before.pressed_at <= e.pressed_at <= after.pressed_at
    assert store.replay_quarantine() == {}  # resolved


def test_a_heartbeat_heard_during_a_drain_does_not_date_what_was_held() -> None:
    """An unsynced unit's press received while the collector drains what the broker held
    after an absence: a heartbeat heard before the absence dates it exactly; one heard
    during the drain may have waited too (a cluster losing a node delays even QoS 0),
    so the press gets bounds from the absence's start instead, flagged an estimate."""
    from zoneinfo import ZoneInfo

    from collector.intake.dating import ClockZero, date_events, heard
    from tests.collector.helpers import replace

    absent = T0  # the collector's session ended
    back = T0 + timedelta(seconds=20)  # it drains what was held
    press = T0 + timedelta(seconds=5)
    pressed = replace(event(1), at="1970-01-01T00:00:10+00:00", clock_synced=False,
                      boot="b1", mono_ms=105_000, sent_mono_ms=105_000)  # fmt: skip
    before = heard("b1", 90_000, press - timedelta(seconds=15))  # live, before the absence
    late = heard("b1", 100_000, back)  # sent at press - 5 s, heard 15 s late
    assert before is not None and late is not None
    tz = ZoneInfo("Asia/Yerevan")
    for beat, exact in ((before, True), (late, False)):
        got = date_events([(pressed, back + timedelta(seconds=1))], lambda *a: None, tz,
                          clocks=lambda d, b=beat: [b],  # type: ignore[misc]
                          held_since={pressed.key: absent})[pressed.key]  # fmt: skip
        if exact:
            assert got.pressed_at == press and got.flags == Flag.CLOCK_CORRECTED
        else:
            assert got.flags & Flag.CLOCK_UNTRUSTED and not got.flags & Flag.CLOCK_CORRECTED
            assert got.lo is not None and got.hi is not None
            assert got.lo <= press <= got.hi
    # A press of its boot heard live before the absence dates it exactly instead (rule 4).
    from collector.intake.dating import Anchor

    earlier = Anchor(0, "b1", 45_000, press - timedelta(seconds=60))
    got = date_events([(pressed, back + timedelta(seconds=1))], timezone=tz,
                      find=lambda d, st, q, later, boot: None if later else earlier,
                      clocks=lambda d: [late],
                      held_since={pressed.key: absent})[pressed.key]  # fmt: skip
    assert got.pressed_at == press and got.flags == Flag.CLOCK_CORRECTED
    # Outside a drain the lowest evidence of the boot wins: the late heartbeat alone
    # dates it late (nothing says it waited), the prompt one beside it exactly.
    got = date_events([(pressed, back)], lambda *a: None, tz, clocks=lambda d: [late])
    assert got[pressed.key].pressed_at == back
    got = date_events([(pressed, back)], lambda *a: None, tz, clocks=lambda d: [before, late])
    assert got[pressed.key].pressed_at == press
    assert got[pressed.key].flags == Flag.CLOCK_CORRECTED
    # Another boot's clock says nothing of this one.
    other = ClockZero("b0", before.zero_ms, before.heard_ms)
    got = date_events([(pressed, back)], lambda *a: None, tz, clocks=lambda d: [other])
    assert got[pressed.key].pressed_at == back  # its own wait only (rule 2)


def _health(mono_ms: int, boot: str = "b1") -> bytes:
    from device import protocol as p

    h = p.Health(device=DEV, at="1970-01-01T00:00:00+00:00", queue_depth=0,
                 oldest_unacked_s=None, uptime_s=mono_ms / 1000, firmware="1.0",
                 clock_synced=False, extra={"boot": boot, "mono_ms": mono_ms})  # fmt: skip
    return p.encode_health(h)


def _kept(sessions: sessionmaker[Session]) -> tuple[str | None, datetime | None, datetime | None]:
    from collector.models import DeviceState

    with sessions() as s:
        st = s.get(DeviceState, DEV)
        assert st is not None
        ms = timedelta(milliseconds=1)
        zero = None if st.clock_zero_ms is None else EPOCH + st.clock_zero_ms * ms
        heard = None if st.clock_heard_ms is None else EPOCH + st.clock_heard_ms * ms
        return st.clock_boot, zero, heard


def test_one_late_message_does_not_date_a_press_late(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """A stalled link (or a broker cluster settling) delivers an unsynced unit's heartbeat
    and its next press 9 s late, together: the boot's clock as its earlier, prompt
    heartbeat showed it still dates the press exactly. What is kept of the unit's clock:
    the lowest value of its boot, a new boot's heard later, a value over an hour old
    giving way."""
    from tests.collector.helpers import replace

    zero = T0 - timedelta(seconds=100)  # where boot b1's monotonic clock stood at 0
    assert not store.process([msg(_health(100_000), kind="health", at=T0)]).quarantined
    assert _kept(sessions) == ("b1", zero, T0)

    press = zero + timedelta(milliseconds=158_000)
    pressed = replace(event(1), at="1970-01-01T00:00:10+00:00", clock_synced=False,
                      boot="b1", mono_ms=158_000, sent_mono_ms=158_000, sent_boot="b1")  # fmt: skip
    late = press + timedelta(seconds=9)
    result = store.process([msg(_health(160_000), kind="health", at=late), msg(pressed, at=late)])
    assert result.stored == 1
    (e,) = rows(sessions)
    assert e.pressed_at == press and e.flags == Flag.CLOCK_CORRECTED
    assert e.clock_correction_ms is not None
    assert _kept(sessions) == ("b1", zero, T0)  # the late ones said less

    # A later batch with a lower value of the boot lowers it (a batch committed in any order).
    store.process([msg(_health(200_000), kind="health", at=zero + timedelta(seconds=199))])
    lower = zero - timedelta(seconds=1)
    assert _kept(sessions) == ("b1", lower, zero + timedelta(seconds=199))

    # A reboot heard later replaces the boot; the old boot heard after it does not return.
    t = T0 + timedelta(minutes=10)
    store.process([msg(_health(5_000, boot="b2"), kind="health", at=t)])
    assert _kept(sessions) == ("b2", t - timedelta(seconds=5), t)
    store.process([msg(_health(900_000, boot="b1"), kind="health", at=t - timedelta(seconds=1))])
    assert _kept(sessions)[0] == "b2"

    # Over an hour old, the kept value gives way to any newer one of the boot (drift).
    later = t + timedelta(hours=1, seconds=1)
    mono = 5_000 + 3_601_000 - 2_000  # heard 2 s late
    store.process([msg(_health(mono, boot="b2"), kind="health", at=later)])
    assert _kept(sessions) == ("b2", later - timedelta(milliseconds=mono), later)


def test_a_message_that_does_not_say_its_boot_clock_is_no_evidence() -> None:
    """A heartbeat or event whose boot or monotonic time is missing, of the wrong type or
    out of range says nothing of the clock (it is stored as before, never refused)."""
    from collector.intake.dating import heard

    for boot, mono in ((None, 5), ("", 5), ("b" * 65, 5), ("b1", None), ("b1", True),
                       ("b1", "5"), ("b1", -1), ("b1", 2**53), ("b1", 1.5)):  # fmt: skip
        assert heard(boot, mono, T0) is None, (boot, mono)
    zero = heard("b1", 5_000, T0)
    assert zero is not None and zero.boot == "b1" and zero.heard_ms - zero.zero_ms == 5_000

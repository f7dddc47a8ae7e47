"""A press the broker held overnight (the collector was down) is dated on its day, or
flagged as an estimate: never silently moved to the morning. A real Mosquitto holds the
collector's session while it is away; the collector's clock is injected.

An unsynced unit pressed at 17:55; the collector had been down since 17:30 and came back
at 09:04 the next morning. The event says only "sent 0 ms after the press", which the
old rule 2 read as "pressed at 09:04"."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Event, Flag
from device import protocol as p
from simulator.broker import MosquittoBroker
from tests.collector.helpers import DEV, event, replace
from tests.mqtt_helpers import publisher

YEREVAN = ZoneInfo("Asia/Yerevan")
EVENING = datetime(2026, 11, 24, 17, 30, tzinfo=YEREVAN)  # the last heartbeat heard
PRESS = datetime(2026, 11, 24, 17, 55, tzinfo=YEREVAN)
MORNING = datetime(2026, 11, 25, 9, 4, tzinfo=YEREVAN)
MONO_EVENING = 5_000_000


def heartbeat(boot: str, mono_ms: int) -> bytes:
    h = p.Health(device=DEV, at="1970-01-01T00:00:00+00:00", queue_depth=0,
                 oldest_unacked_s=None, uptime_s=mono_ms / 1000, firmware="1.0",
                 clock_synced=False, extra={"boot": boot, "mono_ms": mono_ms})  # fmt: skip
    return p.encode_health(h)


def unsynced(seq: int, boot: str, mono_ms: int) -> p.Event:
    # The unit's own clock is wrong (a Pi without a real-time clock after a cold boot).
    return replace(event(seq, score=4), at="1970-01-01T00:30:00+00:00", clock_synced=False,
                   boot=boot, mono_ms=mono_ms, sent_mono_ms=mono_ms, sent_boot=boot)  # fmt: skip


@pytest.mark.parametrize("same_boot", [True, False])
def test_a_press_held_overnight_lands_on_its_day_or_is_flagged(
    broker: MosquittoBroker, database_url: str, sessions: sessionmaker[Session], same_boot: bool
) -> None:
    now = [EVENING]
    settings = Settings(database_url=database_url, mqtt_url=broker.url,
                        mqtt_client_id="held-collector", ingest_receiver="thread")  # fmt: skip
    store = Store(sessions)
    ing = Ingest(settings, store, Metrics(), clock=lambda: now[0])
    ing.start()
    assert ing.wait_until_subscribed()
    unit = publisher(broker, client_id="unit")
    unit.publish(p.health_topic(DEV), heartbeat("b1", MONO_EVENING), qos=0)
    assert ing.wait_for_messages(1) and ing.wait_idle()
    ing.stop()  # the collector goes down at 17:30; the broker keeps its session

    boot = "b1" if same_boot else "b2"  # b2: the unit rebooted after its last heartbeat
    mono = MONO_EVENING + 25 * 60_000 if same_boot else 60_000
    unit.publish(
        p.event_topic(DEV), p.encode_event(unsynced(1, boot, mono)), qos=1
    ).wait_for_publish(5)
    unit.disconnect()

    now[0] = MORNING  # back at 09:04: the broker delivers what it held
    ing = Ingest(settings, store, Metrics(), clock=lambda: now[0])
    ing.start()
    try:
        assert ing.wait_for_messages(1) and ing.wait_idle()
    finally:
        ing.stop()
    with sessions() as s:
        stored = s.scalars(select(Event)).one()
    local = stored.pressed_at.astimezone(YEREVAN)
    if same_boot:  # the heartbeat of that boot dates it exactly
        assert local == PRESS and stored.flags == Flag.CLOCK_CORRECTED
        assert stored.day == PRESS.date()
    else:  # only bounds: from the collector's last hearing to the morning, flagged
        assert stored.flags & Flag.CLOCK_UNTRUSTED and stored.flags & Flag.DAY_UNCERTAIN
        assert stored.pressed_lo is not None and stored.pressed_hi is not None
        assert stored.pressed_lo.astimezone(YEREVAN) == EVENING
        assert stored.pressed_hi.astimezone(YEREVAN) == MORNING

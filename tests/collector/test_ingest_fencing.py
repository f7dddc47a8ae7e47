"""Fencing: every commit of an active/standby ingest checks, inside its own transaction,
that the lease is still this process's in the generation it took; once another process
holds it, nothing more is committed or acknowledged (the broker keeps it for the
holder). Real Mosquitto, both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Event
from collector.outbound.outbox import Lease
from device import protocol as p
from simulator.broker import MosquittoBroker
from tests.collector.helpers import DEV, event
from tests.mqtt_helpers import Recorder, publisher


def test_a_commit_after_the_lease_changed_hands_is_fenced_off(
    broker: MosquittoBroker, database_url: str, sessions: sessionmaker[Session]
) -> None:
    now = [datetime(2026, 11, 24, 8, 0, tzinfo=UTC)]
    ours = Lease(sessions, "ingest_lease", "a:1", ttl_s=3, clock=lambda: now[0])
    theirs = Lease(sessions, "ingest_lease", "b:2", ttl_s=3, clock=lambda: now[0])
    assert ours.hold() and not theirs.hold()
    store = Store(sessions)
    store.fence = ours.check
    settings = Settings(database_url=database_url, mqtt_url=broker.url,
                        mqtt_client_id="fenced", ingest_receiver="thread")  # fmt: skip
    ing = Ingest(settings, store, Metrics())
    acks = Recorder(broker, [p.ack_topic(DEV)], client_id="acks")
    unit = publisher(broker, client_id="unit")
    ing.start()
    try:
        assert ing.wait_until_subscribed()
        unit.publish(p.event_topic(DEV), p.encode_event(event(1)), qos=1)
        assert acks.wait_for(lambda m: len(m) == 1)  # ours: committed and acknowledged
        now[0] += timedelta(seconds=10)  # our renewals did not get through; it expired
        assert theirs.hold() and theirs.generation == ours.generation + 1
        unit.publish(p.event_topic(DEV), p.encode_event(event(2)), qos=1)
        assert ing.fenced.wait(15)
        assert not acks.wait_for(lambda m: len(m) > 1, timeout=1)  # never acknowledged
        # Taking it back later is a new generation: the old one stays fenced off.
        theirs.release()
        assert ours.hold() and ours.generation == theirs.generation + 1
    finally:
        ing.stop()
        acks.close()
        unit.disconnect()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1

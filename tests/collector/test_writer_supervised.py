"""The ingest writer is supervised: an error that escapes one of its rounds (a defect of
ours: here the ack hand-over failing as when a receiver restart leaves none between two
reads) no longer ends ingest while ``/healthz`` says ok. Health turns red at once, the
writer goes on, the broker re-delivers what was not acknowledged, and health is green
again at the next commit. Real Mosquitto, both receivers, both databases."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.main import create_app
from collector.models import Event
from device import protocol as p
from simulator.broker import MosquittoBroker
from tests.collector.helpers import DEV, event
from tests.mqtt_helpers import Recorder, publisher


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_the_writer_survives_an_error_of_its_own_and_health_says_so(
    broker: MosquittoBroker, database_url: str, sessions: sessionmaker[Session], receiver: str
) -> None:
    settings = Settings(database_url=database_url, mqtt_url=broker.url,
                        mqtt_client_id=f"writer-{receiver}", ingest_batch_ms=10,
                        ingest_receiver=receiver, alerts_enabled=False)  # fmt: skip
    app = create_app(settings, ingest=True)
    acks = Recorder(broker, [p.ack_topic(DEV)], client_id="acks")
    unit = publisher(broker, client_id="unit")
    with TestClient(app) as http:
        ing = app.state.gnahat.ingest
        assert ing.wait_until_subscribed(15)
        real = ing._publish_acks
        failed = threading.Event()
        release = threading.Event()

        def fails_once(*args: Any) -> None:
            if not failed.is_set():
                failed.set()
                release.wait(10)  # health is read while the failure is the latest news
                raise AttributeError("'NoneType' object has no attribute 'publish_acks'")
            real(*args)

        ing._publish_acks = fails_once
        real_commit = ing._commit
        seen_red = threading.Event()

        def commit_after_red(batch: Any) -> Any:
            # The re-delivery may come back within milliseconds of the failure (a
            # reconnect on a thread receiver); health is read before it is committed.
            if failed.is_set():
                seen_red.wait(10)
            return real_commit(batch)

        ing._commit = commit_after_red
        unit.publish(p.event_topic(DEV), p.encode_event(event(1)), qos=1)
        assert failed.wait(15)
        release.set()

        def health() -> Any:
            return http.get("/healthz")

        def red() -> bool:
            r = health()
            return r.status_code == 503 and "writer failed" in r.json().get("ingest", "")

        assert until(red), health().json()
        seen_red.set()

        def acked(seq: int) -> bool:
            return any(p.decode_ack(m).covers(seq) for _t, m in acks.messages)

        # Stored but never acknowledged: the broker delivers it again (a duplicate).
        assert acks.wait_for(lambda _m: acked(1), 30)
        unit.publish(p.event_topic(DEV), p.encode_event(event(2)), qos=1)
        assert acks.wait_for(lambda _m: acked(2), 30)
        assert until(lambda: health().status_code == 200), health().json()
        assert ing.writer_alive and ing.metrics.writer_failures._value.get() == 1
    acks.close()
    unit.disconnect()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 2


def until(check: Any, rounds: int = 300) -> bool:
    """``check`` polled on the writer's pace (each call is a request), at most ``rounds``."""
    tick = threading.Event()
    for _ in range(rounds):
        if check():
            return True
        tick.wait(0.05)
    return False

"""The harness itself talks to real parts: Mosquitto, SQLite/PostgreSQL, mock pins."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from simulator.broker import MosquittoBroker


def _client(broker: MosquittoBroker, client_id: str, *, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )
    c.connect(broker.host, broker.port)
    return c


def test_broker_delivers_and_keeps_queue_across_restart(broker: MosquittoBroker) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    sub = _client(broker, "harness-sub", clean=False)
    sub.on_message = lambda c, u, m: got.put(m.payload)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.loop_start()
    sub.subscribe("t/#", qos=1)
    assert subscribed.wait(5)
    pub = _client(broker, "harness-pub")
    pub.loop_start()
    pub.publish("t/1", "Գյումրի".encode(), qos=1).wait_for_publish(5)
    assert got.get(timeout=5).decode() == "Գյումրի"
    sub.disconnect()
    sub.loop_stop()
    # Offline subscriber: the broker queues for its persistent session ...
    pub.publish("t/2", b"queued", qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    # ... and keeps it across a restart (persistence on, short autosave).
    broker.restart()
    sub2 = _client(broker, "harness-sub", clean=False)
    sub2.on_message = lambda c, u, m: got.put(m.payload)
    sub2.loop_start()
    assert got.get(timeout=10) == b"queued"
    sub2.disconnect()
    sub2.loop_stop()


def test_database_fixture_is_real_and_round_trips_armenian(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    t = sa.Table(
        "probe",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, name="Վայոց ձոր և Իջևան"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.name)).scalar_one() == "Վայոց ձոր և Իջևան"
    engine.dispose()


def test_mock_factory_drives_a_button(mock_factory: object) -> None:
    from gpiozero import Button

    with Button(17) as b:
        assert not b.is_pressed
        b.pin.drive_low()
        assert b.is_pressed
        b.pin.drive_high()
        assert not b.is_pressed

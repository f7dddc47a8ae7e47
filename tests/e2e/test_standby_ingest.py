"""Active and standby ingest on a broker without shared subscriptions (a NATS cluster):
two `gnahat-collector ingest` processes share one client id through a database lease;
the active one is killed mid-run, the standby takes over its session, nothing is lost
or doubled."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update

from collector.db import make_engine
from collector.models import Event, Meta
from device import protocol as p
from device.clock import SystemClock
from device.config import MqttConfig
from simulator.broker import MosquittoBroker
from simulator.fleet import Fleet
from simulator.nats import NatsCluster
from tests.collector.helpers import event
from tests.e2e.conftest import DEVICES, IngestProcess, registry_db

UNITS = DEVICES[:4]


def standby(url: str, cluster: NatsCluster) -> IngestProcess:
    env = {
        "GNAHAT_DATABASE_URL": url,
        "GNAHAT_MQTT_URL": cluster.url,
        "GNAHAT_MQTT_PROTOCOL": "3.1.1",
        "GNAHAT_MQTT_CLIENT_ID": "collector-ingest",  # one session, taken in turn
        "GNAHAT_INGEST_STANDBY": "true",
        "GNAHAT_INGEST_LEASE_S": "3",
    }
    watch = {
        "active": "holding the ingest lease",
        "subscribed": "subscribed to gnahat/v1/dev/+/event",
        "standby": "standby ingest",
    }
    return IngestProcess(env, watch)


def test_the_standby_takes_over_when_the_active_ingest_dies(
    nats_cluster: NatsCluster, pg: str, tmp_path: Path
) -> None:
    a = standby(pg, nats_cluster)
    assert a.seen["active"].wait(60) and a.seen["subscribed"].wait(60), "".join(a.log)
    b = standby(pg, nats_cluster)
    fleet = None
    try:
        assert b.seen["standby"].wait(60), "".join(b.log)
        host, port = nats_cluster.mqtt_endpoints[0]
        mqtt = MqttConfig(
            host=host,
            port=port,
            brokers=tuple(nats_cluster.mqtt_endpoints[1:]),
            username=None,
            ack_timeout_s=2,
        )
        fleet = Fleet(
            UNITS, workdir=tmp_path / "units", mqtt=mqtt, clock=SystemClock(), cooldown_s=0
        )
        fleet.start()
        units = list(fleet.units.values())
        for i in range(400):
            assert units[i % len(units)].press(1 + i % 4)
            if i == 200:
                assert not b.seen["active"].is_set(), "".join(b.log)  # one active at a time
                a.kill()  # the active ingest dies mid-run
        assert b.seen["active"].wait(60), "".join(b.log)
        assert fleet.drain(120), (fleet.totals(), "".join(b.log))
        acknowledged = fleet.totals()["acknowledged"]
    finally:
        if fleet is not None:
            fleet.stop()
        a.stop()
        b.stop()
    engine = make_engine(pg)
    with engine.connect() as conn:
        rows = conn.execute(select(Event.device, Event.stream, Event.seq)).all()
        assert len(rows) == len(set(rows)) == acknowledged == 400
        per_device = dict(
            conn.execute(select(Event.device, func.count()).group_by(Event.device)).all()  # type: ignore[arg-type]
        )
        assert per_device == dict.fromkeys(UNITS, 100)
    engine.dispose()


class AckWatcher:
    """A unit's side of the wire, by hand: publish events, collect the acked seqs."""

    def __init__(self, broker: MosquittoBroker, device: str) -> None:
        self.device = device
        self.acked: set[int] = set()
        self.changed = threading.Condition()
        subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{device}", protocol=mqtt.MQTTv311
        )
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_connect = lambda cl, *a: cl.subscribe(p.ack_topic(device), qos=1)
        c.on_message = self._on_ack
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert subscribed.wait(10)
        self.client = c

    def _on_ack(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        ack = p.decode_ack(m.payload)
        with self.changed:
            for lo, hi in ack.ranges:
                self.acked.update(range(lo, hi + 1))
            self.changed.notify_all()

    def press(self, seq: int) -> None:
        payload = p.encode_event(event(seq, device=self.device))
        self.client.publish(p.event_topic(self.device), payload, qos=1).wait_for_publish(10)

    def wait_acked(self, seqs: set[int], timeout: float = 30) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: seqs <= self.acked, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sqlite_db(tmp_path: Path) -> str:
    return registry_db(f"sqlite:///{tmp_path / 'standby.db'}")


def lone_standby(url: str, broker: MosquittoBroker) -> IngestProcess:
    env = {
        "GNAHAT_DATABASE_URL": url,
        "GNAHAT_MQTT_URL": broker.url,
        "GNAHAT_MQTT_CLIENT_ID": "collector-ingest",
        "GNAHAT_INGEST_STANDBY": "true",
        "GNAHAT_INGEST_LEASE_S": "1.5",
    }
    watch = {
        "active": "holding the ingest lease",
        "subscribed": "subscribed to gnahat/v1/dev/+/event",
        "stood down": "another process holds the ingest lease: standing by",
        "db away": "could not renew the ingest lease",
        "in time": "could not be renewed in time: standing by",
    }
    return IngestProcess(env, watch)


def test_the_active_ingest_stands_by_while_another_holds_the_lease(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """A lease renewed late may be taken by another process: the one that finds it
    taken stops ingesting at once (its session is left to the holder), and takes its
    turn again once the lease is free; what came meanwhile waits in the broker."""
    url = sqlite_db(tmp_path)
    proc = lone_standby(url, broker)
    unit = AckWatcher(broker, DEVICES[0])
    try:
        assert proc.seen["subscribed"].wait(60), "".join(proc.log)
        unit.press(1)
        assert unit.wait_acked({1})
        engine = make_engine(url)
        with engine.begin() as conn:  # another process's lease, a minute long
            later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
            conn.execute(
                update(Meta).where(Meta.key == "ingest_lease").values(value=f"other|{later}")
            )
        assert proc.seen["stood down"].wait(30), "".join(proc.log)
        proc.seen["active"].clear()
        unit.press(2)  # nobody ingests now: the broker keeps it for the session
        assert not unit.wait_acked({2}, timeout=2)
        with engine.begin() as conn:  # the other process released it
            conn.execute(update(Meta).where(Meta.key == "ingest_lease").values(value=""))
        engine.dispose()
        assert proc.seen["active"].wait(30), "".join(proc.log)
        assert unit.wait_acked({1, 2})
    finally:
        unit.close()
        proc.stop()
    engine = make_engine(url)
    with engine.connect() as conn:
        seqs = conn.execute(select(Event.seq).where(Event.device == DEVICES[0])).scalars()
        assert sorted(seqs) == [1, 2]
    engine.dispose()


def test_an_active_ingest_that_cannot_renew_stands_down_before_its_lease_can_expire(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The database away for the renewal (here: locked by another writer): the active
    process cannot know whether another can take the lease, so it stops consuming before
    the lease can run out (no two actives knocking each other off the broker with the
    shared client id), and takes its turn again once the database answers; nothing it
    took meanwhile is acked, and nothing is lost."""
    url = sqlite_db(tmp_path)
    proc = lone_standby(url, broker)
    unit = AckWatcher(broker, DEVICES[0])
    # A busy timeout: the process may hold the write lock for a renewal at that moment.
    lock = sqlite3.connect(tmp_path / "standby.db", timeout=30)
    try:
        assert proc.seen["subscribed"].wait(60), "".join(proc.log)
        proc.seen["active"].clear()
        lock.execute("BEGIN EXCLUSIVE")  # no other connection reads or writes now
        assert proc.seen["db away"].wait(60), "".join(proc.log)
        assert proc.seen["in time"].wait(60), "".join(proc.log)
        unit.press(1)
        assert not unit.wait_acked({1}, timeout=1)  # not committed, so not acked
        lock.rollback()
        assert proc.seen["active"].wait(60), "".join(proc.log)  # its turn again
        assert unit.wait_acked({1}, timeout=60), "".join(proc.log)
    finally:
        lock.close()
        unit.close()
        proc.stop()
    engine = make_engine(url)
    with engine.connect() as conn:
        seqs = conn.execute(select(Event.seq).where(Event.device == DEVICES[0])).scalars()
        assert sorted(seqs) == [1]
    engine.dispose()


class CuttableLink:
    """A TCP relay to PostgreSQL for one process: ``cut()`` drops its connections and
    refuses new ones, as a broken network path to the database would."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[Any] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while self.open:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.open = False
        with contextlib.suppress(OSError):
            self.server.shutdown(2)  # wakes the blocked accept, refuses what comes next
        self.server.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(2)
                s.close()


def test_an_active_cut_off_from_the_database_steps_down_before_the_standby_takes_over(
    broker: MosquittoBroker, pg: str
) -> None:
    """Split brain, prevented: the active process loses its database link while the
    standby keeps its own. The active stops consuming before its lease can expire; the
    standby takes the lease after that and resumes the broker session; neither knocks
    the other off the broker, and every press is stored once."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(pg)
    link = CuttableLink(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_link = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{link.port}"))
    seen_at: dict[str, float] = {}

    a = lone_standby(via_link, broker)
    unit = AckWatcher(broker, DEVICES[0])
    b = None
    try:
        assert a.seen["subscribed"].wait(60), "".join(a.log)
        b = lone_standby(pg, broker)
        unit.press(1)
        assert unit.wait_acked({1}, timeout=30)
        b.seen["active"].clear()
        link.cut()  # the active's database link breaks; the standby's does not
        assert a.seen["in time"].wait(60), "".join(a.log)
        seen_at["a down"] = time.monotonic()
        assert b.seen["active"].wait(60), "".join(b.log)
        seen_at["b up"] = time.monotonic()
        assert seen_at["a down"] <= seen_at["b up"]
        unit.press(2)
        unit.press(3)
        assert unit.wait_acked({1, 2, 3}, timeout=60), "".join(b.log)
        knocked = [line for line in b.log if "disconnected from broker" in line]
        assert not knocked, "".join(b.log)  # no second active took the session back
    finally:
        unit.close()
        a.stop()
        if b is not None:
            b.stop()
    engine = make_engine(pg)
    with engine.connect() as conn:
        seqs = conn.execute(select(Event.seq).where(Event.device == DEVICES[0])).scalars()
        assert sorted(seqs) == [1, 2, 3]
    engine.dispose()

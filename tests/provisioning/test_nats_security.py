"""Provisioning for a broker cluster: a real three-node nats-server cluster started with
the generated ``nats-accounts.conf``, and real MQTT clients as units and collector.

The same promises as the Mosquitto tests in test_broker_security.py: a unit speaks only
for itself, hears only its own acks and commands, cannot take another's client id or
persistent session, and a revoked unit is refused once the nodes re-read the file."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings as CollectorSettings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Event
from device import protocol as p
from provisioning.broker import BrokerLayout, render_nats_accounts
from provisioning.ca import FleetCA
from provisioning.units import Provisioner, Settings
from simulator.nats import NatsCluster, nats_binary
from tests.collector.helpers import event

CENTRE = "ER-AVAN"

pytestmark = pytest.mark.skipif(nats_binary() is None, reason="nats-server is not installed")


@dataclass
class Env:
    prov: Provisioner
    cluster: NatsCluster
    accounts_file: Path

    def password(self, name: str) -> str:
        if name == "gnahat-collector":
            return (self.prov.state / "collector.password").read_text()
        return (self.prov.bundles / name / "password").read_text()

    def rewrite(self) -> None:
        self.prov.broker_config()
        self.cluster.reload()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    state = tmp_path / "state"
    layout = BrokerLayout(
        host="127.0.0.1",
        server_cert=str(state / "server.pem"),
        server_key=str(state / "server.key"),
        run_as_user=None,
    )
    settings = Settings(broker_host="127.0.0.1", layout=layout)
    settings.verify = False  # asked of the cluster by these tests, not by provisioning
    prov = Provisioner(state, settings=settings)
    state.mkdir()
    prov.ca.init()
    prov.broker_config(server_hosts=["127.0.0.1"], self_signed=True)
    for desk in (1, 2):
        prov.add_unit(CENTRE, desk)
    accounts = prov.broker_dir / "nats-accounts.conf"
    cluster = NatsCluster(tmp_path / "nats", accounts_file=accounts)
    cluster.start()
    yield Env(prov, cluster, accounts)
    cluster.stop()


class Client:
    """A real paho client that records what it receives and whether it was knocked off."""

    def __init__(
        self,
        env: Env,
        node: int,
        user: str,
        password: str,
        client_id: str,
        *,
        cluster: NatsCluster | None = None,
        ca: Path | None = None,
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.message = threading.Event()
        self.down = threading.Event()
        self.subacks: list[list[int]] = []
        self.subscribed = threading.Event()
        self.reason = ""
        connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(user, password)
        if ca is not None:
            c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)

        def on_connect(cl: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            self.reason = str(reason)
            connected.set()

        def on_message(cl: Any, u: Any, m: mqtt.MQTTMessage) -> None:
            self.received.append((m.topic, m.payload))
            self.message.set()

        def on_subscribe(cl: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
            self.subacks.append([r.value for r in reasons])
            self.subscribed.set()

        c.on_connect = on_connect
        c.on_message = on_message
        c.on_subscribe = on_subscribe
        c.on_disconnect = lambda *a: (self.down.set(), connected.set())
        c.reconnect_delay_set(60, 60)  # a knocked-off client must stay down to be seen
        host, port = (cluster or env.cluster).mqtt_endpoints[node]
        try:
            c.connect(host, port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            self.reason = f"connect failed: {exc}"
            self.client = c
            return
        c.loop_start()
        connected.wait(15)
        self.client = c

    @property
    def ok(self) -> bool:
        return self.reason == "Success" and not self.down.is_set()

    def subscribe(self, *topics: str) -> list[int]:
        self.subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(15), "no SUBACK"
        return self.subacks[-1]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_for(self, topic: str, timeout: float = 20) -> None:
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not any(t == topic for t, _ in self.received):
                assert not deadline.is_set(), f"nothing on {topic}; got {self.received}"
                self.message.wait(0.5)
                self.message.clear()
        finally:
            timer.cancel()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def units(env: Env) -> list[str]:
    return env.prov.accounts.active_units()


def test_the_generated_accounts_file_names_every_unit_and_no_revoked_one(env: Env) -> None:
    a, b = units(env)
    text = env.accounts_file.read_text()
    assert f'"unit-{a}"' in text and f'"unit-{b}"' in text
    assert env.password(a) not in text  # hashes only
    env.prov.revoke(b)
    assert f'"unit-{b}"' not in env.accounts_file.read_text()
    assert f'"unit-{b}"' not in render_nats_accounts(env.prov.accounts)


def test_unit_cannot_speak_for_another_or_listen_to_it(env: Env) -> None:
    a, b = units(env)
    collector = Client(env, 0, "gnahat-collector", env.password("gnahat-collector"), "col")
    assert collector.ok, collector.reason
    assert collector.subscribe("gnahat/v1/dev/+/event") == [1]
    unit = Client(env, 1, a, env.password(a), a)
    assert unit.ok, unit.reason
    # Another unit's acks and commands, and everything: refused (0x80) and never delivered.
    assert unit.subscribe(p.ack_topic(b)) == [128]
    assert unit.subscribe(p.cmd_topic(b)) == [128]
    assert unit.subscribe("#") == [128]
    assert unit.subscribe(p.ack_topic(a), p.cmd_topic(a)) == [1, 1]
    # Writing for another unit (its event, its ack) reaches nobody; its own event does.
    unit.publish(p.event_topic(b), b"forged")
    unit.publish(p.ack_topic(b), b"forged")
    unit.publish(p.event_topic(a), b"own")
    collector.wait_for(p.event_topic(a))
    assert collector.received == [(p.event_topic(a), b"own")]
    # The collector writes to both units: only the unit's own ack and command arrive.
    collector.publish(p.ack_topic(b), b"for b")
    collector.publish(p.cmd_topic(b), b"for b")
    collector.publish(p.ack_topic(a), b"for a")
    collector.publish(p.cmd_topic(a), b"cmd a")
    # Two subjects: the cluster keeps each one's order, not one across both.
    unit.wait_for(p.ack_topic(a))
    unit.wait_for(p.cmd_topic(a))
    assert sorted(unit.received) == [(p.ack_topic(a), b"for a"), (p.cmd_topic(a), b"cmd a")]
    unit.close()
    collector.close()


def test_a_unit_credential_cannot_take_another_client_id(env: Env) -> None:
    """A unit's session lives in its own account: the same client id under another
    unit's credentials is another session; nobody is knocked off, and what was kept for
    an away unit reaches that unit only."""
    a, b = units(env)
    collector = Client(env, 0, "gnahat-collector", env.password("gnahat-collector"), "col")
    assert collector.subscribe("gnahat/v1/dev/+/event") == [1]
    victim = Client(env, 1, b, env.password(b), b)
    assert victim.subscribe(p.ack_topic(b)) == [1]
    for target in (b, "col"):
        thief = Client(env, 2, a, env.password(a), target)
        assert thief.ok, thief.reason
        thief.publish(p.event_topic(a), target.encode())  # it is connected, as `a`
        collector.wait_for(p.event_topic(a))
        collector.received.clear()
        thief.close()
    assert not victim.down.is_set() and not collector.down.is_set()
    # The victim goes away; an ack kept for it must wait for it, not for the thief.
    victim.close()
    collector.publish(p.ack_topic(b), b"kept")
    thief = Client(env, 1, a, env.password(a), b)
    thief.subscribe(p.ack_topic(a))
    back = Client(env, 2, b, env.password(b), b)
    back.wait_for(p.ack_topic(b))
    assert back.received == [(p.ack_topic(b), b"kept")]
    assert thief.received == []
    for c in (thief, back, collector):
        c.close()


def test_wrong_unknown_and_revoked_credentials_are_refused(env: Env) -> None:
    a, b = units(env)
    assert not Client(env, 0, a, "wrong", a).ok
    assert not Client(env, 0, "nobody", "x", "nobody").ok
    assert not Client(env, 0, a, "", a).ok
    before = Client(env, 1, b, env.password(b), b)
    assert before.ok
    before.close()
    env.prov.revoke(b)
    env.cluster.reload()
    # Each node re-reads the file on its own; ask each until it refuses.
    for node in range(3):
        refused = False
        for _ in range(50):
            c = Client(env, node, b, env.password(b), b)
            if not c.ok:
                refused = True
                break
            c.close()
            threading.Event().wait(0.1)  # polling another process's reload
        assert refused, f"node {node} still accepts the revoked unit"
    still = Client(env, 2, a, env.password(a), a)
    assert still.ok


def test_the_collector_ingests_and_acks_across_accounts_and_nodes(
    env: Env, database_url: str, sessions: sessionmaker[Session]
) -> None:
    """The real ingest with the collector's credentials, a unit on another node: its
    events are stored once and acked, also the one sent while the collector was away."""
    a, _ = units(env)
    settings = CollectorSettings(
        database_url=database_url,
        mqtt_url=env.cluster.url,
        mqtt_username="gnahat-collector",
        mqtt_password=env.password("gnahat-collector"),
        mqtt_client_id="collector-nats",
        mqtt_protocol="3.1.1",  # what nats-server speaks
        ingest_batch_ms=10,
    )

    def ingest() -> Ingest:
        ing = Ingest(settings, Store(sessions), Metrics())
        ing.start()
        assert ing.wait_until_subscribed(30)
        return ing

    first = ingest()
    unit = Client(env, 2, a, env.password(a), a)
    try:
        assert unit.subscribe(p.ack_topic(a)) == [1]
        unit.publish(p.event_topic(a), p.encode_event(event(1, device=a)))
        unit.wait_for(p.ack_topic(a))
        first.stop()
        unit.received.clear()
        unit.publish(p.event_topic(a), p.encode_event(event(2, device=a)))
        second = ingest()  # takes up its persistent session in its own account
        try:
            unit.wait_for(p.ack_topic(a))
        finally:
            second.stop()
    finally:
        unit.close()
        first.stop()
    with sessions() as s:
        assert s.scalars(select(Event.seq).where(Event.device == a).order_by(Event.seq)).all() == [
            1,
            2,
        ]


def test_the_cluster_listeners_take_tls_with_the_provisioned_certificate(
    env: Env, tmp_path: Path
) -> None:
    """The nodes' MQTT listeners with the server certificate provisioning issued from
    the fleet CA (as the runbook's node configuration): units verify it with the CA in
    their bundle; plain MQTT is refused."""
    layout = env.prov.settings.layout
    cluster = NatsCluster(
        tmp_path / "nats-tls",
        accounts_file=env.accounts_file,
        tls=(Path(layout.server_cert), Path(layout.server_key)),
    )
    cluster.start()
    try:
        a, _ = units(env)
        ca = env.prov.bundles / a / "ca.pem"
        unit = Client(env, 1, a, env.password(a), a, cluster=cluster, ca=ca)
        assert unit.ok, unit.reason
        assert unit.subscribe(p.ack_topic(a)) == [1]
        unit.close()
        plain = Client(env, 1, a, env.password(a), a + "-plain", cluster=cluster)
        assert not plain.ok
        other = FleetCA(tmp_path / "other")
        other.init("Another CA")  # a node this unit's CA did not vouch for: refused
        assert not Client(env, 2, a, env.password(a), a, cluster=cluster, ca=other.cert_path).ok
    finally:
        cluster.stop()

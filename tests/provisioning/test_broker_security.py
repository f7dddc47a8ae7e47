"""Provisioning against a real Mosquitto started with the generated configuration."""

from __future__ import annotations

import contextlib
import getpass
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings as CollectorSettings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Device, Event
from device import protocol as p
from provisioning.broker import BrokerLayout, mosquitto_hash
from provisioning.ca import FleetCA
from provisioning.units import Provisioner, ProvisioningError, Settings
from simulator.broker import MosquittoBroker, free_port
from tests.collector.helpers import T0, event

CENTRE = "ER-AVAN"


@dataclass
class Env:
    prov: Provisioner
    broker: MosquittoBroker
    layout: BrokerLayout
    url: str
    sessions: sessionmaker[Session]
    ingests: list[Ingest] = field(default_factory=list)


@pytest.fixture
def env(
    tmp_path: Path, database_url: str, sessions: sessionmaker[Session], broker_factory: Any
) -> Iterator[Env]:
    state = tmp_path / "state"
    layout = BrokerLayout(
        host="127.0.0.1",
        tls_port=free_port(),
        mtls_port=free_port(),
        server_cert=str(state / "server.pem"),
        server_key=str(state / "server.key"),
        persistence_dir=f"{tmp_path}/persist/",
        run_as_user=getpass.getuser(),
    )
    prov = Provisioner(
        state, database_url=database_url, settings=Settings(broker_host="127.0.0.1", layout=layout)
    )
    state.mkdir()
    prov.ca.init()
    conf = prov.broker_config(server_hosts=["127.0.0.1", "localhost"], self_signed=True)
    (tmp_path / "persist").mkdir()
    broker = broker_factory(tmp_path / "broker", config_file=conf)
    broker.start()
    env = Env(prov, broker, layout, database_url, sessions)
    yield env
    for ing in env.ingests:  # a failed assertion must not leave an ingest running
        ing.stop()
    broker.stop()


def connect(
    env: Env,
    username: str | None,
    password: str | None,
    *,
    port: int | None = None,
    cert: tuple[Path, Path] | None = None,
    ca: Path | None = None,
    tls: bool = True,
) -> tuple[mqtt.Client | None, str]:
    """Connect and return (client, reason); client is None when refused."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"t-{username}-{free_port()}", protocol=mqtt.MQTTv311
    )
    if username:
        c.username_pw_set(username, password)
    if tls:
        c.tls_set(
            ca_certs=str(ca or env.prov.ca.cert_path),
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    done = threading.Event()
    result: list[str] = []
    c.on_connect = lambda cl, u, f, reason, pr: (result.append(str(reason)), done.set())
    c.on_disconnect = lambda *a: done.set()
    try:
        c.connect("127.0.0.1", port or env.layout.tls_port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return None, f"connect failed: {exc}"
    c.loop_start()
    done.wait(10)
    if result == ["Success"]:
        return c, "Success"
    c.loop_stop()
    return None, result[0] if result else "no CONNACK"


def unit_password(env: Env, device: str) -> str:
    return (env.prov.bundles / device / "password").read_text()


def collector_ingest(env: Env) -> Ingest:
    settings = CollectorSettings(
        database_url=env.url,
        mqtt_url=f"mqtts://127.0.0.1:{env.layout.tls_port}",
        mqtt_username="gnahat-collector",
        mqtt_password=(env.prov.state / "collector.password").read_text(),
        mqtt_ca_file=str(env.prov.ca.cert_path),
        mqtt_client_id="collector-sec",
        ingest_batch_ms=10,
    )
    ing = Ingest(settings, Store(env.sessions), Metrics())
    env.ingests.append(ing)
    ing.start()
    assert ing.wait_until_subscribed(15)
    return ing


def test_provisioned_unit_connects_and_its_events_are_stored(env: Env) -> None:
    # Registered before the press it sends (the event is stamped at T0 + 1 min).
    b = env.prov.add_unit(CENTRE, 31, service="EMPLOYMENT", now=T0 - timedelta(days=1))
    with env.sessions() as s:
        assert s.get(Device, b.device) is not None  # registered in the registry
    assert (b.folder / "password").stat().st_mode & 0o777 == 0o600
    ing = collector_ingest(env)
    client, reason = connect(env, b.device, unit_password(env, b.device))
    assert client is not None, reason
    acks: list[bytes] = []
    got = threading.Event()
    client.on_message = lambda c, u, m: (acks.append(m.payload), got.set())
    client.subscribe(p.ack_topic(b.device), qos=1)
    client.publish(p.event_topic(b.device), p.encode_event(event(1, device=b.device)), qos=1)
    assert got.wait(15)
    assert p.decode_ack(acks[0]).covers(1)
    with env.sessions() as s:
        assert s.scalars(select(Event.device)).all() == [b.device]
    client.disconnect()
    ing.stop()


def test_unit_cannot_speak_for_another_or_listen_to_it(env: Env) -> None:
    a = env.prov.add_unit(CENTRE, 32)
    other = env.prov.add_unit(CENTRE, 33)
    watcher, _ = connect(
        env, "gnahat-collector", (env.prov.state / "collector.password").read_text()
    )
    assert watcher is not None
    seen: list[str] = []
    control = threading.Event()
    subbed = threading.Event()
    watcher.on_subscribe = lambda *x: subbed.set()

    def on_msg(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        seen.append(m.topic)
        if m.topic == p.event_topic(a.device):
            control.set()

    watcher.on_message = on_msg
    watcher.subscribe("gnahat/v1/dev/+/event", qos=1)
    assert subbed.wait(10)
    client, _ = connect(env, a.device, unit_password(env, a.device))
    assert client is not None
    # Forbidden: another unit's event topic and its ack topic, then an allowed control.
    client.publish(p.event_topic(other.device), b"{}", qos=1)
    client.publish(p.ack_topic(other.device), b"{}", qos=1)
    client.publish(p.event_topic(a.device), b"{}", qos=1)
    assert control.wait(10)
    assert seen == [p.event_topic(a.device)]  # the forbidden one was never delivered

    # Subscriptions to another unit's ack/cmd and to '#': whatever the SUBACK says, the
    # broker must deliver nothing from them. The collector then writes to the other unit's
    # ack and cmd topics, and finally to the unit's own ack topic as a control.
    received: list[str] = []
    own_arrived = threading.Event()
    subs_done = threading.Event()
    pending = {"n": 4}

    def on_sub(c: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
        pending["n"] -= 1
        if pending["n"] == 0:
            subs_done.set()

    def on_unit_msg(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        received.append(m.topic)
        if m.topic == p.ack_topic(a.device):
            own_arrived.set()

    client.on_subscribe = on_sub
    client.on_message = on_unit_msg
    for topic in (p.ack_topic(other.device), p.cmd_topic(other.device), "#", p.ack_topic(a.device)):
        client.subscribe(topic, qos=1)
    assert subs_done.wait(10)
    ack = p.encode_ack(p.Ack("s1", ((1, 1),)))
    watcher.publish(p.ack_topic(other.device), ack, qos=1).wait_for_publish(5)
    watcher.publish(
        p.cmd_topic(other.device), p.encode_cmd(p.Command.IDENTIFY), qos=1
    ).wait_for_publish(5)
    watcher.publish(p.event_topic(other.device), b"{}", qos=1).wait_for_publish(5)
    watcher.publish(p.ack_topic(a.device), ack, qos=1).wait_for_publish(5)
    assert own_arrived.wait(10)
    assert received == [p.ack_topic(a.device)]
    client.disconnect()
    watcher.disconnect()


def test_anonymous_and_wrong_passwords_are_refused(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 34)
    assert connect(env, None, None)[0] is None
    assert connect(env, b.device, "not-the-password")[0] is None
    assert connect(env, "am-er-avan-d99", "whatever")[0] is None


def test_revoked_unit_is_refused_by_broker_and_collector(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 35)
    password = unit_password(env, b.device)
    assert connect(env, b.device, password)[0] is not None
    # Rewrites passwd/acl, SIGHUPs the broker, and asks it until it refuses the unit.
    assert "refused" in env.prov.revoke(b.device)
    assert connect(env, b.device, password)[0] is None
    with env.sessions() as s:
        dev = s.get(Device, b.device)
        assert dev is not None and dev.retired_at is not None


def test_rotation_keeps_the_unit_working_after_reconfig(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 36)
    assert "accepted" in b.confirmed  # the broker took the new unit before add_unit returned
    old = unit_password(env, b.device)
    assert "accepted" in env.prov.rotate(b.device).confirmed
    new = unit_password(env, b.device)
    assert new != old
    assert connect(env, b.device, old)[0] is None
    client, reason = connect(env, b.device, new)
    assert client is not None, reason
    client.disconnect()


def test_client_certificates_from_the_fleet_ca_only(env: Env, tmp_path: Path) -> None:
    b = env.prov.add_unit(CENTRE, 37, cert=True)
    cert = (b.folder / "client.pem", b.folder / "client.key")
    client, reason = connect(env, None, None, port=env.layout.mtls_port, cert=cert)
    assert client is not None, reason
    got = threading.Event()
    client.on_subscribe = lambda c, u, mid, reasons, pr: (
        got.set() if not any(r.is_failure for r in reasons) else None
    )
    client.subscribe(p.ack_topic(b.device), qos=1)  # CN is the username: ACL applies
    assert got.wait(10)
    client.disconnect()
    rogue = FleetCA(tmp_path / "rogue")
    rogue.folder.mkdir()
    rogue.init("Some other CA")
    key, crt, _ = rogue.issue(b.device)
    (tmp_path / "r.key").write_bytes(key)
    (tmp_path / "r.pem").write_bytes(crt)
    assert (
        connect(
            env,
            None,
            None,
            port=env.layout.mtls_port,
            cert=(tmp_path / "r.pem", tmp_path / "r.key"),
        )[0]
        is None
    )
    assert connect(env, None, None, port=env.layout.mtls_port)[0] is None  # no cert at all


def test_tls_listener_refuses_plain_tcp(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 38)
    assert connect(env, b.device, unit_password(env, b.device), tls=False)[0] is None
    with socket.create_connection(("127.0.0.1", env.layout.tls_port), timeout=5) as s:
        # An MQTT CONNECT in clear text gets no CONNACK from a TLS listener.
        s.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 0]))
        s.settimeout(5)
        try:
            data = s.recv(4)
        except (TimeoutError, ConnectionResetError):
            data = b""
        assert not data.startswith(b"\x20")


def test_bundle_and_cloud_init(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 39, scale=5, mode="armed")
    doc = yaml.safe_load((b.folder / "user-data").read_text())
    paths = {f["path"]: f for f in doc["write_files"]}
    assert {"/etc/gnahat/unit.toml", "/etc/gnahat/password", "/etc/gnahat/ca.pem"} <= set(paths)
    assert paths["/etc/gnahat/password"]["permissions"] == "0600"
    assert ["systemctl", "enable", "--now", "gnahat-device.service"] in doc["runcmd"]
    import base64
    import tomllib

    from device.config import parse_config

    cfg = parse_config(
        tomllib.loads(base64.b64decode(paths["/etc/gnahat/unit.toml"]["content"]).decode())
    )
    assert cfg.device_id == b.device and cfg.scale == 5 and cfg.mode == "armed"
    assert cfg.mqtt.tls and cfg.mqtt.port == env.layout.tls_port
    assert (b.folder / "user-data").stat().st_mode & 0o777 == 0o600
    # New credentials keep the unit's own settings.
    rotated = parse_config(
        tomllib.loads((env.prov.rotate(b.device).folder / "unit.toml").read_text())
    )
    assert (rotated.scale, rotated.mode, rotated.kiosk.enabled) == (5, "armed", False)


def test_a_kiosk_unit(env: Env) -> None:
    import tomllib

    from device.config import parse_config

    b = env.prov.add_unit(CENTRE, 48, kiosk=True)
    cfg = parse_config(tomllib.loads((b.folder / "unit.toml").read_text()))
    assert cfg.kiosk.enabled and cfg.kiosk.host == "127.0.0.1"
    with env.sessions() as s:
        dev = s.get(Device, b.device)
        assert dev is not None and dev.kind == "kiosk"
    rotated = parse_config(
        tomllib.loads((env.prov.rotate(b.device).folder / "unit.toml").read_text())
    )
    assert rotated.kiosk.enabled


def test_mosquitto_hash_matches_mosquitto_passwd_format() -> None:
    import base64

    h = mosquitto_hash("secret", salt=base64.b64decode("hoCyOR1XlEXNE9WI"))
    assert h == (
        "$7$101$hoCyOR1XlEXNE9WI$KIMjmZ/Fl3K6eWwD93z6iGPsDmv4ZvI3c4oXEVSnvEKvTbPqAQWi"
        "HK0P248Nl0d6p4YT1+wyOL7RBHEE6WGk/g=="
    )


@pytest.mark.parametrize("cert", [False, True], ids=["password", "certificate"])
def test_real_unit_code_runs_from_its_bundle_over_tls(env: Env, tmp_path: Path, cert: bool) -> None:
    """The bundle's unit.toml, as installed on a Pi (paths moved here), drives the real
    device daemon over TLS; its presses are acked and stored."""
    from simulator.units import UnitProcess

    b = env.prov.add_unit(CENTRE, 41 if cert else 40, cert=cert)
    text = (b.folder / "unit.toml").read_text()
    text = text.replace("/etc/gnahat", str(b.folder))
    text = text.replace("/var/lib/gnahat/outbox.db", str(tmp_path / "outbox.db"))
    text = text.replace('"/dev/serial0"', '"loop://"')
    text = text.replace("[unit]\n", "[unit]\ncooldown_s = 0\ndebounce_ms = 0\n")
    config = tmp_path / "unit.toml"
    config.write_text(text)
    ing = collector_ingest(env)
    unit = UnitProcess(config).start()
    try:
        seqs = [unit.press(s) for s in (4, 3, 1)]
        assert all(seqs)
        assert unit.drain(30)
    finally:
        unit.stop()
        ing.stop()
    with env.sessions() as s:
        stored = s.scalars(select(Event.seq).where(Event.device == b.device)).all()
        assert sorted(stored) == sorted(seqs)


def test_revoked_certificate_unit_is_refused(env: Env) -> None:
    b = env.prov.add_unit(CENTRE, 42, cert=True)
    cert = (b.folder / "client.pem", b.folder / "client.key")
    client, reason = connect(env, None, None, port=env.layout.mtls_port, cert=cert)
    assert client is not None, reason
    client.disconnect()
    assert "refused" in env.prov.revoke(b.device)  # the CRL is re-read on SIGHUP
    client, reason = connect(env, None, None, port=env.layout.mtls_port, cert=cert)
    assert client is None, "a revoked certificate still connects"


def test_rotating_a_certificate_unit_refuses_the_old_certificate(env: Env, tmp_path: Path) -> None:
    b = env.prov.add_unit(CENTRE, 43, cert=True)
    old = tmp_path / "old"
    old.mkdir()
    cert = (old / "client.pem", old / "client.key")
    for f in cert:
        f.write_bytes((b.folder / f.name).read_bytes())
    rotated = env.prov.rotate(b.device)  # asks the broker: new accepted, old refused
    assert "accepted" in rotated.confirmed
    assert connect(env, None, None, port=env.layout.mtls_port, cert=cert)[0] is None
    new = (rotated.folder / "client.pem", rotated.folder / "client.key")
    client, reason = connect(env, None, None, port=env.layout.mtls_port, cert=new)
    assert client is not None, reason
    client.disconnect()


def test_a_broker_that_did_not_take_the_change_is_an_error(env: Env) -> None:
    """No reload reaches the broker (its pid file is gone): revoke says so, loudly."""
    b = env.prov.add_unit(CENTRE, 44)
    (env.prov.broker_dir / "mosquitto.pid").unlink()
    env.prov.settings.verify_timeout_s = 1.0
    with pytest.raises(ProvisioningError, match="still accepts am-er-avan-d44"):
        env.prov.revoke(b.device)
    with env.sessions() as s:  # the registry side of the revocation is done regardless
        dev = s.get(Device, b.device)
        assert dev is not None and dev.retired_at is not None


def test_an_unreachable_broker_is_reported_not_fatal(env: Env) -> None:
    env.prov.settings.layout.tls_port = free_port()  # nothing listens there
    b = env.prov.add_unit(CENTRE, 45)
    assert b.confirmed.startswith("not checked: broker unreachable")


def test_a_connected_unit_that_is_revoked_can_no_longer_deliver(env: Env) -> None:
    a = env.prov.add_unit(CENTRE, 46)
    control_unit = env.prov.add_unit(CENTRE, 47)
    watcher, _ = connect(
        env, "gnahat-collector", (env.prov.state / "collector.password").read_text()
    )
    assert watcher is not None
    seen: list[str] = []
    control = threading.Event()
    subbed = threading.Event()
    watcher.on_subscribe = lambda *x: subbed.set()

    def on_msg(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        seen.append(m.topic)
        if m.topic == p.event_topic(control_unit.device):
            control.set()

    watcher.on_message = on_msg
    watcher.subscribe("gnahat/v1/dev/+/event", qos=1)
    assert subbed.wait(10)
    revoked, _ = connect(env, a.device, unit_password(env, a.device))
    other, _ = connect(env, control_unit.device, unit_password(env, control_unit.device))
    assert revoked is not None and other is not None
    env.prov.revoke(a.device)  # while it is connected
    info = revoked.publish(p.event_topic(a.device), b"{}", qos=1)
    with contextlib.suppress(RuntimeError, ValueError):  # it may have been disconnected
        info.wait_for_publish(5)  # PUBACK: the broker has judged it before the control
    other.publish(p.event_topic(control_unit.device), b"{}", qos=1).wait_for_publish(5)
    assert control.wait(10)
    assert seen == [p.event_topic(control_unit.device)]
    for c in (revoked, other, watcher):
        c.disconnect()


def _client(env: Env, client_id: str, username: str, password: str) -> tuple[mqtt.Client, Any]:
    """A connected client with a chosen client id; its disconnect is recorded."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)
    c.tls_set(ca_certs=str(env.prov.ca.cert_path), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    up, down = threading.Event(), threading.Event()
    c.on_connect = lambda *a: up.set()
    c.on_disconnect = lambda *a: down.set()
    c.reconnect_delay_set(60, 120)  # a knocked-off client stays off for the test
    c.connect("127.0.0.1", env.layout.tls_port, keepalive=10)
    c.loop_start()
    assert up.wait(10)
    return c, down


def test_a_unit_credential_cannot_take_another_client_id(env: Env) -> None:
    """The generated config ties the client id to the username: stolen credentials of one
    unit can knock off neither another unit nor the collector's persistent session."""
    a = env.prov.add_unit(CENTRE, 48)
    b = env.prov.add_unit(CENTRE, 49)
    collector_pw = (env.prov.state / "collector.password").read_text()
    b_client, b_down = _client(env, b.device, b.device, unit_password(env, b.device))
    col, col_down = _client(env, "gnahat-collector", "gnahat-collector", collector_pw)
    got = threading.Event()
    col.on_message = lambda *a: got.set()
    subbed = threading.Event()
    col.on_subscribe = lambda *a: subbed.set()
    col.subscribe("gnahat/v1/dev/+/event", qos=1)
    assert subbed.wait(10)
    thief_pw = unit_password(env, a.device)
    for victim in (b.device, "gnahat-collector", b.device, "gnahat-collector"):
        thief, _ = _client(env, victim, a.device, thief_pw)
        # The thief's publish as itself reaches the collector: it is connected, as `a`.
        thief.publish(p.event_topic(a.device), b"{}", qos=1).wait_for_publish(5)
        assert got.wait(10)
        got.clear()
        thief.disconnect()
        thief.loop_stop()
    assert not b_down.is_set() and not col_down.is_set()  # nobody was knocked off
    for c in (b_client, col):
        c.disconnect()
        c.loop_stop()


def test_the_broker_refuses_a_packet_larger_than_the_protocol_allows(env: Env) -> None:
    a = env.prov.add_unit(CENTRE, 50)
    collector_pw = (env.prov.state / "collector.password").read_text()
    col, _ = _client(env, "gnahat-collector", "gnahat-collector", collector_pw)
    seen: list[int] = []
    got = threading.Event()

    def on_msg(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        seen.append(len(m.payload))
        got.set()

    col.on_message = on_msg
    subbed = threading.Event()
    col.on_subscribe = lambda *a: subbed.set()
    col.subscribe("gnahat/v1/dev/+/event", qos=1)
    assert subbed.wait(10)
    unit, dropped = _client(env, a.device, a.device, unit_password(env, a.device))
    unit.publish(p.event_topic(a.device), b"x" * (10 * 2**20), qos=1)
    assert dropped.wait(20)  # the broker cut the connection on the oversize packet
    unit.loop_stop()
    # The largest payload the contract allows still goes through.
    unit2, _ = _client(env, a.device, a.device, unit_password(env, a.device))
    unit2.publish(p.event_topic(a.device), b"y" * p.MAX_PAYLOAD_BYTES, qos=1).wait_for_publish(10)
    assert got.wait(10)
    assert seen == [p.MAX_PAYLOAD_BYTES]  # the 10 MB one never reached the collector
    for c in (unit2, col):
        c.disconnect()
        c.loop_stop()

"""Units and the collector on a three-node NATS cluster (MQTT 3.1.1 over JetStream R3):
each takes the list of nodes and fails over when its node dies; every acknowledged
press is stored exactly once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Event
from device.clock import SystemClock
from device.config import MqttConfig
from simulator.fleet import Fleet
from simulator.nats import NatsCluster
from tests.e2e.conftest import DEVICES


def test_units_and_collector_fail_over_between_nodes(
    nats_cluster: NatsCluster, sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    nodes = nats_cluster.mqtt_endpoints
    # The collector starts on node 3, the units on node 1: each node's death hits one side.
    settings = Settings(
        database_url=database_url,
        mqtt_url=",".join(f"mqtt://{h}:{p}" for h, p in (nodes[2], nodes[0], nodes[1])),
        mqtt_protocol="3.1.1",
        mqtt_client_id="collector-nats",
    )
    ingest = Ingest(settings, Store(sessions), Metrics())
    mqtt = MqttConfig(
        host=nodes[0][0],
        port=nodes[0][1],
        brokers=(nodes[1], nodes[2]),
        username=None,
        ack_timeout_s=2,
        reconnect_min_s=0.5,
        reconnect_max_s=2,
    )
    fleet = Fleet(DEVICES, workdir=tmp_path / "units", mqtt=mqtt, clock=SystemClock(), cooldown_s=0)
    try:
        ingest.start()
        assert ingest.wait_until_subscribed(30), nats_cluster.logs()
        fleet.start()
        units = list(fleet.units.values())
        for i in range(600):
            if i == 200:
                nats_cluster.kill(0)  # the units' node
            if i == 400:
                nats_cluster.start_node(0)
                nats_cluster.kill(2)  # the collector's node
            assert units[i % len(units)].press(1 + i % 4)
        assert fleet.drain(180), (fleet.totals(), nats_cluster.logs())
        acknowledged = fleet.totals()["acknowledged"]
        switched = [u.daemon.link.failover for u in units]
    finally:
        fleet.stop()
        ingest.stop()
    assert all(f is not None and f.switches >= 1 for f in switched)
    with sessions() as s:
        rows = s.execute(select(Event.device, Event.stream, Event.seq)).all()
        assert len(rows) == len(set(rows)) == acknowledged == 600
        per_device = dict(
            s.execute(select(Event.device, func.count()).group_by(Event.device)).all()  # type: ignore[arg-type]
        )
        assert per_device == dict.fromkeys(DEVICES, 120)


def test_the_collector_takes_a_list_of_brokers_and_names_a_bad_one() -> None:
    import pytest
    from pydantic import ValidationError

    s = Settings(mqtt_url="mqtts://a:8883, mqtts://b, mqtts://[::1]:8885")
    assert s.mqtt_endpoints == [("a", 8883), ("b", 8883), ("::1", 8885)]
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_tls) == ("a", 8883, True)
    with pytest.raises(ValidationError, match="same scheme"):
        Settings(mqtt_url="mqtt://a:1883,mqtts://b:8883")
    with pytest.raises(ValidationError, match="'mqtt://b:0x': the port must be 1 to 65535"):
        Settings(mqtt_url="mqtt://a:1883,mqtt://b:0x")
    with pytest.raises(ValidationError, match="several: comma-separated"):
        Settings(mqtt_url="mqtt://a:1883,b:1883")


def test_a_unit_moves_on_when_its_first_broker_is_unreachable(
    broker: object, tmp_path: Path
) -> None:
    """Failover is not NATS-specific: with Mosquitto too, a dead first endpoint is skipped."""
    from simulator.broker import MosquittoBroker, free_port

    assert isinstance(broker, MosquittoBroker)
    dead = ("127.0.0.1", free_port())  # nothing listens there
    mqtt = MqttConfig(
        host=dead[0],
        port=dead[1],
        brokers=((broker.host, broker.port),),
        username=None,
        reconnect_min_s=0.5,
        reconnect_max_s=1,
    )
    fleet = Fleet(DEVICES[:1], workdir=tmp_path / "u", mqtt=mqtt, clock=SystemClock())
    try:
        fleet.start()
        unit = next(iter(fleet.units.values()))
        link = unit.daemon.link
        assert link is not None and link.connected.wait(30)
        assert link.failover is not None and link.failover.current == (broker.host, broker.port)
    finally:
        fleet.stop()

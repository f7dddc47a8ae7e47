"""Active and standby ingest on a broker without shared subscriptions (a NATS cluster):
two `gnahat-collector ingest` processes share one client id through a database lease;
the active one is killed mid-run, the standby takes over its session, nothing is lost
or doubled."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from collector.db import make_engine
from collector.models import Event
from device.clock import SystemClock
from device.config import MqttConfig
from simulator.fleet import Fleet
from simulator.nats import NatsCluster
from tests.e2e.conftest import DEVICES, IngestProcess

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

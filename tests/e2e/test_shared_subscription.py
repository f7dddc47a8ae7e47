"""Two `gnahat-collector ingest` processes share one subscription over PostgreSQL: every
event is stored exactly once, and killing one mid-run loses nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from collector.db import make_engine
from collector.models import Event
from device.clock import SystemClock
from device.config import MqttConfig
from simulator.broker import MosquittoBroker
from simulator.fleet import Fleet
from tests.e2e.conftest import DEVICES, IngestProcess


def ingest(url: str, broker: MosquittoBroker, client_id: str) -> IngestProcess:
    env = {
        "GNAHAT_DATABASE_URL": url,
        "GNAHAT_MQTT_URL": broker.url,
        "GNAHAT_MQTT_SHARE_GROUP": "gnahat",
        "GNAHAT_MQTT_CLIENT_ID": client_id,
    }
    return IngestProcess(env, {"subscribed": "subscribed to $share/gnahat/"})


def test_two_ingest_processes_share_and_survive_a_kill(
    broker: MosquittoBroker, pg: str, tmp_path: Path
) -> None:
    a = ingest(pg, broker, "collector-a")
    b = ingest(pg, broker, "collector-b")
    fleet = None
    try:
        assert a.seen["subscribed"].wait(30), "".join(a.log)
        assert b.seen["subscribed"].wait(30), "".join(b.log)
        mqtt = MqttConfig(host=broker.host, port=broker.port, username=None, ack_timeout_s=2)
        fleet = Fleet(
            DEVICES, workdir=tmp_path / "units", mqtt=mqtt, clock=SystemClock(), cooldown_s=0
        )
        fleet.start()
        units = list(fleet.units.values())
        for i in range(600):
            assert units[i % len(units)].press(1 + i % 4)
            if i == 300:
                b.kill()  # one collector dies mid-run
        assert fleet.drain(120), fleet.totals()
        acknowledged = fleet.totals()["acknowledged"]
    finally:
        if fleet is not None:
            fleet.stop()
        a.stop()
        b.stop()
    engine = make_engine(pg)
    with engine.connect() as conn:
        rows = conn.execute(select(Event.device, Event.stream, Event.seq)).all()
        assert len(rows) == len(set(rows)) == acknowledged == 600
        per_device = dict(
            conn.execute(select(Event.device, func.count()).group_by(Event.device)).all()
        )
        assert per_device == dict.fromkeys(DEVICES, 120)
    engine.dispose()

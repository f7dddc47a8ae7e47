"""Active and standby ingest on a broker without shared subscriptions (a NATS cluster):
two `gnahat-collector ingest` processes share one client id through a database lease;
the active one is killed mid-run, the standby takes over its session, nothing is lost
or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.models import Event
from collector.registry import import_dir
from device.clock import SystemClock
from device.config import MqttConfig
from simulator.fleet import Fleet
from simulator.nats import NatsCluster

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ["am-er-avan-d01", "am-er-avan-d02", "am-lo-vanadzor-d01", "am-su-kapan-d01"]


class Standby:
    def __init__(self, url: str, cluster: NatsCluster, name: str) -> None:
        env = {
            **os.environ,
            "GNAHAT_DATABASE_URL": url,
            "GNAHAT_MQTT_URL": cluster.url,
            "GNAHAT_MQTT_PROTOCOL": "3.1.1",
            "GNAHAT_MQTT_CLIENT_ID": "collector-ingest",  # one session, taken in turn
            "GNAHAT_INGEST_STANDBY": "true",
            "GNAHAT_INGEST_LEASE_S": "3",
            "PYTHONUNBUFFERED": "1",
        }
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "ingest"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.active = threading.Event()
        self.subscribed = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "holding the ingest lease" in line:
                self.active.set()
            if "subscribed to gnahat/v1/dev/+/event" in line:
                self.subscribed.set()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    with session_factory(engine)() as s, s.begin():
        import_dir(s, SHIPPED, now=datetime(2026, 1, 1, tzinfo=UTC))
    engine.dispose()
    yield postgres_url


def test_the_standby_takes_over_when_the_active_ingest_dies(
    nats_cluster: NatsCluster, pg: str, tmp_path: Path
) -> None:
    a = Standby(pg, nats_cluster, "a")
    assert a.active.wait(60) and a.subscribed.wait(60), "".join(a.log)
    b = Standby(pg, nats_cluster, "b")
    fleet = None
    try:
        assert "standby ingest" in "".join(b.log) or b.proc.poll() is None
        host, port = nats_cluster.mqtt_endpoints[0]
        mqtt = MqttConfig(
            host=host,
            port=port,
            brokers=tuple(nats_cluster.mqtt_endpoints[1:]),
            username=None,
            ack_timeout_s=2,
        )
        fleet = Fleet(
            DEVICES, workdir=tmp_path / "units", mqtt=mqtt, clock=SystemClock(), cooldown_s=0
        )
        fleet.start()
        units = list(fleet.units.values())
        for i in range(400):
            assert units[i % len(units)].press(1 + i % 4)
            if i == 200:
                assert not b.active.is_set(), "".join(b.log)  # one active at a time
                a.kill()  # the active ingest dies mid-run
        assert b.active.wait(60), "".join(b.log)
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
        assert per_device == dict.fromkeys(DEVICES, 100)
    engine.dispose()

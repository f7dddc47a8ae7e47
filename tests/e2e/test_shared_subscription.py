"""Two `gnahat-collector ingest` processes share one subscription over PostgreSQL: every
event is stored exactly once, and killing one mid-run loses nothing."""

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
from simulator.broker import MosquittoBroker
from simulator.fleet import Fleet

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [
    "am-er-avan-d01",
    "am-er-avan-d02",
    "am-lo-vanadzor-d01",
    "am-sh-gyumri1-d01",
    "am-su-kapan-d01",
]


class IngestProcess:
    def __init__(self, url: str, broker: MosquittoBroker, client_id: str) -> None:
        env = {
            **os.environ,
            "GNAHAT_DATABASE_URL": url,
            "GNAHAT_MQTT_URL": broker.url,
            "GNAHAT_MQTT_SHARE_GROUP": "gnahat",
            "GNAHAT_MQTT_CLIENT_ID": client_id,
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "ingest"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.subscribed = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "subscribed to $share/gnahat/" in line:
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


def test_two_ingest_processes_share_and_survive_a_kill(
    broker: MosquittoBroker, pg: str, tmp_path: Path
) -> None:
    a = IngestProcess(pg, broker, "collector-a")
    b = IngestProcess(pg, broker, "collector-b")
    fleet = None
    try:
        assert a.subscribed.wait(30), "".join(a.log)
        assert b.subscribed.wait(30), "".join(b.log)
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

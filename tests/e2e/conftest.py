"""Whole-system fixtures: a collector ingesting from a real broker into a real database."""

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
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.registry import import_dir
from simulator.broker import MosquittoBroker


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with factory() as s, s.begin():
        import_dir(s, SHIPPED, now=datetime(2026, 1, 1, tzinfo=UTC))
    yield factory
    engine.dispose()


class CollectorHandle:
    def __init__(
        self, broker: MosquittoBroker, database_url: str, sessions: sessionmaker[Session]
    ) -> None:
        self.settings = Settings(
            database_url=database_url,
            mqtt_url=broker.url,
            mqtt_client_id="collector-e2e",
            ingest_batch_ms=20,
        )
        self.sessions = sessions
        self.ingest: Ingest | None = None

    def start(self) -> Ingest:
        self.ingest = Ingest(self.settings, Store(self.sessions), Metrics())
        self.ingest.start()
        assert self.ingest.wait_until_subscribed(20)
        return self.ingest

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None


@pytest.fixture
def collector(
    broker: MosquittoBroker, database_url: str, sessions: sessionmaker[Session]
) -> Iterator[CollectorHandle]:
    handle = CollectorHandle(broker, database_url, sessions)
    yield handle
    handle.stop()


ROOT = Path(__file__).resolve().parents[2]
#: Units of the demo registry in four centres, for fleets of a few units.
DEVICES = [
    "am-er-avan-d01",
    "am-er-avan-d02",
    "am-lo-vanadzor-d01",
    "am-sh-gyumri1-d01",
    "am-su-kapan-d01",
]


class IngestProcess:
    """A real ``gnahat-collector ingest`` process; ``seen[name]`` is set once its log has
    shown ``watch[name]``."""

    def __init__(self, env: dict[str, str], watch: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "ingest"],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.watch = watch
        self.seen = {name: threading.Event() for name in watch}
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            for name, text in self.watch.items():
                if text in line:
                    self.seen[name].set()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def registry_db(url: str) -> str:
    """The database at ``url`` migrated, with the demo registry, for collector processes."""
    migrate(url)
    engine = make_engine(url)
    with session_factory(engine)() as s, s.begin():
        import_dir(s, SHIPPED, now=datetime(2026, 1, 1, tzinfo=UTC))
    engine.dispose()
    return url


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    """PostgreSQL with the demo registry, for tests that run collector processes."""
    yield registry_db(postgres_url)

"""Whole-system fixtures: a collector ingesting from a real broker into a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.ingest import Ingest
from collector.metrics import Metrics
from collector.registry import import_dir
from collector.store import Store
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

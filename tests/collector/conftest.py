"""Collector fixtures: a migrated database with the demo registry, a Store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.registry import import_dir
from collector.store import Store
from tests.collector.helpers import T0


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with factory() as s, s.begin():
        import_dir(s, SHIPPED, now=T0)
    yield factory
    engine.dispose()


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> Store:
    return Store(sessions)

"""Collector fixtures: a migrated database with the demo registry, a Store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.registry import import_dir
from tests.collector.helpers import T0


@pytest.fixture
def sessions(
    database_url: str, db_templates: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """The test's database at head with the shipped registry: a copy of a template built
    once per test process (where it can be copied), else migrated and imported here."""
    copied = db_templates.prepare(database_url, T0, tmp_path_factory.getbasetemp())
    if not copied:
        migrate(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    if not copied:
        with factory() as s, s.begin():
            import_dir(s, SHIPPED, now=T0)
    yield factory
    engine.dispose()


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> Store:
    return Store(sessions)


@pytest.fixture
def make_ingest() -> Iterator[Callable[..., Ingest]]:
    """Ingest instances (not started) that are stopped at teardown even when a test fails,
    so no receiver process outlives its test."""
    made: list[Ingest] = []

    def make(settings: Settings, store: Store, metrics: Metrics | None = None) -> Ingest:
        ing = Ingest(settings, store, metrics or Metrics())
        made.append(ing)
        return ing

    yield make
    for ing in made:
        ing.stop()

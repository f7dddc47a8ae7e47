"""Shared fixtures: a real Mosquitto, real databases, gpiozero mock pins.

When ``CI`` is set, a missing broker or database fails the test instead of
skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from simulator.broker import MosquittoBroker, mosquitto_binary
from simulator.nats import NatsCluster, nats_binary

IN_CI = bool(os.environ.get("CI"))
# The alert engine and the webhook sender run in every `serve` by default, on the wall
# clock; an app a test builds would raise alerts about the test's own fixtures. Tests
# that exercise them build them (or turn them on) themselves.
os.environ.setdefault("GNAHAT_ALERTS_ENABLED", "false")
os.environ.setdefault("GNAHAT_WEBHOOKS_ENABLED", "false")
PG_URL_ENV = "GNAHAT_TEST_DATABASE_URL"


def missing(reason: str) -> None:
    """Skip locally; fail in CI, where every real part must be present."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def light_password_hashing() -> Iterator[None]:
    """argon2id with light parameters (1 pass over 1 MiB) in this test process: the
    default costs 0.2 CPU-s a hash, and the suite logs in and creates users hundreds of
    times. Still argon2id, still a real hash and verify; what the collector ships is
    held by ``tests/collector/test_dashboard.py`` (``DEFAULT_HASHER``), and processes
    the tests start (``collector serve``) hash at the defaults."""
    from argon2 import PasswordHasher, Type

    from collector.edge import users

    previous = users.use_hasher(
        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    )
    yield
    users.use_hasher(previous)


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[MosquittoBroker]]:
    """Build extra brokers (ACL/password variants); all are stopped at teardown."""
    if mosquitto_binary() is None:
        missing("mosquitto binary not found")
    started: list[MosquittoBroker] = []
    counter = iter(range(1000))

    class _Factory(MosquittoBroker):
        def __init__(self, workdir: Path | None = None, **kwargs: object) -> None:
            super().__init__(workdir or tmp_path / f"broker{next(counter)}", **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield _Factory
    for b in started:
        b.stop(kill=True)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server nodes on loopback: one cluster, JetStream R3, MQTT on each."""
    if nats_binary() is None:
        missing("nats-server binary not found (apt-get install nats-server)")
    cluster = NatsCluster(tmp_path / "nats")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def broker(broker_factory: type[MosquittoBroker]) -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto on a free loopback port, persistence on, big queues."""
    b = broker_factory()
    b.start()
    yield b
    b.stop(kill=True)


def _pg_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gnahat.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A private schema in the PostgreSQL named by GNAHAT_TEST_DATABASE_URL."""
    base = _pg_url()
    if base is None:
        missing(f"{PG_URL_ENV} is not set")
        raise AssertionError("unreachable")
    yield from _pg_schema(base)


def _pg_schema(base: str, templates: _Templates | None = None) -> Iterator[str]:
    """A database of its own for one test (``CREATE DATABASE``, ~50 ms), dropped after it;
    where the account may not create databases, a schema of its own in the given one.
    With ``templates``: created straight as a copy of the migrated template."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        tpl = None
        if templates is not None:  # the registry as of the collector tests' clock
            from tests.collector.helpers import T0

            tpl = templates.pg_template(base, T0)
        with admin.connect() as conn:
            copy = f' TEMPLATE "{tpl}"' if tpl else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        missing(f"PostgreSQL at {PG_URL_ENV} does not answer: {exc}")
    except sa.exc.ProgrammingError:  # no CREATEDB: a schema in the given database
        admin.dispose()
        yield from _pg_private_schema(base)
        return
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    if templates is not None and tpl is not None:
        templates.copied.add(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _pg_private_schema(base: str) -> Iterator[str]:
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


class _Templates:
    """Per test process: a database migrated to head with the shipped registry imported,
    built once and copied for each test that wants one (SQLite: the file, through
    SQLite's backup; PostgreSQL: ``CREATE DATABASE ... TEMPLATE``). Migrating and
    importing for every test cost about a CPU-second each on PostgreSQL."""

    def __init__(self) -> None:
        self.sqlite: Path | None = None
        self.pg: dict[str, str] = {}  # server URL (no database) -> template database name
        self.copied: set[str] = set()  # databases created as copies already

    @staticmethod
    def _fill(url: str, now: datetime) -> None:
        from collector.db import make_engine, migrate, session_factory
        from collector.demo_data import SHIPPED
        from collector.registry import import_dir

        migrate(url)
        engine = make_engine(url)
        with session_factory(engine)() as s, s.begin():
            import_dir(s, SHIPPED, now=now)
        engine.dispose()

    def prepare(self, url: str, now: datetime, workdir: Path) -> bool:
        """Make the (new, empty) database at ``url`` a copy of the template; False when
        it cannot be copied (then the caller migrates and imports itself)."""
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            import sqlite3

            target = Path(parsed.database or "")
            if not parsed.database or target.exists():
                return False
            if self.sqlite is None:
                tpl = workdir / f"template-{uuid.uuid4().hex[:8]}.db"
                self._fill(f"sqlite:///{tpl}", now)
                self.sqlite = tpl
            src, dst = sqlite3.connect(self.sqlite), sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            return True
        if url in self.copied:
            return True
        if "options" in parsed.query or not parsed.database:
            return False  # a private schema: no template for it
        tpl = self.pg_template(url, now)
        server = parsed.set(database="postgres").render_as_string(hide_password=False)
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}" TEMPLATE "{tpl}"'))
        finally:
            admin.dispose()
        return True

    def pg_template(self, url: str, now: datetime) -> str:
        """The template database on ``url``'s server, built at its first use."""
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        server = parsed.set(database="postgres").render_as_string(hide_password=False)
        tpl = self.pg.get(server)
        if tpl is None:
            tpl = f"tpl_{uuid.uuid4().hex[:12]}"
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{tpl}"'))
            finally:
                admin.dispose()
            self._fill(parsed.set(database=tpl).render_as_string(hide_password=False), now)
            self.pg[server] = tpl
        return tpl

    def drop(self) -> None:
        import sqlalchemy as sa

        for server, tpl in self.pg.items():
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{tpl}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates()
    yield templates
    templates.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every database test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gnahat.db'}"
        return
    base = _pg_url()
    if base is None:
        missing(f"{PG_URL_ENV} is not set")
        return
    # A test that takes the migrated database (``sessions``) gets its copy made at once.
    wants_copy = "sessions" in request.fixturenames
    yield from _pg_schema(base, request.getfixturevalue("db_templates") if wants_copy else None)


@pytest.fixture
def mock_factory() -> Iterator[object]:
    """gpiozero's MockFactory as the default pin factory, reset afterwards."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    saved = Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = saved


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium (the system's, not a downloaded one) driven by Playwright."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()

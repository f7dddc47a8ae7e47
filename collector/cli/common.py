"""What the commands share: a session factory, the schema check, the registry's codes,
the logger and a password read from stdin or asked."""

from __future__ import annotations

import logging
import sys
from typing import Any

from collector.config import Settings

log = logging.getLogger("gnahat.collector")


def _sessions(settings: Settings):  # type: ignore[no-untyped-def]
    from collector.db import make_engine, session_factory

    return session_factory(make_engine(settings.database_url))


def _check_schema(settings: Settings) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from collector.db import alembic_config, make_engine

    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    if current != head:
        raise SystemExit(
            f"database schema is at {current or 'nothing'}, code expects {head}: "
            "run `gnahat-collector migrate` first"
        )


def _registry_codes(sessions: Any) -> tuple[set[str], set[str]]:
    """Centres with a desk now, and services, as the registry holds them."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from collector.models import Assignment, Centre, Service

    now = datetime.now(UTC)
    with sessions() as s:
        centres = set(
            s.scalars(
                select(Centre.code)
                .join(Assignment, Assignment.centre_id == Centre.id)
                .where(
                    Assignment.valid_from <= now,
                    (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
                )
            )
        )
        services = set(s.scalars(select(Service.code)))
    return centres, services


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")

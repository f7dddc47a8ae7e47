"""What every table shares: the naming convention, UTC timestamps, the base class,
and the event flags with the SQL that reads them."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    MetaData,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def sqlite_time_text(value: datetime) -> str:
    """An aware time as SQLite keeps it: the text SQLAlchemy writes, UTC, microseconds
    always (``2026-11-20 05:01:00.000000``), so that text order is time order. The fast
    ingest path uses it directly (SQLAlchemy's own processor is several times slower)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Flag(enum.IntFlag):
    """Event flags (a bit set in ``events.flags``)."""

    BURST = 1
    """Part of an implausible burst: kept, left out of scores."""
    CLOCK_UNTRUSTED = 2
    """Unit clock unsynced and no exact correction: ``pressed_at`` is an estimate within
    ``pressed_lo .. pressed_hi`` (collector.intake.dating)."""
    CLOCK_CORRECTED = 4
    """``pressed_at`` derived from receive time and monotonic clocks."""
    UNKNOWN_BADGE = 8
    """The ``staff`` badge is not in the registry at press time."""
    DAY_UNCERTAIN = 16
    """An estimated press whose bounds do not lie in one business day (or have no lower
    bound): counted on the estimate's day, and said so."""
    ONLINE_SUSPECT = 32
    """An online rating that looks like ballot stuffing (more from one address or browser
    than a visitor gives, or a desk's code used far beyond its visits): kept, left out
    of scores."""
    ONLINE_UNVERIFIED = 64
    """An online rating with no proof that a visit happened (the desk's printed card
    alone, where ``GNAHAT_ONLINE_PROOF=open`` takes it): kept, left out of scores."""


EXCLUDED_FROM_SCORES = Flag.BURST | Flag.ONLINE_SUSPECT | Flag.ONLINE_UNVERIFIED
#: The predicate of the partial index on estimate-dated presses (literal, so that the
#: planner can match a query's condition to it).
UNCERTAIN_SQL = f"(flags & {int(Flag.DAY_UNCERTAIN)}) <> 0"
#: The follow-up answers among the events (a few per hundred ratings at most).
FACTORS_SQL = "type = 'factors'"
#: The stream of a desk's phone ratings (the collector allocates its seqs).
WEB_STREAM = "web"

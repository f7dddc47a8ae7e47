"""Database tables (SQLAlchemy 2). Alembic migrations in ``collector/migrations`` own the schema."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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


# ---------------------------------------------------------------- registry


class Centre(Base):
    __tablename__ = "centres"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_hy: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    marz: Mapped[str] = mapped_column(String(8))
    community: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300), default="")
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    hours: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Opening hours (:mod:`collector.hours`); empty: the usual office hours."""


class Service(Base):
    __tablename__ = "services"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_hy: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))


class Employee(Base):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[str] = mapped_column(String(200), default="")


class Badge(Base):
    __tablename__ = "badges"
    __table_args__ = (UniqueConstraint("badge", "valid_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    badge: Mapped[str] = mapped_column(String(32), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id"))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="buttons")
    scale: Mapped[int] = mapped_column(Integer, default=4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Assignment(Base):
    """Where a unit stands over time: centre, desk, default employee and service."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("device_id", "valid_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"))
    desk: Mapped[str] = mapped_column(String(32))
    default_employee_id: Mapped[int | None] = mapped_column(
        ForeignKey("employees.id"), nullable=True
    )
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Meta(Base):
    """Small key/value facts, e.g. ``registry_version`` (bumped by every registry edit)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


# ---------------------------------------------------------------- events


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("device", "stream", "seq", name="uq_events_key"),
        Index("ix_events_agg", "day", "centre_id", "employee_id", "service_id"),
        Index("ix_events_device_pressed", "device", "pressed_at"),
        # The follow-up answers by day (a rebuild's step reads only those), without
        # reading the week's ratings: a partial index holds only them.
        Index(
            "ix_events_factors_day",
            "day",
            postgresql_where=text(FACTORS_SQL),
            sqlite_where=text(FACTORS_SQL),
        ),
        # The few presses dated by estimate across days, by centre (the dashboard says
        # them on their day): a partial index holds only those.
        Index(
            "ix_events_uncertain",
            "centre_id",
            "day",
            postgresql_where=text(UNCERTAIN_SQL),
            sqlite_where=text(UNCERTAIN_SQL),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scale: Mapped[int | None] = mapped_column(Integer, nullable=True)
    staff: Mapped[str | None] = mapped_column(String(32), nullable=True)
    device_at: Mapped[str] = mapped_column(String(40))
    clock_synced: Mapped[bool] = mapped_column(Boolean)
    boot: Mapped[str] = mapped_column(String(64))
    mono_ms: Mapped[int] = mapped_column(BigInteger)
    pressed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    clock_correction_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pressed_lo: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Earliest possible press time of an estimated press (``CLOCK_UNTRUSTED``)."""
    pressed_hi: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Latest possible press time of an estimated press."""
    day: Mapped[date] = mapped_column(Date)
    # Ids of registry rows, taken from the registry snapshot in the same transaction.
    # No foreign keys: the checks cost a third of PostgreSQL's ingest time (three
    # trigger lookups per row), and the registry never loses a row — triggers refuse
    # DELETE on centres, employees and services (migration 0018), so every id stays valid.
    centre_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    employee_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    service_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    channel: Mapped[str] = mapped_column(String(16), default="counter", server_default="counter")
    """``counter`` (a unit at the desk) or ``online`` (the visitor's phone)."""
    rating_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """``factors``: the seq of the rating they complete (same device and stream)."""
    answers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """``factors``: the answered factors."""
    chosen_service: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The service code the visitor chose, as sent (``service_id`` follows it when known)."""


class Quarantine(Base):
    """A refused message (or batch element), with its raw bytes, until re-processed."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stream: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer, default=1)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DeviceState(Base):
    """What the collector last heard from a unit (any device id, known or not)."""

    __tablename__ = "device_state"
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    firmware: Mapped[str | None] = mapped_column(String(64), nullable=True)
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    health_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StreamState(Base):
    """Per ``(device, stream)``: highest seq and stored count; the difference is the gap count."""

    __tablename__ = "stream_state"
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    stored: Mapped[int] = mapped_column(BigInteger, default=0)
    purged_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Events 1..purged_through were stored and then deleted by retention: any copy of
    them arriving again is a duplicate."""
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class PurgedRange(Base):
    """Seqs ``seq_from..seq_to`` of a stream were stored and then deleted by retention,
    beyond the gapless prefix ``StreamState.purged_through``: a copy arriving again is a
    duplicate, and they are no gap. Seqs that never came are in no range: they stay gaps,
    and are stored if they ever arrive."""

    __tablename__ = "purged_ranges"
    __table_args__ = (Index("ix_purged_ranges_stream", "device", "stream"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    seq_from: Mapped[int] = mapped_column(BigInteger)
    seq_to: Mapped[int] = mapped_column(BigInteger)


class DailyAggregate(Base):
    """Counts per score level for day × centre × employee × service (0 = none).

    Counts are the primitive: they add up across units, days and centres.
    ``changed_at`` marks a cell for (re-)forwarding.
    """

    __tablename__ = "daily_aggregates"
    __table_args__ = (
        # One centre's cells over a period (the dashboard, a manager's scores) without
        # reading every centre's: the primary key leads with the day.
        Index("ix_daily_aggregates_centre_day", "centre_id", "day"),
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    centre_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    employee_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scale: Mapped[int] = mapped_column(Integer, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)
    n4: Mapped[int] = mapped_column(Integer, default=0)
    n5: Mapped[int] = mapped_column(Integer, default=0)
    n: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class MonthlyAggregate(Base):
    """The daily cells summed by calendar month (``month``: its first day).

    Kept with the daily cells (every ingest batch adds to both; a rebuild recomputes
    the months it touched), so that a year's scores, rankings and breakdowns read about
    twelve rows per cell instead of ~250 (see :func:`collector.reading.series.period_cells`).
    """

    __tablename__ = "monthly_aggregates"
    __table_args__ = (Index("ix_monthly_aggregates_centre_month", "centre_id", "month"),)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    centre_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    employee_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scale: Mapped[int] = mapped_column(Integer, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)
    n4: Mapped[int] = mapped_column(Integer, default=0)
    n5: Mapped[int] = mapped_column(Integer, default=0)
    n: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """The newest ``changed_at`` of the month's daily cells (what the feed reports)."""


class ChannelAggregate(Base):
    """Ratings per channel (``counter`` or ``online``) for day x centre x service: each
    channel counted on its own; the daily cells hold them together."""

    __tablename__ = "channel_aggregates"
    __table_args__ = (Index("ix_channel_aggregates_centre_day", "centre_id", "day"),)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    centre_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    scale: Mapped[int] = mapped_column(Integer, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)
    n4: Mapped[int] = mapped_column(Integer, default=0)
    n5: Mapped[int] = mapped_column(Integer, default=0)
    n: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FactorAggregate(Base):
    """Answers to one assessment factor at one level, for day x centre x service x channel.

    ``level``: 1..scale for ``procedure``, ``conduct`` and ``competence``; for
    ``solved`` 1 = no, 2 = partly, 3 = yes (``scale`` 3)."""

    __tablename__ = "factor_aggregates"
    __table_args__ = (Index("ix_factor_aggregates_centre_day", "centre_id", "day"),)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    centre_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    factor: Mapped[str] = mapped_column(String(16), primary_key=True)
    scale: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OnlineSubmission(Base):
    """One online rating taken (see :mod:`collector.edge.online`): its visit's nonce (a
    replay is refused), the seqs it took on the desk's ``web`` stream, and daily-keyed
    hashes of the address and browser (never the values) for the abuse limits."""

    __tablename__ = "online_submissions"
    __table_args__ = (
        UniqueConstraint("device", "first_seq", name="uq_online_submissions_seq"),
        Index("ix_online_submissions_browser", "browser_key", "created_at"),
        Index("ix_online_submissions_address", "address_key", "created_at"),
        Index("ix_online_submissions_device", "device", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    address_key: Mapped[str] = mapped_column(String(32))
    browser_key: Mapped[str] = mapped_column(String(32))
    flags: Mapped[int] = mapped_column(Integer, default=0)
    proof: Mapped[str] = mapped_column(String(16), default="card")
    """What showed that a visit happened: ``desk_code`` (the code on the desk's screen),
    ``window`` (a visit window's code from the queue system), ``card`` (none)."""


class OnlineWindow(Base):
    """A visit window at a desk, opened by a queue system (or a manager) calling the
    next visitor; its one-time ``code`` is the visitor's proof of the visit."""

    __tablename__ = "online_windows"
    __table_args__ = (Index("ix_online_windows_device", "device", "opened_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closes_at: Mapped[datetime] = mapped_column(UTCDateTime())
    code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    armed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class OnlineCodeFailure(Base):
    """A wrong visit code given on a desk's phone page (daily-keyed address hash only):
    too many from one address in an hour and it may try no more codes for a while."""

    __tablename__ = "online_code_failures"
    __table_args__ = (Index("ix_online_code_failures_address", "address_key", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64))
    address_key: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class HourlyCount(Base):
    """Counted ratings of a centre by local day and UTC hour of the press.

    What the dashboard's hour x weekday picture reads (shifted to local hours by the
    zone's offset on each day), so that no page groups raw events; kept like the daily
    cells (ingest adds, a rebuild recomputes, retention keeps them).
    """

    __tablename__ = "hourly_counts"
    centre_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    utc_hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class ForwardBatch(Base):
    """One push to the M&E IS: the dataValueSet of a centre for a day (the outbox).

    ``batch_key`` (``CENTRE/yyyyMMdd``) is stable; ``version`` goes up whenever the
    counts behind it change, and ``send_key`` (the ``Idempotency-Key``) is kept across
    retries of one version. State: ``pending`` (due at ``next_attempt_at``), ``sent``,
    ``locked`` (the period is closed in the M&E IS) or ``parked`` (an unusable answer,
    or a batch the mapping cannot express); ``problem`` classifies the last failure
    (link, server, auth, mapping, not_open, locked, unmapped, answer) and ``last_error``
    says it in words. ``remote`` is what the M&E IS holds of the batch as far as we know
    (confirmed values, and keys sent without confirmation), so that only changes are sent
    and a value we no longer hold is deleted there; ``full_send`` asks for every value
    (the daily re-send).
    """

    __tablename__ = "forward_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_key: Mapped[str] = mapped_column(String(64), unique=True)
    day: Mapped[date] = mapped_column(Date)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    send_key: Mapped[str] = mapped_column(String(100))
    payload: Mapped[Any] = mapped_column(JSON)
    payload_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    warning: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    sent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    problem: Mapped[str | None] = mapped_column(String(16), nullable=True)
    remote: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    full_send: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxRow:
    """The columns every outbox of :mod:`collector.outbound.outbox` keeps (webhooks, alert notices,
    digests): a key, a version whose ``send_key`` is its idempotency key, the payload and
    its hash, the state and the retry bookkeeping."""

    batch_key: Mapped[str] = mapped_column(String(100), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    send_key: Mapped[str] = mapped_column(String(120))
    payload: Mapped[Any] = mapped_column(JSON)
    payload_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Webhook(Base):
    """A receiver that wants a push when a day's aggregates change (analysts' systems)."""

    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(100))
    """The signing secret (Standard Webhooks ``whsec_...``); shown once at creation."""
    centres: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Centre codes (comma-separated) it is about; empty: every centre."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(OutboxRow, Base):
    """The outbox of webhooks: one row per (webhook, centre, day), versioned like
    :class:`ForwardBatch` (``send_key`` is the ``webhook-id`` header of a version)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)


class AlertRule(Base):
    """A rule's parameters: the default (``centre_id`` null) or one centre's override.
    Rules without a row use the defaults in :mod:`collector.outbound.alerts`."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("kind", "centre_id", name="uq_alert_rules_kind_centre"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    centre_id: Mapped[int | None] = mapped_column(ForeignKey("centres.id"), nullable=True)
    params: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Alert(Base):
    """A condition worth a person's attention: ``open`` while it holds, ``acknowledged``
    once someone said they are on it (with a comment), ``closed`` when it cleared."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_kind_subject", "kind", "subject"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(120))
    centre_id: Mapped[int | None] = mapped_column(ForeignKey("centres.id"), nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[Any] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    ack_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    notices: Mapped[int] = mapped_column(Integer, default=0)
    next_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AlertRecipient(Base):
    """Who hears of alerts: an email address or a webhook URL, for some centres (or all)
    from a severity up, in Armenian or English."""

    __tablename__ = "alert_recipients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))  # "email" or "webhook"
    address: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lang: Mapped[str] = mapped_column(String(8))
    centres: Mapped[str | None] = mapped_column(Text, nullable=True)
    min_severity: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """``daily`` or ``weekly``: a digest of the period by email; empty: none."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertNotification(OutboxRow, Base):
    """The outbox of alert notices: one row per (alert, recipient, notice)."""

    __tablename__ = "alert_notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    recipient_id: Mapped[int] = mapped_column(ForeignKey("alert_recipients.id"))


class ReportDelivery(OutboxRow, Base):
    """The outbox of scheduled digests: one row per (recipient, period)."""

    __tablename__ = "report_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("alert_recipients.id"))


# ---------------------------------------------------------------- access


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    centres: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A manager's centres (codes, comma-separated); other roles see every centre."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class User(Base):
    """A person who logs in to the dashboard; the password is an argon2 hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    centres: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A manager's centres (codes, comma-separated)."""
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebSession(Base):
    """A dashboard login, kept on the server: the cookie holds only a random id (its
    SHA-256 is the key here), so a session can be listed and ended at once."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the random id in the cookie."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    address: Mapped[str] = mapped_column(String(64), default="")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_why: Mapped[str | None] = mapped_column(String(32), nullable=True)


class LoginFailure(Base):
    """Failed logins, for the rate limit (per username and per address)."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DayNote(Base):
    """A manager's note on a centre's day (an outage, a queue overflow), shown with it."""

    __tablename__ = "day_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"), index=True)
    day: Mapped[date] = mapped_column(Date)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

"""Events and what is derived from them: quarantine, unit and stream state, purged
ranges, the aggregate cells (daily, monthly, channel, factor, hourly) and the online
channel's submissions, windows and code failures."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from collector.models.base import FACTORS_SQL, UNCERTAIN_SQL, Base, BigId, UTCDateTime

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
    clock_boot: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The boot whose clock zero is kept (see :class:`collector.intake.dating.ClockZero`)."""
    clock_zero_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The lowest (receipt − monotonic send time) heard from that boot, epoch ms."""
    clock_heard_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """When that lowest value was last heard (epoch ms): older than an hour, any new one
    of the boot replaces it (a unit's crystal drifts)."""


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
    __table_args__ = (
        Index("ix_channel_aggregates_centre_day", "centre_id", "day"),
        Index(
            "ix_channel_aggregates_online_day",
            "day",
            postgresql_where=text("channel = 'online'"),
            sqlite_where=text("channel = 'online'"),
        ),
    )
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

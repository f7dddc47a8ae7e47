"""What goes out: forwarding batches, the outbox row shape, webhooks, alert rules,
alerts, recipients, notices and report deliveries."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from collector.models.base import Base, UTCDateTime


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

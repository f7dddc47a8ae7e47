"""Database tables (SQLAlchemy 2). Alembic migrations in ``collector/migrations`` own the schema.

By part: :mod:`~collector.models.base` (shared types and flags),
:mod:`~collector.models.registry`, :mod:`~collector.models.events` (and what is derived
from them), :mod:`~collector.models.outbound`, :mod:`~collector.models.access`. Every name
is re-exported here, and importing this package registers every table on ``Base``.
"""

from __future__ import annotations

from collector.models.access import (
    Answer,
    ApiToken,
    AuditLog,
    DayNote,
    LoginFailure,
    User,
    WebSession,
)
from collector.models.base import (
    EXCLUDED_FROM_SCORES,
    FACTORS_SQL,
    NAMING,
    UNCERTAIN_SQL,
    WEB_STREAM,
    Base,
    BigId,
    Flag,
    UTCDateTime,
    sqlite_time_text,
)
from collector.models.events import (
    ChannelAggregate,
    DailyAggregate,
    DeviceState,
    Event,
    FactorAggregate,
    HourlyCount,
    MonthlyAggregate,
    OnlineCodeFailure,
    OnlineSubmission,
    OnlineWindow,
    PurgedRange,
    Quarantine,
    StreamState,
)
from collector.models.outbound import (
    Alert,
    AlertNotification,
    AlertRecipient,
    AlertRule,
    ForwardBatch,
    OutboxRow,
    ReportDelivery,
    Webhook,
    WebhookDelivery,
)
from collector.models.registry import Assignment, Badge, Centre, Device, Employee, Meta, Service

__all__ = [
    "EXCLUDED_FROM_SCORES",
    "FACTORS_SQL",
    "NAMING",
    "UNCERTAIN_SQL",
    "WEB_STREAM",
    "Alert",
    "AlertNotification",
    "AlertRecipient",
    "AlertRule",
    "Answer",
    "ApiToken",
    "Assignment",
    "AuditLog",
    "Badge",
    "Base",
    "BigId",
    "Centre",
    "ChannelAggregate",
    "DailyAggregate",
    "DayNote",
    "Device",
    "DeviceState",
    "Employee",
    "Event",
    "FactorAggregate",
    "Flag",
    "ForwardBatch",
    "HourlyCount",
    "LoginFailure",
    "Meta",
    "MonthlyAggregate",
    "OnlineCodeFailure",
    "OnlineSubmission",
    "OnlineWindow",
    "OutboxRow",
    "PurgedRange",
    "Quarantine",
    "ReportDelivery",
    "Service",
    "StreamState",
    "UTCDateTime",
    "User",
    "WebSession",
    "Webhook",
    "WebhookDelivery",
    "sqlite_time_text",
]

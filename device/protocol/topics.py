"""Topics: one per unit and kind (events, acks, status, health, commands)."""

from __future__ import annotations

import enum
from typing import Final

from device.protocol.common import DEVICE_ID_RE, TOKEN_RE, TOPIC_ROOT, ErrorCode, ProtocolError

# --------------------------------------------------------------------------- topics


class TopicKind(enum.StrEnum):
    EVENT = "event"
    ACK = "ack"
    STATUS = "status"
    HEALTH = "health"
    CMD = "cmd"


#: (kind, direction, QoS, retain) for every topic; docs/protocol.md is tested against it.
TOPIC_TABLE: Final[dict[TopicKind, tuple[str, int, bool]]] = {
    TopicKind.EVENT: ("device → collector", 1, False),
    TopicKind.ACK: ("collector → device", 1, False),
    TopicKind.STATUS: ("device → all", 1, True),
    TopicKind.HEALTH: ("device → collector", 0, False),
    TopicKind.CMD: ("collector → device", 1, False),
}


def validate_device_id(device: str, *, field_name: str = "device") -> str:
    if not isinstance(device, str):
        raise ProtocolError(ErrorCode.WRONG_TYPE, "device id must be a string", field=field_name)
    if not DEVICE_ID_RE.match(device):
        raise ProtocolError(
            ErrorCode.BAD_DEVICE_ID,
            f"{device!r} is not a device id (lower-case letters, digits and '-', 1-64 chars)",
            field=field_name,
        )
    return device


def topic(device: str, kind: TopicKind | str) -> str:
    """The topic of ``kind`` for ``device``: ``gnahat/v1/dev/{device}/{kind}``."""
    validate_device_id(device)
    return f"{TOPIC_ROOT}/dev/{device}/{TopicKind(kind).value}"


def event_topic(device: str) -> str:
    return topic(device, TopicKind.EVENT)


def ack_topic(device: str) -> str:
    return topic(device, TopicKind.ACK)


def status_topic(device: str) -> str:
    return topic(device, TopicKind.STATUS)


def health_topic(device: str) -> str:
    return topic(device, TopicKind.HEALTH)


def cmd_topic(device: str) -> str:
    return topic(device, TopicKind.CMD)


def subscription(kind: TopicKind | str, *, share_group: str | None = None) -> str:
    """Wildcard subscription for every device's ``kind`` topic, optionally shared."""
    base = f"{TOPIC_ROOT}/dev/+/{TopicKind(kind).value}"
    if share_group:
        if not TOKEN_RE.match(share_group):
            raise ValueError(f"bad shared subscription group {share_group!r}")
        return f"$share/{share_group}/{base}"
    return base


def parse_topic(value: str) -> tuple[str, TopicKind]:
    """Split a topic into ``(device, kind)``; raises ``ProtocolError(BAD_TOPIC)``."""
    parts = value.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[2] != "dev":
        raise ProtocolError(ErrorCode.BAD_TOPIC, f"{value!r} is not a gnahat/v1 device topic")
    try:
        kind = TopicKind(parts[4])
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_TOPIC, f"unknown topic kind {parts[4]!r}") from None
    try:
        device = validate_device_id(parts[3])
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.BAD_TOPIC, exc.message) from None
    return device, kind

"""A unit's presence (retained status) and its health report."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from device.protocol.common import (
    MAX_EVENT_BYTES,
    PROTOCOL_VERSION,
    TOKEN_RE,
    ErrorCode,
    ProtocolError,
    _bool,
    _dumps,
    _int,
    _load_json,
    _str,
    parse_timestamp,
)
from device.protocol.topics import validate_device_id

# --------------------------------------------------------------------------- status, health, cmd


class Presence(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def encode_status(state: Presence, **info: Any) -> bytes:
    """Retained presence: ``{"v": 1, "state": "online", ...}``; ``offline`` is the Will."""
    return _dumps({"v": PROTOCOL_VERSION, "state": Presence(state).value, **info})


def decode_status(payload: bytes) -> tuple[Presence, dict[str, Any]]:
    obj = _load_json(payload, limit=MAX_EVENT_BYTES)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "a status is a JSON object")
    state = _str(obj, "state")
    try:
        presence = Presence(state)
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_VALUE, f"unknown state {state!r}", field="state"
        ) from None
    return presence, {k: v for k, v in obj.items() if k not in ("v", "state")}


@dataclass(frozen=True, slots=True)
class Health:
    """Heartbeat of a unit (QoS 0); unknown fields are kept in ``extra``."""

    device: str
    at: str
    queue_depth: int
    oldest_unacked_s: float | None
    uptime_s: float
    firmware: str
    clock_synced: bool
    disk_free_mb: float | None = None
    cpu_temp_c: float | None = None
    suppressed_presses: int = 0
    stream: str | None = None
    last_seq: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        )
        out["v"] = PROTOCOL_VERSION
        return out


_HEALTH_NUMBERS: Final = ("oldest_unacked_s", "uptime_s", "disk_free_mb", "cpu_temp_c")


def encode_health(health: Health) -> bytes:
    return _dumps(health.to_dict())


def decode_health(payload: bytes, *, topic_device: str | None = None) -> Health:
    obj = _load_json(payload, limit=MAX_EVENT_BYTES)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "a health report is a JSON object")
    device = validate_device_id(_str(obj, "device"))
    if topic_device is not None and device != topic_device:
        raise ProtocolError(
            ErrorCode.DEVICE_MISMATCH,
            f"payload device {device!r} differs from topic device {topic_device!r}",
            field="device",
        )
    at = _str(obj, "at")
    parse_timestamp(at)
    numbers: dict[str, float | None] = {}
    for name in _HEALTH_NUMBERS:
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ProtocolError(ErrorCode.WRONG_TYPE, "must be a number or null", field=name)
        numbers[name] = None if value is None else float(value)
    uptime = numbers["uptime_s"]
    if uptime is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "required field is missing", field="uptime_s")
    last_seq = obj.get("last_seq")
    if last_seq is not None:
        last_seq = _int(obj, "last_seq", minimum=0)
    stream = obj.get("stream")
    if stream is not None:
        stream = _str(obj, "stream", pattern=TOKEN_RE)
    known = {f.name for f in dataclasses.fields(Health)} | {"v"}
    return Health(
        device=device,
        at=at,
        queue_depth=_int(obj, "queue_depth", minimum=0),
        oldest_unacked_s=numbers["oldest_unacked_s"],
        uptime_s=uptime,
        firmware=_str(obj, "firmware"),
        clock_synced=_bool(obj, "clock_synced"),
        disk_free_mb=numbers["disk_free_mb"],
        cpu_temp_c=numbers["cpu_temp_c"],
        suppressed_presses=_int(obj, "suppressed_presses", minimum=0)
        if "suppressed_presses" in obj
        else 0,
        stream=stream,
        last_seq=last_seq,
        extra={k: v for k, v in obj.items() if k not in known},
    )

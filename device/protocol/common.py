"""What every message of the protocol shares: its version and limits, the error
codes of a refusal, and the checks of JSON values and timestamps."""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "gnahat/v1"

#: Largest encoded single event, in bytes.
MAX_EVENT_BYTES: Final = 2048
#: Largest number of events in one batch array.
MAX_BATCH_EVENTS: Final = 256
#: Largest whole ``event`` payload: a full batch of maximal events plus separators.
MAX_PAYLOAD_BYTES: Final = MAX_BATCH_EVENTS * (MAX_EVENT_BYTES + 1) + 2
#: Rating scales a unit may have.
SCALES: Final = frozenset({3, 4, 5})
#: Largest sequence number (JSON-safe integer).
MAX_SEQ: Final = 2**53 - 1
#: Largest monotonic clock reading in ms (JSON-safe; about 285 000 years of uptime).
MAX_MONO_MS: Final = 2**53 - 1
#: Longest ``at`` timestamp string (ISO 8601 with offset and microseconds is 32).
MAX_TIMESTAMP_CHARS: Final = 40
#: Integers anywhere in a payload (also in unknown fields) fit a signed 64-bit column.
MAX_ABS_INT: Final = 2**63 - 1
#: Largest whole MQTT packet the broker should accept: the largest ``event`` payload
#: plus the fixed header, topic and properties (generously rounded up).
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + 1024

DEVICE_ID_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BADGE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ErrorCode(enum.StrEnum):
    """Why a payload or topic was refused. Used as the quarantine reason."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    OVERSIZE = "oversize"
    BATCH_TOO_LONG = "batch_too_long"
    BATCH_EMPTY = "batch_empty"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    BAD_SCALE = "bad_scale"
    BAD_SEQ = "bad_seq"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_DEVICE_ID = "bad_device_id"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_TOPIC = "bad_topic"


class ProtocolError(ValueError):
    """A topic or payload that does not follow protocol v1."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None) -> None:
        self.code = code
        self.field = field
        self.message = message
        where = f" (field {field!r})" if field else ""
        super().__init__(f"{code.value}{where}: {message}")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _require(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "required field is missing", field=name)
    return obj[name]


def _int(
    obj: Mapping[str, Any], name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = _require(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            ErrorCode.WRONG_TYPE, f"must be an integer, got {type(value).__name__}", field=name
        )
    code = ErrorCode.BAD_SEQ if name == "seq" else ErrorCode.BAD_VALUE
    if minimum is not None and value < minimum:
        raise ProtocolError(code, f"must be >= {minimum}, got {value}", field=name)
    if maximum is not None and value > maximum:
        raise ProtocolError(code, f"must be <= {maximum}, got {value}", field=name)
    return value


def _str(obj: Mapping[str, Any], name: str, *, pattern: re.Pattern[str] | None = None) -> str:
    value = _require(obj, name)
    if not isinstance(value, str):
        raise ProtocolError(
            ErrorCode.WRONG_TYPE, f"must be a string, got {type(value).__name__}", field=name
        )
    if pattern is not None and not pattern.match(value):
        raise ProtocolError(ErrorCode.BAD_VALUE, f"{value!r} is not well-formed", field=name)
    return value


def _bool(obj: Mapping[str, Any], name: str) -> bool:
    value = _require(obj, name)
    if not isinstance(value, bool):
        raise ProtocolError(
            ErrorCode.WRONG_TYPE, f"must be true or false, got {type(value).__name__}", field=name
        )
    return value


def parse_timestamp(value: str, *, field_name: str = "at") -> datetime:
    """Parse ISO 8601 with a UTC offset; a naive, over-long or unrepresentable time is refused.

    The instant must exist in UTC as well (``0001-01-01T00:00+04:00`` does not), so that
    every later step can convert it without overflow.
    """
    if len(value) > MAX_TIMESTAMP_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_TIMESTAMP,
            f"timestamp is {len(value)} characters, limit {MAX_TIMESTAMP_CHARS}",
            field=field_name,
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_TIMESTAMP, f"{value!r} is not ISO 8601", field=field_name
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ProtocolError(
            ErrorCode.BAD_TIMESTAMP, f"{value!r} has no UTC offset", field=field_name
        )
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise ProtocolError(
            ErrorCode.BAD_TIMESTAMP,
            f"{value!r} lies outside the representable range",
            field=field_name,
        ) from None
    return parsed


_BAD_CHARS: Final = re.compile("[\x00\ud800-\udfff]")


def _check_values(value: Any, where: str = "") -> None:
    """Refuse what JSON text can carry but no database column can hold.

    Non-finite numbers (``1e400`` reads as infinity), integers beyond 64 bits, NUL and
    lone surrogates, in values and keys alike, at any depth.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _BAD_CHARS.search(item):
                raise ProtocolError(
                    ErrorCode.BAD_VALUE,
                    "text holds a NUL or a lone surrogate",
                    field=path or None,
                )
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_ABS_INT <= item <= MAX_ABS_INT:
                raise ProtocolError(
                    ErrorCode.BAD_VALUE, "integer beyond 64 bits", field=path or None
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ProtocolError(ErrorCode.BAD_VALUE, "number is not finite", field=path or None)
        elif isinstance(item, dict):
            for k, v in item.items():
                sub = f"{path}.{k}" if path else str(k)
                stack.append((k, sub))
                stack.append((v, sub))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def _load_json(payload: bytes, *, limit: int, check: bool = True) -> Any:
    if len(payload) > limit:
        raise ProtocolError(ErrorCode.OVERSIZE, f"payload is {len(payload)} bytes, limit {limit}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)  # NaN/Infinity read as floats, refused by the check
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.NOT_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ProtocolError(ErrorCode.NOT_JSON, "JSON nested too deeply") from None
    if check:
        _check_values(obj)
    return obj

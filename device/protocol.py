"""Gnahat wire protocol v1: topics and payloads shared by units and the collector.

Standard library only: the collector imports this module without pulling in any
device dependency. Nothing else in the project formats a topic or a payload.

Every decoding function raises :class:`ProtocolError` (a ``ValueError``) with a
machine-readable :class:`ErrorCode`, the offending field and a human message.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- events


class EventType(enum.StrEnum):
    RATING = "rating"
    STAFF_LOGIN = "staff_login"
    STAFF_LOGOUT = "staff_logout"
    FACTORS = "factors"
    """The assessment factors of a visit, answered after its ``rating`` (linked by
    ``rating_seq`` in the same stream)."""


#: Assessment factors on the rating's scale (1 worst .. scale best).
SCALED_FACTORS: Final = ("procedure", "conduct", "competence")
#: Whether the visitor's issue was solved.
SOLVED_ANSWERS: Final = ("no", "partly", "yes")
FACTORS: Final = ("procedure", "solved", "conduct", "competence")
#: Where a rating was given: at the counter (a button unit or kiosk) or online.
CHANNELS: Final = ("counter", "online")
SERVICE_RE: Final = re.compile(r"^[A-Z0-9_]{1,32}$")


EventKey = tuple[str, str, int]
"""Identity of an event: ``(device, stream, seq)``."""

_COMMON_FIELDS: Final = (
    "v",
    "type",
    "device",
    "stream",
    "seq",
    "at",
    "clock_synced",
    "boot",
    "mono_ms",
    "sent_mono_ms",
    "sent_boot",
)
_TYPE_FIELDS: Final[dict[EventType, tuple[str, ...]]] = {
    EventType.RATING: ("score", "scale", "staff", "service", "channel"),
    EventType.STAFF_LOGIN: ("staff",),
    EventType.STAFF_LOGOUT: ("staff",),
    EventType.FACTORS: ("rating_seq", "scale", "staff", "service", "channel", *FACTORS),
}
_KNOWN_FIELDS: Final = frozenset(_COMMON_FIELDS) | {
    name for names in _TYPE_FIELDS.values() for name in names
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as it travels on the wire.

    ``score``/``scale`` are set for ``rating`` only; ``staff`` is the badge id of
    the staff member logged in (``rating``) or logging in/out (``staff_*``).
    ``extra`` keeps unknown fields so that they survive a round trip.
    """

    type: EventType
    device: str
    stream: str
    seq: int
    at: str
    clock_synced: bool
    boot: str
    mono_ms: int
    sent_mono_ms: int | None = None
    sent_boot: str | None = None
    score: int | None = None
    scale: int | None = None
    staff: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION
    rating_seq: int | None = None
    """``factors``: the ``seq`` of the rating (same device and stream) they complete."""
    answers: Mapping[str, Any] = field(default_factory=dict)
    """``factors``: the answered factors (``procedure``/``conduct``/``competence`` on the
    scale, ``solved`` one of :data:`SOLVED_ANSWERS`); skipped ones are absent."""
    service: str | None = None
    """``rating``/``factors``: a service code the visitor chose, if any."""
    channel: str | None = None
    """``rating``/``factors``: :data:`CHANNELS`; absent means ``counter``."""

    @property
    def key(self) -> EventKey:
        return (self.device, self.stream, self.seq)

    @property
    def at_datetime(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def stamped(self, *, sent_mono_ms: int, sent_boot: str) -> Event:
        """A copy stamped for publishing now (monotonic clock and boot of the sender)."""
        return dataclasses.replace(self, sent_mono_ms=sent_mono_ms, sent_boot=sent_boot)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            v=self.v,
            type=self.type.value,
            device=self.device,
            stream=self.stream,
            seq=self.seq,
            at=self.at,
            clock_synced=self.clock_synced,
            boot=self.boot,
            mono_ms=self.mono_ms,
        )
        if self.sent_mono_ms is not None:
            out["sent_mono_ms"] = self.sent_mono_ms
        if self.sent_boot is not None:
            out["sent_boot"] = self.sent_boot
        if self.type is EventType.RATING:
            out["score"] = self.score
            out["scale"] = self.scale
            out["staff"] = self.staff
        elif self.type is EventType.FACTORS:
            out["rating_seq"] = self.rating_seq
            out["scale"] = self.scale
            out["staff"] = self.staff
            out.update(self.answers)
        else:
            out["staff"] = self.staff
        if self.service is not None:
            out["service"] = self.service
        if self.channel is not None:
            out["channel"] = self.channel
        return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_event(event: Event) -> bytes:
    """Encode one event as compact UTF-8 JSON; refuses an oversize event, and values the
    collector would refuse (so a unit never keeps an event nobody can store)."""
    obj = event.to_dict()
    _check_values(obj)
    data = _dumps(obj)
    if len(data) > MAX_EVENT_BYTES:
        raise ProtocolError(
            ErrorCode.OVERSIZE, f"event is {len(data)} bytes, limit {MAX_EVENT_BYTES}"
        )
    return data


def encode_batch(events: Sequence[Event]) -> bytes:
    """Encode 1..256 events as a JSON array."""
    if not events:
        raise ProtocolError(ErrorCode.BATCH_EMPTY, "a batch holds at least one event")
    if len(events) > MAX_BATCH_EVENTS:
        raise ProtocolError(
            ErrorCode.BATCH_TOO_LONG, f"{len(events)} events, limit {MAX_BATCH_EVENTS}"
        )
    return b"[" + b",".join(encode_event(e) for e in events) + b"]"


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


def _badge(obj: Mapping[str, Any], *, nullable: bool) -> str | None:
    value = _require(obj, "staff")
    if value is None:
        if nullable:
            return None
        raise ProtocolError(ErrorCode.BAD_VALUE, "a badge id is required here", field="staff")
    if not isinstance(value, str):
        raise ProtocolError(
            ErrorCode.WRONG_TYPE,
            f"must be a badge id string or null, got {type(value).__name__}",
            field="staff",
        )
    if not BADGE_RE.match(value):
        raise ProtocolError(ErrorCode.BAD_VALUE, f"{value!r} is not a badge id", field="staff")
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


def event_from_obj(obj: Any, *, topic_device: str | None = None) -> Event:
    """Validate one decoded JSON value as an event."""
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.NOT_OBJECT, f"an event is a JSON object, got {type(obj).__name__}"
        )
    version = _int(obj, "v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION})",
            field="v",
        )
    type_name = _str(obj, "type")
    try:
        etype = EventType(type_name)
    except ValueError:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown event type {type_name!r}", field="type"
        ) from None
    device = validate_device_id(_str(obj, "device"))
    if topic_device is not None and device != topic_device:
        raise ProtocolError(
            ErrorCode.DEVICE_MISMATCH,
            f"payload device {device!r} differs from topic device {topic_device!r}",
            field="device",
        )
    stream = _str(obj, "stream", pattern=TOKEN_RE)
    seq = _int(obj, "seq", minimum=1)
    if seq > MAX_SEQ:
        raise ProtocolError(ErrorCode.BAD_SEQ, f"must be <= {MAX_SEQ}", field="seq")
    at = _str(obj, "at")
    parse_timestamp(at)
    clock_synced = _bool(obj, "clock_synced")
    boot = _str(obj, "boot", pattern=TOKEN_RE)
    mono_ms = _int(obj, "mono_ms", minimum=0, maximum=MAX_MONO_MS)
    sent_mono_ms: int | None = None
    if obj.get("sent_mono_ms") is not None:
        sent_mono_ms = _int(obj, "sent_mono_ms", minimum=0, maximum=MAX_MONO_MS)
    sent_boot: str | None = None
    if obj.get("sent_boot") is not None:
        sent_boot = _str(obj, "sent_boot", pattern=TOKEN_RE)
    score = scale = rating_seq = None
    answers: dict[str, Any] = {}
    if etype is EventType.RATING:
        scale = _scale(obj)
        score = _int(obj, "score")
        if not 1 <= score <= scale:
            raise ProtocolError(
                ErrorCode.SCORE_OUT_OF_RANGE,
                f"score {score} is outside 1..{scale}",
                field="score",
            )
        staff = _badge(obj, nullable=True)
    elif etype is EventType.FACTORS:
        scale = _scale(obj)
        rating_seq = _int(obj, "rating_seq", minimum=1)
        if rating_seq >= seq:
            raise ProtocolError(
                ErrorCode.BAD_SEQ,
                f"rating_seq {rating_seq} must come before this event's seq {seq}",
                field="rating_seq",
            )
        answers = check_answers(obj, scale)
        staff = _badge(obj, nullable=True)
    else:
        staff = _badge(obj, nullable=etype is EventType.STAFF_LOGOUT)
    service = channel = None
    if etype in (EventType.RATING, EventType.FACTORS):
        if obj.get("service") is not None:
            service = _str(obj, "service", pattern=SERVICE_RE)
        if obj.get("channel") is not None:
            channel = _str(obj, "channel")
            if channel not in CHANNELS:
                raise ProtocolError(
                    ErrorCode.BAD_VALUE,
                    f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}",
                    field="channel",
                )
    extra = {k: v for k, v in obj.items() if k not in _KNOWN_FIELDS}
    if extra:
        # The known fields were checked above (types, patterns, ranges); unknown ones
        # are kept as they came, so they get the column-safety check here.
        _check_values(extra)
    return Event(
        type=etype,
        device=device,
        stream=stream,
        seq=seq,
        at=at,
        clock_synced=clock_synced,
        boot=boot,
        mono_ms=mono_ms,
        sent_mono_ms=sent_mono_ms,
        sent_boot=sent_boot,
        score=score,
        scale=scale,
        staff=staff,
        extra=extra,
        rating_seq=rating_seq,
        answers=answers,
        service=service,
        channel=channel,
    )


def _scale(obj: Mapping[str, Any]) -> int:
    scale = _int(obj, "scale")
    if scale not in SCALES:
        raise ProtocolError(
            ErrorCode.BAD_SCALE, f"scale must be one of 3, 4, 5, got {scale}", field="scale"
        )
    return scale


def check_answers(obj: Mapping[str, Any], scale: int) -> dict[str, Any]:
    """The answered factors of a ``factors`` event (at least one)."""
    out: dict[str, Any] = {}
    for name in SCALED_FACTORS:
        if obj.get(name) is not None:
            value = _int(obj, name)
            if not 1 <= value <= scale:
                raise ProtocolError(
                    ErrorCode.SCORE_OUT_OF_RANGE, f"{value} is outside 1..{scale}", field=name
                )
            out[name] = value
    if obj.get("solved") is not None:
        solved = _str(obj, "solved")
        if solved not in SOLVED_ANSWERS:
            raise ProtocolError(
                ErrorCode.BAD_VALUE,
                f"solved must be one of {', '.join(SOLVED_ANSWERS)}, got {solved!r}",
                field="solved",
            )
        out["solved"] = solved
    if not out:
        raise ProtocolError(
            ErrorCode.MISSING_FIELD,
            "a factors event answers at least one of " + ", ".join(FACTORS),
            field="solved",
        )
    return {name: out[name] for name in FACTORS if name in out}


#: Characters no payload string may hold: NUL (no text column stores it) and lone
#: UTF-16 surrogates (``"\\ud800"`` decodes, but is no character and cannot be encoded).
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


def decode_event(payload: bytes, *, topic_device: str | None = None) -> Event:
    """Decode a payload that must hold exactly one event object."""
    obj = _load_json(payload, limit=MAX_EVENT_BYTES)
    return event_from_obj(obj, topic_device=topic_device)


@dataclass(frozen=True, slots=True)
class ItemError:
    """One refused element of an otherwise well-formed payload."""

    index: int
    raw: bytes
    error: ProtocolError
    key: EventKey | None
    """``(device, stream, seq)`` when the element names them well enough to ack."""


@dataclass(frozen=True, slots=True)
class DecodedPayload:
    events: list[Event]
    errors: list[ItemError]
    is_batch: bool


def _element_bytes(item: Any) -> bytes:
    """One batch element re-encoded on its own (ASCII escapes where UTF-8 cannot hold it)."""
    try:
        return _dumps(item)
    except UnicodeEncodeError:  # a lone surrogate: keep it escaped, refused by the check
        return json.dumps(item, separators=(",", ":")).encode("ascii")


def _best_effort_key(obj: Any) -> EventKey | None:
    if not isinstance(obj, dict):
        return None
    device, stream, seq = obj.get("device"), obj.get("stream"), obj.get("seq")
    if (
        isinstance(device, str)
        and DEVICE_ID_RE.match(device)
        and isinstance(stream, str)
        and TOKEN_RE.match(stream)
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and 1 <= seq <= MAX_SEQ
    ):
        return (device, stream, seq)
    return None


def decode_payload(payload: bytes, *, topic_device: str | None = None) -> DecodedPayload:
    """Decode an ``event`` payload (one object or an array of them), element by element.

    A payload that cannot be read at all raises :class:`ProtocolError`. Otherwise
    each element is validated on its own: good events are returned in order and
    each bad one comes back as an :class:`ItemError` with its raw bytes.
    """
    obj = _load_json(payload, limit=MAX_PAYLOAD_BYTES, check=False)  # checked per element
    is_batch = isinstance(obj, list)
    if is_batch:
        if not obj:
            raise ProtocolError(ErrorCode.BATCH_EMPTY, "an event array holds at least one event")
        if len(obj) > MAX_BATCH_EVENTS:
            raise ProtocolError(
                ErrorCode.BATCH_TOO_LONG, f"{len(obj)} events, limit {MAX_BATCH_EVENTS}"
            )
        items: list[Any] = obj
    else:
        if len(payload) > MAX_EVENT_BYTES:
            raise ProtocolError(
                ErrorCode.OVERSIZE, f"event is {len(payload)} bytes, limit {MAX_EVENT_BYTES}"
            )
        items = [obj]
    events: list[Event] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        raw = _element_bytes(item) if is_batch else payload
        try:
            if len(raw) > MAX_EVENT_BYTES:
                raise ProtocolError(
                    ErrorCode.OVERSIZE, f"event is {len(raw)} bytes, limit {MAX_EVENT_BYTES}"
                )
            events.append(event_from_obj(item, topic_device=topic_device))
        except ProtocolError as exc:
            errors.append(ItemError(index, raw, exc, _best_effort_key(item)))
    return DecodedPayload(events, errors, is_batch)


#: An event's fields in order: a decoded event crosses between processes as a tuple
#: (cheap to pickle and rebuild; a dataclass is not).
EVENT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Event))
_EVENT_TYPES: Final = {t.value: t for t in EventType}


def event_as_tuple(event: Event) -> tuple[Any, ...]:
    values = [getattr(event, name) for name in EVENT_FIELDS]
    values[0] = event.type.value
    return tuple(values)


def event_from_tuple(values: Sequence[Any]) -> Event:
    """The event ``event_as_tuple`` gave, as this code decoded and validated it."""
    return Event(_EVENT_TYPES[values[0]], *values[1:])


def decode_events(payload: bytes, *, topic_device: str | None = None) -> list[Event]:
    """Strict decode: every element must be valid, else the first error is raised."""
    decoded = decode_payload(payload, topic_device=topic_device)
    if decoded.errors:
        raise decoded.errors[0].error
    return decoded.events


# --------------------------------------------------------------------------- ack


SeqRange = tuple[int, int]


def ranges_from_seqs(seqs: Iterable[int]) -> list[SeqRange]:
    """Collapse sequence numbers into sorted inclusive ranges: 1,2,3,5 → [(1,3),(5,5)]."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return [(a, b) for a, b in out]


@dataclass(frozen=True, slots=True)
class Ack:
    """Seq ranges of one stream that the collector has durably kept."""

    stream: str
    ranges: tuple[SeqRange, ...]

    def covers(self, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.ranges)

    def seqs(self) -> Iterable[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)


def encode_ack(ack: Ack) -> bytes:
    return _dumps({"stream": ack.stream, "ranges": [list(r) for r in ack.ranges]})


def decode_ack(payload: bytes) -> Ack:
    obj = _load_json(payload, limit=64 * 1024)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "an ack is a JSON object")
    stream = _str(obj, "stream", pattern=TOKEN_RE)
    raw_ranges = _require(obj, "ranges")
    if not isinstance(raw_ranges, list):
        raise ProtocolError(ErrorCode.WRONG_TYPE, "must be an array", field="ranges")
    ranges: list[SeqRange] = []
    for item in raw_ranges:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
        ):
            raise ProtocolError(ErrorCode.WRONG_TYPE, "each range is [from, to]", field="ranges")
        lo, hi = item
        if lo < 1 or hi < lo:
            raise ProtocolError(ErrorCode.BAD_SEQ, f"bad range [{lo}, {hi}]", field="ranges")
        ranges.append((lo, hi))
    return Ack(stream, tuple(ranges))


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


class Command(enum.StrEnum):
    IDENTIFY = "identify"
    RELOAD_CONFIG = "reload_config"


def encode_cmd(command: Command, **args: Any) -> bytes:
    return _dumps({"v": PROTOCOL_VERSION, "cmd": Command(command).value, **args})


def decode_cmd(payload: bytes) -> tuple[Command, dict[str, Any]]:
    obj = _load_json(payload, limit=MAX_EVENT_BYTES)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "a command is a JSON object")
    name = _str(obj, "cmd")
    try:
        command = Command(name)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_VALUE, f"unknown command {name!r}", field="cmd") from None
    return command, {k: v for k, v in obj.items() if k not in ("v", "cmd")}

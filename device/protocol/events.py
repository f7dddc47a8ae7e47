"""Events: a press, a login or logout and a heartbeat, one or a batch per message."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from device.protocol.common import (
    BADGE_RE,
    DEVICE_ID_RE,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MONO_MS,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    PROTOCOL_VERSION,
    SCALES,
    TOKEN_RE,
    ErrorCode,
    ProtocolError,
    _bool,
    _check_values,
    _dumps,
    _int,
    _load_json,
    _require,
    _str,
    parse_timestamp,
)
from device.protocol.topics import validate_device_id

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

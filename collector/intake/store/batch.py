"""What one batch carries: the messages received, and what became of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from device import protocol as p


class Reason:
    """Quarantine reasons beyond the protocol's own error codes."""

    UNKNOWN_DEVICE = "unknown_device"
    RETIRED_DEVICE = "retired_device"
    UNASSIGNED_DEVICE = "unassigned_device"
    INTERNAL_ERROR = "internal_error"
    """Processing this message or element raised an unexpected error (a defect of ours)."""
    REFUSED_BY_DATABASE = "refused_by_database"
    """The database refused the row (a value the contract let through but a column cannot hold)."""
    RESERVED_CHANNEL = "reserved_channel"
    """An event over MQTT on the phone channel's stream or with ``channel: online``: those
    are the collector's own (its phone page), never a unit's."""


#: Where a message came from: the broker (a unit), or the collector's own phone page.
ORIGIN_MQTT = "mqtt"
ORIGIN_ONLINE = "online"


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    received_at: datetime
    token: tuple[int, int] | None = None
    """The broker delivery to acknowledge after the commit (``None``: QoS 0, or none)."""
    flags: int = 0
    """Flags the collector itself sets on every event of this message (its own online
    channel marks suspected ballot stuffing); nothing from MQTT sets any."""
    origin: str = ORIGIN_MQTT
    """``online``: the collector's phone page wrote it (the only way onto the ``web``
    stream and ``channel: online``; it says nothing about the unit's own link)."""
    held_since: datetime | None = None
    """Received while ingest drained what the broker held after an absence: when that
    absence began (it may have waited in the broker since; its dating says so)."""
    decoded: p.DecodedPayload | None = None
    """The event payload as the receiver process decoded it for its topic's device;
    ``None``: the store decodes it (and reports what is wrong with it)."""


@dataclass
class BatchResult:
    acks: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    stored_keys: list[p.EventKey] = field(default_factory=list)
    quarantine_bytes_cut: int = 0

    def ack(self, key: p.EventKey) -> None:
        self.acks.setdefault((key[0], key[1]), set()).add(key[2])

    def ack_messages(self) -> list[tuple[str, bytes]]:
        out = []
        for (device, stream), seqs in sorted(self.acks.items()):
            ack = p.Ack(stream, tuple(p.ranges_from_seqs(seqs)))
            out.append((p.ack_topic(device), p.encode_ack(ack)))
        return out


@dataclass
class _Q:
    topic: str
    raw: bytes
    reason: str
    detail: str
    key: p.EventKey | None
    at: datetime


@dataclass
class _Pending:
    """A valid event of this batch, waiting to be dated and tied."""

    msg: Received
    event: p.Event
    raw: bytes

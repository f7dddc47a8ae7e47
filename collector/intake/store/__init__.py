"""Turn received MQTT messages into durable rows, in one transaction per batch.

This is the heart of ingest, free of MQTT: :meth:`Store.process` takes what the
consumer received and returns what to acknowledge. Every message ends up
stored, recognised as a duplicate, or quarantined with its raw bytes and reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from collector.intake.aggregates import RebuildReport, rebuild
from collector.intake.dating import ClockZero, better, heard
from collector.intake.store.aggregates import AggregateWriter
from collector.intake.store.batch import (
    _Q,
    ORIGIN_MQTT,
    ORIGIN_ONLINE,
    BatchResult,
    Reason,
    Received,
    _Pending,
)
from collector.intake.store.devices import DeviceStateWriter
from collector.intake.store.events import EVENT_COLUMNS, EventWriter
from collector.intake.store.quarantine import (
    QUARANTINE_RAW_MAX,
    QUARANTINE_TOPIC_MAX,
    QuarantineWriter,
)
from collector.models import WEB_STREAM
from collector.registry import Snapshot, registry_version
from device import protocol as p

__all__ = [
    "EVENT_COLUMNS",
    "ORIGIN_MQTT",
    "ORIGIN_ONLINE",
    "QUARANTINE_RAW_MAX",
    "QUARANTINE_TOPIC_MAX",
    "WEB_STREAM",
    "BatchResult",
    "Reason",
    "Received",
    "Store",
]

log = logging.getLogger(__name__)


def _note(
    clocks: dict[str, dict[str, ClockZero]],
    device: str,
    boot: object,
    mono_ms: object,
    msg: Received,
) -> None:
    """Keep what one message says of its boot's clock: the lowest zero per boot of a batch."""
    zero = heard(boot, mono_ms, msg.received_at)
    if zero is not None:
        boots = clocks.setdefault(device, {})
        boots[zero.boot] = better(boots.get(zero.boot), zero)


class Store(EventWriter, AggregateWriter, QuarantineWriter, DeviceStateWriter):
    """Writes batches; holds the registry snapshot and reloads it when it changes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        timezone: str = "Asia/Yerevan",
        burst_max_presses: int = 8,
        burst_window_s: int = 20,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.clock = clock  # stamps changed_at / resolved_at
        self.tz = ZoneInfo(timezone)
        self.burst_max = burst_max_presses
        self.burst_window = timedelta(seconds=burst_window_s)
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self.fence: Callable[[Session], None] | None = None
        """Run first in every commit's transaction (active/standby ingest: the lease is
        still ours); raising refuses the whole commit."""

    def snapshot(self, session: Session) -> Snapshot:
        version = registry_version(session)
        if self._snapshot is None or self._snapshot.version != version:
            self._snapshot = Snapshot(session)
        return self._snapshot

    # ------------------------------------------------------------ the batch

    def process(self, messages: Sequence[Received]) -> BatchResult:
        """Commit one batch; the caller publishes ``result.ack_messages()`` afterwards."""
        with self._lock, self.sessions() as session, session.begin():
            return self._process(session, messages)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction of the store's writer (under its lock): what else the caller
        writes in it commits with :meth:`process_in`'s rows, or neither does."""
        with self._lock, self.sessions() as session, session.begin():
            yield session

    def process_in(self, session: Session, messages: Sequence[Received]) -> BatchResult:
        """:meth:`process` inside a :meth:`transaction` of the caller's."""
        return self._process(session, messages)

    def _process(self, session: Session, messages: Sequence[Received]) -> BatchResult:
        if self.fence is not None:
            self.fence(session)
        result = BatchResult()
        snap = self.snapshot(session)
        rows: dict[p.EventKey, dict[str, Any]] = {}
        quarantine: list[_Q] = []
        states: dict[str, dict[str, Any]] = {}
        pending: list[_Pending] = []
        clocks: dict[str, dict[str, ClockZero]] = {}  # device → boot → its lowest clock zero

        for msg in messages:
            try:
                device, kind = p.parse_topic(msg.topic)
            except p.ProtocolError as exc:
                quarantine.append(
                    _Q(msg.topic, msg.payload, exc.code, exc.message, None, msg.received_at)
                )
                continue
            if msg.origin == ORIGIN_ONLINE:  # a phone: nothing heard from the unit itself
                st: dict[str, Any] = {}
            else:
                st = states.setdefault(device, {})
                st["last_seen"] = msg.received_at
            if kind is p.TopicKind.EVENT:
                self._events(msg, device, pending, quarantine, result, clocks)
            elif kind is p.TopicKind.STATUS:
                try:
                    presence, info = p.decode_status(msg.payload)
                except p.ProtocolError as exc:
                    quarantine.append(
                        _Q(msg.topic, msg.payload, exc.code, exc.message, None, msg.received_at)
                    )
                    continue
                st["online"] = presence is p.Presence.ONLINE
                st["status_at"] = msg.received_at
                if isinstance(info.get("firmware"), str):
                    st["firmware"] = info["firmware"][:64]
            elif kind is p.TopicKind.HEALTH:
                try:
                    health = p.decode_health(msg.payload, topic_device=device)
                except p.ProtocolError as exc:
                    quarantine.append(
                        _Q(msg.topic, msg.payload, exc.code, exc.message, None, msg.received_at)
                    )
                    continue
                st["health"] = health.to_dict()
                st["health_at"] = msg.received_at
                st["firmware"] = health.firmware[:64]
                _note(clocks, device, health.extra.get("boot"), health.extra.get("mono_ms"), msg)
            else:
                quarantine.append(
                    _Q(
                        msg.topic,
                        msg.payload,
                        p.ErrorCode.BAD_TOPIC,
                        f"the collector does not take {kind.value} messages",
                        None,
                        msg.received_at,
                    )
                )

        if pending:
            self._tie_events(session, snap, pending, rows, quarantine, result, clocks)
        if rows:
            self._store_events(session, list(rows.values()), result)
        if quarantine:
            self._store_quarantine(session, quarantine, result)
        for device, boots in clocks.items():
            kept = None
            for zero in sorted(boots.values(), key=lambda z: z.heard_ms):
                kept = better(kept, zero)
            if kept is not None and device in states:
                states[device].update(
                    clock_boot=kept.boot, clock_zero_ms=kept.zero_ms, clock_heard_ms=kept.heard_ms
                )
        if states:
            self._store_states(session, states)
        return result

    def _events(
        self,
        msg: Received,
        device: str,
        pending: list[_Pending],
        quarantine: list[_Q],
        result: BatchResult,
        clocks: dict[str, dict[str, ClockZero]],
    ) -> None:
        try:
            decoded = msg.decoded or p.decode_payload(msg.payload, topic_device=device)
        except p.ProtocolError as exc:
            result.received += 1
            quarantine.append(
                _Q(msg.topic, msg.payload, exc.code, exc.message, None, msg.received_at)
            )
            return
        result.received += len(decoded.events) + len(decoded.errors)
        for item in decoded.errors:
            quarantine.append(
                _Q(msg.topic, item.raw, item.error.code, str(item.error), item.key, msg.received_at)
            )
        for event in decoded.events:
            raw = p.encode_event(event) if decoded.is_batch else msg.payload
            if msg.origin != ORIGIN_ONLINE and (
                event.stream == WEB_STREAM or event.channel == "online"
            ):
                quarantine.append(
                    _Q(msg.topic, raw, Reason.RESERVED_CHANNEL,
                       f"stream {event.stream!r} / channel {event.channel!r} is the phone "
                       "page's own; a unit may not publish on it", event.key, msg.received_at)
                )  # fmt: skip
                continue
            if msg.origin != ORIGIN_ONLINE and event.sent_boot is not None:
                _note(clocks, device, event.sent_boot, event.sent_mono_ms, msg)
            pending.append(_Pending(msg, event, raw))

    def rebuild_all_aggregates(self) -> RebuildReport:
        """Recompute every aggregate cell from events (after a bulk fix): see
        :mod:`collector.intake.aggregates`."""
        return rebuild(self.sessions, clock=self.clock)

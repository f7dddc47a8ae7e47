"""Quarantine: every refused message kept once with its reason, counted, re-processable."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.dating import date_events, db_finder
from collector.intake.store.batch import _Q, BatchResult, Received
from collector.intake.store.driver import Driver
from collector.intake.store.events import existing_keys
from collector.models import Quarantine
from collector.registry import Snapshot
from device import protocol as p

#: Most payload bytes one quarantine entry keeps (an event is at most 2 KiB; a whole
#: unreadable batch keeps its head, its length and its SHA-256).
QUARANTINE_RAW_MAX = 8 * 1024
QUARANTINE_TOPIC_MAX = 512


class QuarantineWriter:
    """Quarantine entries (a part of :class:`collector.intake.store.Store`)."""

    sessions: sessionmaker[Session]
    clock: Callable[[], datetime]
    tz: ZoneInfo
    _lock: threading.Lock

    if TYPE_CHECKING:  # provided by the other parts of Store

        def snapshot(self, session: Session) -> Snapshot: ...

        def event_row(
            self, event: p.Event, received_at: datetime, snap: Snapshot, when: Any = None
        ) -> dict[str, Any] | tuple[str, str]: ...

        def _store_events(
            self, session: Session, rows: list[dict[str, Any]], result: BatchResult
        ) -> None: ...

    def _store_quarantine(self, session: Session, items: list[_Q], result: BatchResult) -> None:
        """Keep each refused message once (by topic and bytes), counting repeats.

        At most :data:`QUARANTINE_RAW_MAX` bytes of a payload are kept (and of a topic,
        :data:`QUARANTINE_TOPIC_MAX` characters); what is cut is said in the detail with
        the full length and SHA-256, and counted: junk cannot grow the database faster
        than that per message.
        """
        rows = []
        for q in items:
            raw, detail, topic = q.raw, q.detail[:2000], q.topic
            if len(raw) > QUARANTINE_RAW_MAX:
                full = hashlib.sha256(raw).hexdigest()
                detail = (
                    f"{detail[:1500]} [payload {len(raw)} bytes, sha256 {full}; "
                    f"first {QUARANTINE_RAW_MAX} bytes kept]"
                )
                result.quarantine_bytes_cut += len(raw) - QUARANTINE_RAW_MAX
                raw = raw[:QUARANTINE_RAW_MAX]
            if len(topic) > QUARANTINE_TOPIC_MAX:
                topic = topic[:QUARANTINE_TOPIC_MAX]
            rows.append(
                {
                    "digest": hashlib.sha256(q.topic.encode() + b"\0" + q.raw).hexdigest(),
                    "topic": topic,
                    "raw": raw,
                    "reason": str(q.reason),
                    "detail": detail,
                    "device": q.key[0] if q.key else None,
                    "stream": q.key[1] if q.key else None,
                    "seq": q.key[2] if q.key else None,
                    "first_seen": q.at,
                    "last_seen": q.at,
                    "count": 1,
                }
            )
            result.quarantined[str(q.reason)] += 1
            # Ack only on the publisher's own behalf: a unit must never be able to
            # make the collector acknowledge (and so erase) another unit's events.
            if q.key is not None and q.topic == p.event_topic(q.key[0]):
                result.ack(q.key)
        Driver(session.connection(), Quarantine.__table__).upsert_many(
            tuple(rows[0]),
            rows,
            "digest",
            "count = quarantine.count + 1, last_seen = excluded.last_seen",
            distinct=False,  # the same bytes twice in one batch count twice
        )

    # ------------------------------------------------------------ maintenance

    def quarantine_raw(
        self, msg: Received, reason: str, detail: str, *, key: p.EventKey | None = None
    ) -> BatchResult:
        """Quarantine a message (or one element of it) as it came: the path of last resort.

        With ``key`` (an event of the publishing unit) it is acknowledged: it is kept.
        """
        result = BatchResult()
        with self._lock, self.sessions() as session, session.begin():
            self._store_quarantine(
                session, [_Q(msg.topic, msg.payload, reason, detail, key, msg.received_at)], result
            )
        return result

    @staticmethod
    def split_message(msg: Received) -> list[tuple[Received, p.EventKey | None]]:
        """A message's elements as messages of their own, each with its key if it names one.

        An ``event`` batch gives one single-event message per element (its own bytes);
        anything else stays whole.
        """
        try:
            device, kind = p.parse_topic(msg.topic)
            if kind is not p.TopicKind.EVENT:
                return [(msg, None)]
            decoded = p.decode_payload(msg.payload, topic_device=device)
        except (p.ProtocolError, ValueError):
            return [(msg, None)]
        items: list[tuple[bytes, p.EventKey]] = [(p.encode_event(e), e.key) for e in decoded.events]
        items += [(e.raw, e.key) for e in decoded.errors if e.key is not None]
        if not decoded.is_batch:
            key = items[0][1] if items else None
            return [(msg, key if key and key[0] == device else None)]
        out: list[tuple[Received, p.EventKey | None]] = []
        for raw, key in items:
            part = Received(msg.topic, raw, msg.received_at, msg.token, msg.flags)
            out.append((part, key if key[0] == device else None))
        keyless = [e for e in decoded.errors if e.key is None]
        for e in keyless:
            out.append((Received(msg.topic, e.raw, msg.received_at, msg.token, msg.flags), None))
        return out

    def replay_quarantine(
        self, *, ids: Sequence[int] | None = None, reason: str | None = None
    ) -> Counter[str]:
        """Re-process unresolved quarantine entries against the current registry.

        An entry whose event now passes is stored (or found to be a duplicate) and
        marked resolved; one that still fails keeps its place with the new reason.
        """
        outcome: Counter[str] = Counter()
        with self._lock, self.sessions() as session, session.begin():
            snap = self.snapshot(session)
            query = select(Quarantine).where(Quarantine.resolved_at.is_(None))
            if ids:
                query = query.where(Quarantine.id.in_(list(ids)))
            if reason:
                query = query.where(Quarantine.reason == reason)
            now = self.clock()
            for entry in session.scalars(query.order_by(Quarantine.id)).all():
                status = self._replay_one(session, snap, entry)
                outcome[status] += 1
                if status in ("stored", "duplicate"):
                    entry.resolved_at, entry.resolution = now, status
        return outcome

    def _replay_one(self, session: Session, snap: Snapshot, entry: Quarantine) -> str:
        try:
            device, kind = p.parse_topic(entry.topic)
            if kind is not p.TopicKind.EVENT:
                return "kept"
            decoded = p.decode_payload(entry.raw, topic_device=device)
        except p.ProtocolError as exc:
            entry.reason, entry.detail = exc.code.value, exc.message
            return "kept"
        if decoded.errors or len(decoded.events) != 1:
            if decoded.errors:
                entry.reason = decoded.errors[0].error.code.value
                entry.detail = str(decoded.errors[0].error)
            return "kept"
        event = decoded.events[0]
        if snap.was_purged(*event.key) or existing_keys(session, [event.key]):
            return "duplicate"  # stored already (a re-send that was refused before)
        # Dated by the same rule as at ingest, with the neighbours stored since.
        when = date_events([(event, entry.first_seen)], db_finder(session), self.tz)[event.key]
        row = self.event_row(event, entry.first_seen, snap, when)
        if isinstance(row, tuple):
            entry.reason, entry.detail = row
            return "kept"
        result = BatchResult()
        self._store_events(session, [row], result)
        return "stored" if result.stored else "duplicate"

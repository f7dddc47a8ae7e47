"""Turn received MQTT messages into durable rows, in one transaction per batch.

This is the heart of ingest, free of MQTT: :meth:`Store.process` takes what the
consumer received and returns what to acknowledge. Every message ends up
stored, recognised as a duplicate, or quarantined with its raw bytes and reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    String,
    and_,
    column,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy.orm import Session, sessionmaker

from collector.aggregates import RebuildReport, rebuild
from collector.aggregates import lock as lock_aggregates
from collector.dating import Dating, date_events, db_finder
from collector.models import (
    DailyAggregate,
    DeviceState,
    Event,
    Flag,
    Quarantine,
    StreamState,
    UTCDateTime,
)
from collector.registry import Snapshot, registry_version
from device import protocol as p

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "device",
    "stream",
    "seq",
    "type",
    "score",
    "scale",
    "staff",
    "device_at",
    "clock_synced",
    "boot",
    "mono_ms",
    "pressed_at",
    "received_at",
    "clock_correction_ms",
    "pressed_lo",
    "pressed_hi",
    "day",
    "centre_id",
    "employee_id",
    "service_id",
    "flags",
    "extra",
)
#: Most payload bytes one quarantine entry keeps (an event is at most 2 KiB; a whole
#: unreadable batch keeps its head, its length and its SHA-256).
QUARANTINE_RAW_MAX = 8 * 1024
QUARANTINE_TOPIC_MAX = 512


class Reason:
    """Quarantine reasons beyond the protocol's own error codes."""

    UNKNOWN_DEVICE = "unknown_device"
    RETIRED_DEVICE = "retired_device"
    UNASSIGNED_DEVICE = "unassigned_device"
    INTERNAL_ERROR = "internal_error"
    """Processing this message or element raised an unexpected error (a defect of ours)."""
    REFUSED_BY_DATABASE = "refused_by_database"
    """The database refused the row (a value the contract let through but a column cannot hold)."""


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    received_at: datetime
    token: tuple[int, int] | None = None
    """The broker delivery to acknowledge after the commit (``None``: QoS 0, or none)."""


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


def _existing_keys(session: Session, keys: list[p.EventKey]) -> set[p.EventKey]:
    """Which of ``keys`` are stored already (dedup before any registry verdict)."""
    found: set[p.EventKey] = set()
    for start in range(0, len(keys), 300):
        chunk = keys[start : start + 300]
        found.update(
            (d, s, q)
            for d, s, q in session.execute(
                select(Event.device, Event.stream, Event.seq).where(
                    tuple_(Event.device, Event.stream, Event.seq).in_(chunk)
                )
            )
        )
    return found


class _Driver:
    """Driver-level SQL for the hot path, with SQLAlchemy's own per-type conversions.

    Compiling a fresh multi-row statement through SQLAlchemy on every batch costs more
    than running it; these statements are plain text (identical on SQLite and
    PostgreSQL: both speak ``ON CONFLICT ... excluded``), values converted exactly as
    SQLAlchemy would convert them.
    """

    _converters: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    _pg_types: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, conn: Any, table: Any) -> None:
        self.conn = conn
        self.table = table.name
        dialect = conn.dialect
        self.pg = dialect.name == "postgresql"
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        key = (table.name, dialect.name)
        if key not in self._converters:  # once per table and database kind
            procs = {c.name: c.type.bind_processor(dialect) for c in table.columns}
            if self.pg:
                from psycopg.types.json import Json

                procs.update({c.name: Json for c in table.columns if isinstance(c.type, JSON)})
                self._pg_types[table.name] = {
                    c.name: "json" if isinstance(c.type, JSON) else c.type.compile(dialect)
                    for c in table.columns
                }
            self._converters[key] = procs
        self.procs = self._converters[key]

    def values(self, cols: Sequence[str], row: dict[str, Any]) -> list[Any]:
        out = []
        for c in cols:
            proc = self.procs[c]
            v = row.get(c)
            out.append(proc(v) if proc is not None and v is not None else v)
        return out

    def insert_returning(
        self, cols: Sequence[str], rows: list[dict[str, Any]], conflict: str, returning: str
    ) -> list[Any]:
        if self.pg:
            return self._insert_unnest(cols, rows, conflict, returning)
        one = "(" + ", ".join([self.mark] * len(cols)) + ")"
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES "
            f"{', '.join([one] * len(rows))} ON CONFLICT ({conflict}) DO NOTHING "
            f"RETURNING {returning}"
        )
        params: list[Any] = []
        for row in rows:
            params += self.values(cols, row)
        return list(self.conn.exec_driver_sql(sql, tuple(params)))

    def _insert_unnest(
        self, cols: Sequence[str], rows: list[dict[str, Any]], conflict: str, returning: str
    ) -> list[Any]:
        """PostgreSQL: one array per column, whatever the number of rows.

        The statement stays short and identical from batch to batch, so psycopg keeps
        its parsed form (and the server can prepare it); a multi-row ``VALUES`` with
        thousands of placeholders is re-parsed by the driver on every batch.
        """
        types = self._pg_types[self.table]
        arrays: list[list[Any]] = [[] for _ in cols]
        for row in rows:
            for i, c in enumerate(cols):
                v = row.get(c)
                if v is not None:
                    if types[c] == "json":
                        v = json.dumps(v, ensure_ascii=False)  # cast back to json below
                    else:
                        proc = self.procs[c]
                        v = proc(v) if proc is not None else v
                arrays[i].append(v)
        args = ", ".join("%s::text[]" if types[c] == "json" else f"%s::{types[c]}[]" for c in cols)
        picks = ", ".join(f"{c}::json" if types[c] == "json" else c for c in cols)
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) "
            f"SELECT {picks} FROM unnest({args}) AS t({', '.join(cols)}) "
            f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}"
        )
        return list(self.conn.exec_driver_sql(sql, tuple(arrays)))

    def upsert_many(
        self, cols: Sequence[str], rows: list[dict[str, Any]], conflict: str, update: str
    ) -> None:
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES "
            f"({', '.join([self.mark] * len(cols))}) ON CONFLICT ({conflict}) "
            f"DO UPDATE SET {update}"
        )
        self.conn.exec_driver_sql(sql, [tuple(self.values(cols, r)) for r in rows])


class Store:
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

    def _process(self, session: Session, messages: Sequence[Received]) -> BatchResult:
        result = BatchResult()
        snap = self.snapshot(session)
        rows: dict[p.EventKey, dict[str, Any]] = {}
        quarantine: list[_Q] = []
        states: dict[str, dict[str, Any]] = {}
        pending: list[_Pending] = []

        for msg in messages:
            try:
                device, kind = p.parse_topic(msg.topic)
            except p.ProtocolError as exc:
                quarantine.append(
                    _Q(msg.topic, msg.payload, exc.code, exc.message, None, msg.received_at)
                )
                continue
            st = states.setdefault(device, {})
            st["last_seen"] = msg.received_at
            if kind is p.TopicKind.EVENT:
                self._events(msg, device, pending, quarantine, result)
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
            self._tie_events(session, snap, pending, rows, quarantine, result)
        if rows:
            self._store_events(session, list(rows.values()), result)
        if quarantine:
            self._store_quarantine(session, quarantine, result)
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
    ) -> None:
        try:
            decoded = p.decode_payload(msg.payload, topic_device=device)
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
            pending.append(_Pending(msg, event, raw))

    def _tie_events(
        self,
        session: Session,
        snap: Snapshot,
        pending: list[_Pending],
        rows: dict[p.EventKey, dict[str, Any]],
        quarantine: list[_Q],
        result: BatchResult,
    ) -> None:
        """Date every event of the batch, tie it to centre and employee, or quarantine it.

        A refusal (unknown, retired, unassigned device) is checked against what is already
        stored first: a re-send of a stored event is a duplicate, never a quarantine entry.
        """
        fresh = []
        for x in pending:
            if snap.was_purged(x.event.device, x.event.stream, x.event.seq):
                result.duplicates += 1  # stored long ago, deleted by retention since
                result.ack(x.event.key)
            else:
                fresh.append(x)
        pending = fresh
        try:
            dating = date_events(
                [(x.event, x.msg.received_at) for x in pending], db_finder(session), self.tz
            )
        except Exception as exc:  # a defect: date each alone, so it stays with its event
            log.exception("dating a batch failed (%s); dating event by event", exc)
            dating = {}
            for x in pending:
                with contextlib.suppress(Exception):
                    dating.update(
                        date_events([(x.event, x.msg.received_at)], db_finder(session), self.tz)
                    )
        refused: list[tuple[_Pending, str, str]] = []
        for x in pending:
            event = x.event
            try:
                when = dating.get(event.key)
                if when is None:
                    raise ValueError("no press time could be derived")
                row_or_reason = self.event_row(event, x.msg.received_at, snap, when)
            except Exception as exc:  # one element's defect stays with that element
                log.exception("event %s broke processing; quarantined", event.key)
                row_or_reason = (Reason.INTERNAL_ERROR, repr(exc))
            if isinstance(row_or_reason, tuple):
                refused.append((x, *row_or_reason))
            elif event.key in rows:
                result.duplicates += 1
                result.ack(event.key)
            else:
                rows[event.key] = row_or_reason
        if not refused:
            return
        stored = _existing_keys(session, [x.event.key for x, _, _ in refused])
        for x, reason, detail in refused:
            if x.event.key in stored:
                result.duplicates += 1  # already counted: its re-send is no problem
                result.ack(x.event.key)
            else:
                quarantine.append(
                    _Q(x.msg.topic, x.raw, reason, detail, x.event.key, x.msg.received_at)
                )

    def event_row(
        self, event: p.Event, received_at: datetime, snap: Snapshot, when: Dating | None = None
    ) -> dict[str, Any] | tuple[str, str]:
        """The ``events`` row for a valid event, or ``(reason, detail)`` to quarantine it.

        ``when``: its press time by :func:`collector.dating.date_events` (alone, without
        neighbours, if not given).
        """
        dev = snap.devices.get(event.device)
        if dev is None:
            return Reason.UNKNOWN_DEVICE, f"device {event.device!r} is not in the registry"
        if dev.retired_at is not None and received_at >= dev.retired_at:
            return Reason.RETIRED_DEVICE, f"device {event.device!r} was retired {dev.retired_at}"
        if when is None:
            when = date_events([(event, received_at)], lambda *_: None, self.tz)[event.key]
        flags = when.flags
        pressed_at = when.pressed_at.astimezone(UTC)
        correction = when.correction_ms
        tie = snap.tie(event.device, pressed_at)
        if tie is None:
            return (
                Reason.UNASSIGNED_DEVICE,
                f"device {event.device!r} has no assignment at {pressed_at.isoformat()}",
            )
        employee = tie.default_employee_id
        if event.staff is not None:
            employee = snap.employee_for_badge(event.staff, pressed_at)
            if employee is None:
                flags |= Flag.UNKNOWN_BADGE
        return {
            "device": event.device,
            "stream": event.stream,
            "seq": event.seq,
            "type": event.type.value,
            "score": event.score,
            "scale": event.scale,
            "staff": event.staff,
            "device_at": event.at,
            "clock_synced": event.clock_synced,
            "boot": event.boot,
            "mono_ms": event.mono_ms,
            "pressed_at": pressed_at,
            "received_at": received_at,
            "clock_correction_ms": correction,
            "pressed_lo": when.lo,
            "pressed_hi": when.hi,
            "day": pressed_at.astimezone(self.tz).date(),
            "centre_id": tie.centre_id,
            "employee_id": employee,
            "service_id": tie.service_id,
            "flags": int(flags),
            "extra": dict(event.extra) or None,
        }

    # ------------------------------------------------------------ writes

    def _store_events(
        self, session: Session, rows: list[dict[str, Any]], result: BatchResult
    ) -> None:
        # Ids are drawn under the lock and the lock is held to the commit, so ids grow in
        # commit order across processes: the analyst feed pages by id and a batch that
        # commits late can never hold ids below one already served.
        self._lock_aggregates(session)
        fast = _Driver(session.connection(), Event.__table__)
        cols = EVENT_COLUMNS
        inserted: dict[p.EventKey, int] = {}
        step = 5000 if fast.pg else 400  # SQLite: a bound on variables per statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            found = fast.insert_returning(
                cols, chunk, "device, stream, seq", "id, device, stream, seq"
            )
            inserted.update(((d, s, q), i) for i, d, s, q in found)
        result.stored += len(inserted)
        result.duplicates += len(rows) - len(inserted)
        for row in rows:
            result.ack((row["device"], row["stream"], row["seq"]))
        new_rows = [r for r in rows if (r["device"], r["stream"], r["seq"]) in inserted]
        result.stored_keys.extend((r["device"], r["stream"], r["seq"]) for r in new_rows)
        if not new_rows:
            return
        self._update_streams(session, new_rows)
        ratings = [r for r in new_rows if r["type"] == p.EventType.RATING.value]
        if ratings:
            for r in ratings:
                r["id"] = inserted[(r["device"], r["stream"], r["seq"])]
            flagged = self._flag_bursts(session, ratings)
            self._add_to_aggregates(session, ratings, flagged)

    def _add_to_aggregates(
        self, session: Session, ratings: list[dict[str, Any]], flagged: list[Any]
    ) -> None:
        """Add new ratings to their day's cells; move newly flagged old ones out of scores.

        Increments are atomic upserts, so the cells stay exact with several writers;
        ``collector.aggregates.rebuild`` rebuilds the same numbers from events.
        """
        new_ids = {r["id"] for r in ratings}
        flagged_ids = {f.id for f in flagged}
        deltas: dict[tuple[Any, ...], list[int]] = {}

        def bump(key: tuple[Any, ...], score: int, counted: int, excluded: int) -> None:
            d = deltas.setdefault(key, [0] * 7)  # n1..n5, n, excluded
            d[score - 1] += counted
            d[5] += counted
            d[6] += excluded

        for r in ratings:
            key = (*self.agg_key(r), r["scale"])
            if r["id"] in flagged_ids:
                bump(key, r["score"], 0, 1)
            else:
                bump(key, r["score"], 1, 0)
        for f in flagged:
            if f.id not in new_ids:  # counted by an earlier batch: take it out of the scores
                key = (f.day, f.centre_id, f.employee_id or 0, f.service_id or 0, f.scale)
                bump(key, f.score, -1, 1)
        if not deltas:
            return
        now = self.clock()
        counters = ("n1", "n2", "n3", "n4", "n5", "n", "excluded")
        params = [
            {
                "day": k[0],
                "centre_id": k[1],
                "employee_id": k[2],
                "service_id": k[3],
                "scale": k[4],
                **dict(zip(counters, d, strict=True)),
                "changed_at": now,
            }
            for k, d in sorted(deltas.items())
        ]
        _Driver(session.connection(), DailyAggregate.__table__).upsert_many(
            ("day", "centre_id", "employee_id", "service_id", "scale", *counters, "changed_at"),
            params,
            "day, centre_id, employee_id, service_id, scale",
            ", ".join(f"{c} = daily_aggregates.{c} + excluded.{c}" for c in counters)
            + ", changed_at = excluded.changed_at",
        )

    def _update_streams(self, session: Session, rows: list[dict[str, Any]]) -> None:
        per: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            k = (r["device"], r["stream"])
            cur = per.get(k)
            if cur is None:
                per[k] = [r["seq"], 1, r["received_at"]]
            else:
                cur[0] = max(cur[0], r["seq"])
                cur[1] += 1
        params = [
            {"device": d, "stream": s, "max_seq": m, "stored": n, "first_seen": at, "last_seen": at}
            for (d, s), (m, n, at) in sorted(per.items())
        ]
        _Driver(session.connection(), StreamState.__table__).upsert_many(
            ("device", "stream", "max_seq", "stored", "first_seen", "last_seen"),
            params,
            "device, stream",
            "max_seq = CASE WHEN excluded.max_seq > stream_state.max_seq "
            "THEN excluded.max_seq ELSE stream_state.max_seq END, "
            "stored = stream_state.stored + excluded.stored, last_seen = excluded.last_seen",
        )

    def _lock_aggregates(self, session: Session) -> None:
        lock_aggregates(session)

    @staticmethod
    def agg_key(row: dict[str, Any]) -> tuple[Any, int, int, int]:
        return (row["day"], row["centre_id"], row["employee_id"] or 0, row["service_id"] or 0)

    def _flag_bursts(self, session: Session, ratings: list[dict[str, Any]]) -> list[Any]:
        """Flag ratings of one unit that come faster than plausible; return the newly flagged."""
        spans: dict[str, tuple[datetime, datetime]] = {}
        for r in ratings:
            lo, hi = spans.get(r["device"], (r["pressed_at"], r["pressed_at"]))
            spans[r["device"]] = (min(lo, r["pressed_at"]), max(hi, r["pressed_at"]))
        w = self.burst_window
        # One query whatever the spread: each unit's own time range, joined from VALUES,
        # so the (device, pressed_at) index serves every range. First only count (cheap):
        # a unit with no more ratings than the limit in its range cannot be in a burst.
        rows = [(d, lo - w, hi + w) for d, (lo, hi) in sorted(spans.items())]

        def ranges_cte(data: list[tuple[str, datetime, datetime]]) -> Any:
            return (
                values(
                    column("device", String),
                    column("lo", UTCDateTime()),
                    column("hi", UTCDateTime()),
                    name="ranges",
                )
                .data(data)
                .cte("ranges")
            )

        def in_range(r: Any) -> Any:
            return and_(
                Event.device == r.c.device,
                Event.pressed_at >= r.c.lo,
                Event.pressed_at <= r.c.hi,
                Event.type == p.EventType.RATING.value,
            )

        conn = session.connection()
        busy = self._busy_units(conn, rows)
        if not busy:
            return []
        r = ranges_cte([row for row in rows if row[0] in busy])
        found = conn.execute(
            select(
                Event.id,
                Event.device,
                Event.pressed_at,
                Event.flags,
                Event.day,
                Event.centre_id,
                Event.employee_id,
                Event.service_id,
                Event.score,
                Event.scale,
            )
            .join(r, in_range(r))
            .order_by(Event.device, Event.pressed_at)
        ).all()
        by_device: dict[str, list[Any]] = {}
        for row in found:
            by_device.setdefault(row.device, []).append(row)
        to_flag: list[Any] = []
        for items in by_device.values():
            j = 0
            mark = [False] * len(items)
            for i in range(len(items)):
                while items[i].pressed_at - items[j].pressed_at > self.burst_window:
                    j += 1
                if i - j + 1 > self.burst_max:
                    for k in range(j, i + 1):
                        mark[k] = True
            to_flag.extend(
                r for r, m in zip(items, mark, strict=True) if m and not r.flags & Flag.BURST
            )
        if not to_flag:
            return []
        ids = [r.id for r in to_flag]
        for start in range(0, len(ids), 500):
            session.execute(
                update(Event)
                .where(Event.id.in_(ids[start : start + 500]))
                .values(flags=Event.flags.op("|")(int(Flag.BURST)))
            )
        return to_flag

    def _busy_units(self, conn: Any, rows: list[tuple[str, datetime, datetime]]) -> set[str]:
        """Units with more ratings than the burst limit inside their range.

        Plain driver SQL: SQLAlchemy would compile a fresh VALUES list on every batch,
        which costs more than the query itself.
        """
        dialect = conn.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        to_db = UTCDateTime().bind_processor(dialect) or (lambda v: v)
        tail = (
            "SELECT ranges.device FROM ranges JOIN events "
            "ON events.device = ranges.device AND events.pressed_at >= ranges.lo "
            f"AND events.pressed_at <= ranges.hi AND events.type = {mark} "
            f"GROUP BY ranges.device HAVING count(*) > {mark}"
        )
        if dialect.name == "postgresql":  # three arrays: one short statement, parsed once
            sql = (
                "WITH ranges AS (SELECT * FROM unnest(%s::varchar[], %s::timestamptz[], "
                "%s::timestamptz[]) AS r(device, lo, hi)) " + tail
            )
            arrays = (
                [d for d, _, _ in rows],
                [to_db(lo) for _, lo, _ in rows],
                [to_db(hi) for _, _, hi in rows],
                p.EventType.RATING.value,
                self.burst_max,
            )
            return {d for (d,) in conn.exec_driver_sql(sql, arrays)}
        tuples = ", ".join([f"({mark}, {mark}, {mark})"] * len(rows))
        sql = (
            f"WITH ranges(device, lo, hi) AS (VALUES {tuples}) "
            "SELECT ranges.device FROM ranges JOIN events "
            "ON events.device = ranges.device AND events.pressed_at >= ranges.lo "
            f"AND events.pressed_at <= ranges.hi AND events.type = {mark} "
            f"GROUP BY ranges.device HAVING count(*) > {mark}"
        )
        params: list[Any] = []
        for device, lo, hi in rows:
            params += [device, to_db(lo), to_db(hi)]
        params += [p.EventType.RATING.value, self.burst_max]
        return {d for (d,) in conn.exec_driver_sql(sql, tuple(params))}

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
        _Driver(session.connection(), Quarantine.__table__).upsert_many(
            tuple(rows[0]),
            rows,
            "digest",
            "count = quarantine.count + 1, last_seen = excluded.last_seen",
        )

    def _store_states(self, session: Session, states: dict[str, dict[str, Any]]) -> None:
        """Upsert what was heard from each unit: one executemany per set of columns."""
        table = DeviceState.__table__
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for device, state in sorted(states.items()):
            groups.setdefault(tuple(sorted(state)), []).append(
                {"device": device, "online": False, **state}
            )
        fast = _Driver(session.connection(), table)
        for cols, rows in groups.items():
            columns = ("device", "online", *(c for c in cols if c != "online"))
            fast.upsert_many(columns, rows, "device", ", ".join(_newer(c, cols) for c in cols))

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
            part = Received(msg.topic, raw, msg.received_at, msg.token)
            out.append((part, key if key[0] == device else None))
        keyless = [e for e in decoded.errors if e.key is None]
        for e in keyless:
            out.append((Received(msg.topic, e.raw, msg.received_at, msg.token), None))
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
        if snap.was_purged(*event.key) or _existing_keys(session, [event.key]):
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

    def rebuild_all_aggregates(self) -> RebuildReport:
        """Recompute every aggregate cell from events (after a bulk fix): see
        :mod:`collector.aggregates`."""
        return rebuild(self.sessions, clock=self.clock)


def _newer(col: str, cols: Sequence[str]) -> str:
    """``col = excluded.col`` only where what came is newer than what is kept.

    Several ingest workers commit in any order: a status, health report or last-seen
    time committed later but received earlier must not overwrite a newer one.
    """
    if col == "last_seen":
        stamp = "last_seen"
    elif col in ("health", "health_at") or (col == "firmware" and "health_at" in cols):
        stamp = "health_at"
    else:
        stamp = "status_at"
    if stamp not in cols:
        return f"{col} = excluded.{col}"
    kept = f"device_state.{stamp}"
    return (
        f"{col} = CASE WHEN {kept} IS NULL OR excluded.{stamp} >= {kept} "
        f"THEN excluded.{col} ELSE device_state.{col} END"
    )

"""Events: dated, tied to centre and employee, inserted once; bursts flagged."""

from __future__ import annotations

import contextlib
import logging
from collections import namedtuple
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from collector.intake.dating import ClockZero, Dating, date_events, db_clocks, db_finder
from collector.intake.store.batch import _Q, BatchResult, Reason, _Pending
from collector.intake.store.driver import Driver
from collector.models import Event, Flag, StreamState, sqlite_time_text
from collector.registry import Snapshot
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
    "channel",
    "rating_seq",
    "answers",
    "chosen_service",
)
#: Most payload bytes one quarantine entry keeps (an event is at most 2 KiB; a whole
#: unreadable batch keeps its head, its length and its SHA-256).


def existing_keys(session: Session, keys: list[p.EventKey]) -> set[p.EventKey]:
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


#: A rating in a busy range, as the burst check and the aggregates read it.
_BurstRow = namedtuple(
    "_BurstRow",
    "id device pressed_at flags day centre_id employee_id service_id score scale channel",
)


class EventWriter:
    """The events of a batch (a part of :class:`collector.intake.store.Store`)."""

    tz: ZoneInfo
    clock: Callable[[], datetime]
    burst_max: int
    burst_window: timedelta

    if TYPE_CHECKING:  # provided by the other parts of Store

        def _lock_aggregates(self, session: Session) -> None: ...

        def _add_to_aggregates(
            self, session: Session, ratings: list[dict[str, Any]], flagged: list[Any]
        ) -> None: ...

        def _add_factors(self, session: Session, rows: list[dict[str, Any]]) -> None: ...

        def snapshot(self, session: Session) -> Snapshot: ...

    def _tie_events(
        self,
        session: Session,
        snap: Snapshot,
        pending: list[_Pending],
        rows: dict[p.EventKey, dict[str, Any]],
        quarantine: list[_Q],
        result: BatchResult,
        clocks: dict[str, dict[str, ClockZero]] | None = None,
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
                [(x.event, x.msg.received_at) for x in pending], db_finder(session), self.tz,
                clocks=db_clocks(session, {d: list(b.values()) for d, b in (clocks or {}).items()}),
                held_since={x.event.key: x.msg.held_since for x in pending if x.msg.held_since},
            )  # fmt: skip
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
                if x.msg.flags and isinstance(row_or_reason, dict):
                    row_or_reason["flags"] |= x.msg.flags
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
        stored = existing_keys(session, [x.event.key for x, _, _ in refused])
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

        ``when``: its press time by :func:`collector.intake.dating.date_events` (alone, without
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
        service_id = tie.service_id
        if event.service is not None:  # a service the visitor chose, when it is known
            chosen = snap.service_ids.get(event.service)
            service_id = chosen if chosen is not None else service_id
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
            "service_id": service_id,
            "flags": int(flags),
            "extra": dict(event.extra) or None,
            "channel": event.channel or "counter",
            "rating_seq": event.rating_seq,
            "answers": dict(event.answers) or None,
            "chosen_service": event.service,
        }

    # ------------------------------------------------------------ writes

    def _store_events(
        self, session: Session, rows: list[dict[str, Any]], result: BatchResult
    ) -> None:
        # Ids are drawn under the lock and the lock is held to the commit, so ids grow in
        # commit order across processes: the analyst feed pages by id and a batch that
        # commits late can never hold ids below one already served.
        self._lock_aggregates(session)
        rows = self._drop_purged_meanwhile(session, rows, result)
        if not rows:
            return
        fast = Driver(session.connection(), Event.__table__)
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
        factors = [r for r in new_rows if r["type"] == p.EventType.FACTORS.value]
        if factors:
            self._add_factors(session, factors)

    def _drop_purged_meanwhile(
        self, session: Session, rows: list[dict[str, Any]], result: BatchResult
    ) -> list[dict[str, Any]]:
        """Under the lock: rows that a retention batch purged since this batch began
        (its snapshot is older than the registry version now) are duplicates.

        PostgreSQL only: each statement sees the latest commit, so a retention batch can
        commit between this batch's first read and its lock. SQLite has one writer and a
        transaction that read before another's commit cannot write after it (the write
        fails as busy and the batch is retried whole), so no second read is needed."""
        if session.get_bind().dialect.name != "postgresql":
            return rows
        snap = self.snapshot(session)  # reloaded only if the version moved meanwhile
        kept = []
        for r in rows:
            if snap.was_purged(r["device"], r["stream"], r["seq"]):
                result.duplicates += 1
                result.ack((r["device"], r["stream"], r["seq"]))
            else:
                kept.append(r)
        return kept

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
        Driver(session.connection(), StreamState.__table__).upsert_many(
            ("device", "stream", "max_seq", "stored", "first_seen", "last_seen"),
            params,
            "device, stream",
            "max_seq = CASE WHEN excluded.max_seq > stream_state.max_seq "
            "THEN excluded.max_seq ELSE stream_state.max_seq END, "
            "stored = stream_state.stored + excluded.stored, last_seen = excluded.last_seen",
        )

    def _flag_bursts(self, session: Session, ratings: list[dict[str, Any]]) -> list[Any]:
        """Flag ratings of one unit that come faster than plausible; return the newly flagged.

        A burst is more than ``burst_max`` ratings of one unit within ``burst_window``, on
        one channel: a flood of phone ratings never makes the desk's real presses a burst.
        The new ratings of a unit are cut into clusters (consecutive ratings closer than
        the window); only a cluster's own range, widened by the window, can hold a burst
        with them. First one cheap count per range; the rows are read only for ranges
        that hold more ratings than the limit (rare: busy hours rate far below it).
        """
        w = self.burst_window
        times: dict[tuple[str, str], list[datetime]] = {}
        for r in ratings:
            times.setdefault((r["device"], r["channel"]), []).append(r["pressed_at"])
        ranges: list[tuple[str, str, datetime, datetime]] = []
        for (device, channel), stamps in sorted(times.items()):
            stamps.sort()
            lo = prev = stamps[0]
            for t in stamps[1:]:
                if t - prev > w:
                    ranges.append((device, channel, lo - w, prev + w))
                    lo = t
                prev = t
            ranges.append((device, channel, lo - w, prev + w))
        conn = session.connection()
        busy = self._ranges_query(conn, ranges, count=True)
        if not busy:
            return []
        found = self._ranges_query(conn, [ranges[i] for i in sorted(busy)], count=False)
        by_device: dict[tuple[str, str], dict[int, Any]] = {}
        for row in found:  # ranges of one unit may overlap: each row once
            by_device.setdefault((row.device, row.channel), {})[row.id] = row
        to_flag: list[Any] = []
        for seen in by_device.values():
            items = sorted(seen.values(), key=lambda row: (row.pressed_at, row.id))
            j = 0
            mark = [False] * len(items)
            for i in range(len(items)):
                while items[i].pressed_at - items[j].pressed_at > w:
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

    def ranges_statement(
        self, dialect: str, ranges: list[tuple[str, str, datetime, datetime]], *, count: bool
    ) -> tuple[str, tuple[Any, ...]]:
        """The SQL and parameters of :meth:`_ranges_query` for ``dialect``."""
        pg = dialect == "postgresql"
        mark = "%s" if pg else "?"
        to_db: Callable[[Any], Any] = (lambda v: v.astimezone(UTC)) if pg else sqlite_time_text
        # Each range is a few index lookups; a plan that scans the events once per
        # batch (or once per range) costs more with every event stored. SQLite: the
        # index by name, joined row by row. PostgreSQL: each range probed in a LATERAL
        # subquery the planner cannot turn into a join (the count is an aggregate; the
        # rows sit behind OFFSET 0): without statistics (a new table, autovacuum off or
        # not yet run) it would otherwise hash the whole table on every batch. That
        # shape holds in a generic plan too, so psycopg may prepare the statement.
        match = (
            "events.device = ranges.device "
            "AND events.pressed_at >= ranges.lo AND events.pressed_at <= ranges.hi "
            f"AND events.channel = ranges.channel AND events.type = {mark}"
        )
        cols = ", ".join(f"events.{c}" for c in _BurstRow._fields)
        if pg and count:
            tail = (
                "SELECT ranges.i FROM ranges CROSS JOIN LATERAL "
                f"(SELECT count(*) AS n FROM events WHERE {match}) AS c WHERE c.n > {mark}"
            )
        elif pg:
            tail = (
                "SELECT found.* FROM ranges CROSS JOIN LATERAL "
                f"(SELECT {cols} FROM events WHERE {match} OFFSET 0) AS found"
            )
        elif count:
            tail = (
                "SELECT ranges.i FROM ranges JOIN events INDEXED BY ix_events_device_pressed "
                f"ON {match} GROUP BY ranges.i HAVING count(*) > {mark}"
            )
        else:
            tail = (
                f"SELECT {cols} FROM ranges JOIN events INDEXED BY ix_events_device_pressed "
                f"ON {match}"
            )
        if pg:
            head = (
                "WITH ranges AS (SELECT * FROM unnest(%b::int[], %b::varchar[], "
                "%b::varchar[], %b::timestamptz[], %b::timestamptz[]) "
                "AS r(i, device, channel, lo, hi)) "
            )
            params: list[Any] = [
                list(range(len(ranges))),
                [d for d, _, _, _ in ranges],
                [c for _, c, _, _ in ranges],
                [to_db(lo) for _, _, lo, _ in ranges],
                [to_db(hi) for _, _, _, hi in ranges],
            ]
        else:
            tuples = ", ".join([f"({mark}, {mark}, {mark}, {mark}, {mark})"] * len(ranges))
            head = f"WITH ranges(i, device, channel, lo, hi) AS (VALUES {tuples}) "
            params = []
            for i, (device, channel, lo, hi) in enumerate(ranges):
                params += [i, device, channel, to_db(lo), to_db(hi)]
        extra: list[Any] = [p.EventType.RATING.value]
        if count:
            extra.append(self.burst_max)
        return head + tail, tuple(params + extra)

    def _ranges_query(
        self, conn: Any, ranges: list[tuple[str, str, datetime, datetime]], *, count: bool
    ) -> Any:
        """Over per-unit, per-channel time ranges: ``count`` — the indexes of the ranges
        holding more ratings than the burst limit; else the ratings inside them (as ``_BurstRow``).

        Plain driver SQL: SQLAlchemy would compile a fresh VALUES list on every batch,
        which costs more than the query itself; on PostgreSQL four arrays keep the
        statement short and the same from batch to batch (parsed once).
        """
        dialect = conn.dialect
        pg = dialect.name == "postgresql"
        sql, params = self.ranges_statement(dialect.name, ranges, count=count)
        if pg:
            with conn.connection.driver_connection.cursor() as cur:
                cur.execute(sql, params)
                result = cur.fetchall()
        else:
            result = conn.exec_driver_sql(sql, params).all()
        if count:
            return {i for (i,) in result}
        table = Event.__table__.c
        procs = [
            (name, proc)
            for name in _BurstRow._fields
            if (proc := table[name].type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        ]
        rows = [_BurstRow(*row) for row in result]
        if not procs:
            return rows
        return [row._replace(**{n: f(getattr(row, n)) for n, f in procs}) for row in rows]

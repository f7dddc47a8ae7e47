"""The event feed's pages, read and encoded by the database itself.

A page of the NDJSON feed is built as text by the database (PostgreSQL's ``row_to_json``,
SQLite's ``json_object``): Python only joins the lines, so no object is made per row
(the feed used to spend most of a page on building a tuple, two datetimes and a dict per
event, then encoding them). The text is byte for byte what ``orjson`` makes of
:func:`records` (keys in :data:`FEED_COLUMNS` order, no spaces, UTF-8 as is, times in
UTC as ``2026-11-24T06:00:00+00:00`` with six digits of microseconds when there are
any): ``tests/collector/test_feed_encoding.py`` holds the two side by side.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from collector.models import Centre, Employee, Event, Service, sqlite_time_text

FEED_COLUMNS = (
    "id",
    "device",
    "stream",
    "seq",
    "type",
    "score",
    "scale",
    "pressed_at",
    "received_at",
    "day",
    "centre",
    "service",
    "employee",
    "flags",
    "clock_synced",
)


def _page(after: int, horizon: datetime, limit: int) -> Any:
    return (
        select(
            Event.id,
            Event.device,
            Event.stream,
            Event.seq,
            Event.type,
            Event.score,
            Event.scale,
            Event.pressed_at,
            Event.received_at,
            Event.day,
            Centre.code,
            Service.code,
            Employee.code,
            Event.flags,
            Event.clock_synced,
        )
        .outerjoin(Centre, Centre.id == Event.centre_id)
        .outerjoin(Service, Service.id == Event.service_id)
        .outerjoin(Employee, Employee.id == Event.employee_id)
        .where(Event.id > after, Event.received_at <= horizon)
        .order_by(Event.id)
        .limit(limit)
    )


def records(
    session: Session, after: int, horizon: datetime, limit: int, *, employee: bool
) -> list[dict[str, Any]]:
    """A page as Python values (for CSV, and the reference of the NDJSON text)."""
    return [
        {
            "id": r[0],
            "device": r[1],
            "stream": r[2],
            "seq": r[3],
            "type": r[4],
            "score": r[5],
            "scale": r[6],
            "pressed_at": r[7],
            "received_at": r[8],
            "day": r[9],
            "centre": r[10],
            "service": r[11],
            "employee": r[12] if employee else None,
            "flags": r[13],
            "clock_synced": r[14],
        }
        for r in session.execute(_page(after, horizon, limit))
    ]


# The page's events first, the names joined to them after: the plan is the primary key's
# index up to the limit whatever the planner believes of the table's size (a table just
# filled, not yet analysed, had PostgreSQL sort every row joined, to disk).
_LIMITED = (
    "SELECT * FROM events WHERE id > :after AND received_at <= :horizon ORDER BY id LIMIT :limit"
)

# PostgreSQL: the times as text in UTC, six digits of microseconds only when there are
# any (as Python's isoformat), and the row as JSON by row_to_json (compact, in column
# order; a date as YYYY-MM-DD, NULL as null, booleans as true/false).
_PG_TIME = (
    "replace(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '')"
    " || '+00:00'"
)
_PG_PAGE = f"""
SELECT r.id, row_to_json(r)::text FROM (
  SELECT e.id, e.device, e.stream, e.seq, e.type, e.score, e.scale,
         {_PG_TIME.format(c="e.pressed_at")} AS pressed_at,
         {_PG_TIME.format(c="e.received_at")} AS received_at,
         e.day, c.code AS centre, s.code AS service,
         CASE WHEN :employee THEN m.code END AS employee,
         e.flags, e.clock_synced
  FROM ({_LIMITED}) e
  LEFT JOIN centres c ON c.id = e.centre_id
  LEFT JOIN services s ON s.id = e.service_id
  LEFT JOIN employees m ON m.id = e.employee_id
  ORDER BY e.id
) r
"""

# SQLite keeps a time as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC; collector.models.base).
_SQLITE_TIME = (
    "substr({c}, 1, 10) || 'T' || substr({c}, 12, 8) || "
    "CASE WHEN substr({c}, 20) IN ('', '.000000') THEN '' ELSE substr({c}, 20, 7) END "
    "|| '+00:00'"
)
_SQLITE_PAGE = f"""
SELECT e.id, json_object(
  'id', e.id, 'device', e.device, 'stream', e.stream, 'seq', e.seq, 'type', e.type,
  'score', e.score, 'scale', e.scale,
  'pressed_at', {_SQLITE_TIME.format(c="e.pressed_at")},
  'received_at', {_SQLITE_TIME.format(c="e.received_at")},
  'day', e.day, 'centre', c.code, 'service', s.code,
  'employee', CASE WHEN :employee THEN m.code END,
  'flags', e.flags,
  'clock_synced', json(CASE WHEN e.clock_synced THEN 'true' ELSE 'false' END)
)
FROM ({_LIMITED}) e
LEFT JOIN centres c ON c.id = e.centre_id
LEFT JOIN services s ON s.id = e.service_id
LEFT JOIN employees m ON m.id = e.employee_id
ORDER BY e.id
"""


def ndjson(
    session: Session, after: int, horizon: datetime, limit: int, *, employee: bool
) -> tuple[bytes, int]:
    """A page as NDJSON bytes and the cursor after it (``after`` when it is empty)."""
    pg = session.get_bind().dialect.name == "postgresql"
    params: dict[str, Any] = {"after": after, "limit": limit, "employee": employee}
    if pg:
        params["horizon"] = horizon
    else:  # compared as SQLite keeps times (text)
        params["horizon"] = sqlite_time_text(horizon)
    rows = session.execute(text(_PG_PAGE if pg else _SQLITE_PAGE), params).all()
    if not rows:
        return b"", after
    body = "\n".join([r[1] for r in rows]) + "\n"
    return body.encode("utf-8"), int(rows[-1][0])

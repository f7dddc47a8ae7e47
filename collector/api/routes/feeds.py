"""The analyst feed of stored events, cursor-paged, NDJSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select

from collector.api.deps import SessionDep, StateDep, require
from collector.api.params import AUTH_RESPONSES, NDJSON_OR_CSV, Cursor
from collector.auth import Role
from collector.models import ApiToken, AuditLog, Centre, Employee, Event, Service

router = APIRouter(prefix="/api/v1/feeds", tags=["feeds"], responses=AUTH_RESPONSES)

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


@router.get("/events", response_class=Response, responses=NDJSON_OR_CSV)
def events_feed(
    session: SessionDep,
    state: StateDep,
    token: Annotated[ApiToken, Depends(require(Role.ANALYST))],
    after: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[Literal["ndjson", "csv"], Query()] = "ndjson",
) -> Response:
    """Events stored after ``after``, oldest first; ``X-Next-Cursor`` is where to go on.

    Events younger than ``feed_settle_s`` are held back, so that an event committed
    late by a parallel writer with a lower id is never skipped.
    """
    horizon = state.clock() - timedelta(seconds=state.settings.feed_settle_s)
    # Core rows, not ORM objects: a page is built from plain tuples (most of the cost
    # of a page used to be building and discarding mapped objects).
    rows = session.execute(
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
    ).all()
    include_emp = state.settings.feed_include_employee
    records: list[dict[str, Any]] = [
        {
            "id": r[0],
            "device": r[1],
            "stream": r[2],
            "seq": r[3],
            "type": r[4],
            "score": r[5],
            "scale": r[6],
            "pressed_at": r[7],  # ISO 8601 when encoded (by orjson; for CSV below)
            "received_at": r[8],
            "day": r[9],
            "centre": r[10],
            "service": r[11],
            "employee": r[12] if include_emp else None,
            "flags": r[13],
            "clock_synced": r[14],
        }
        for r in rows
    ]
    next_cursor = records[-1]["id"] if records else after
    session.add(
        AuditLog(
            at=state.clock(),
            actor=f"token:{token.id}",
            action="feed.events",
            detail={"after": after, "rows": len(records), "format": format},
        )
    )
    session.commit()
    headers = {"X-Next-Cursor": str(next_cursor)}
    if format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, FEED_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(
            {**r, **{k: r[k].isoformat() for k in ("pressed_at", "received_at", "day")}}
            for r in records
        )
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    # orjson: UTF-8 bytes straight away (Armenian as is), datetimes as ISO 8601.
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    return Response(body, media_type="application/x-ndjson; charset=utf-8", headers=headers)

"""The analyst feed of stored events, cursor-paged, NDJSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Annotated, Any, Literal

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
    rows = session.execute(
        select(Event, Centre.code, Service.code, Employee.code)
        .outerjoin(Centre, Centre.id == Event.centre_id)
        .outerjoin(Service, Service.id == Event.service_id)
        .outerjoin(Employee, Employee.id == Event.employee_id)
        .where(Event.id > after, Event.received_at <= horizon)
        .order_by(Event.id)
        .limit(limit)
    ).all()
    include_emp = state.settings.feed_include_employee
    records: list[dict[str, Any]] = []
    for ev, centre, service, employee in rows:
        records.append(
            {
                "id": ev.id,
                "device": ev.device,
                "stream": ev.stream,
                "seq": ev.seq,
                "type": ev.type,
                "score": ev.score,
                "scale": ev.scale,
                "pressed_at": ev.pressed_at.isoformat(),
                "received_at": ev.received_at.isoformat(),
                "day": ev.day.isoformat(),
                "centre": centre,
                "service": service,
                "employee": employee if include_emp else None,
                "flags": ev.flags,
                "clock_synced": ev.clock_synced,
            }
        )
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
        w.writerows(records)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return Response(body, media_type="application/x-ndjson; charset=utf-8", headers=headers)

"""The analyst feeds: stored events (cursor-paged, NDJSON or CSV) and aggregate series
(JSON, CSV or SDMX-CSV)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Query, Response

from collector.edge.api.deps import SessionDep, StateDep, require
from collector.edge.api.params import (
    AUTH_RESPONSES,
    NDJSON_OR_CSV,
    Cursor,
    End,
    Instant,
    Start,
    period,
)
from collector.edge.auth import Role
from collector.models import ApiToken, AuditLog
from collector.reading import feed
from collector.reading import series as series_mod

router = APIRouter(prefix="/api/v1/feeds", tags=["feeds"], responses=AUTH_RESPONSES)


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
    include_emp = state.settings.feed_include_employee
    if format == "csv":
        records = feed.records(session, after, horizon, limit, employee=include_emp)
        rows, next_cursor = len(records), (records[-1]["id"] if records else after)
    else:
        # The page's text made by the database (collector.reading.feed): no object per row.
        body, next_cursor = feed.ndjson(session, after, horizon, limit, employee=include_emp)
        rows = body.count(b"\n")
    session.add(
        AuditLog(
            at=state.clock(),
            actor=f"token:{token.id}",
            action="feed.events",
            detail={"after": after, "rows": rows, "format": format},
        )
    )
    session.commit()
    headers = {"X-Next-Cursor": str(next_cursor)}
    if format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, feed.FEED_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(
            {**r, **{k: r[k].isoformat() for k in ("pressed_at", "received_at", "day")}}
            for r in records
        )
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(body, media_type="application/x-ndjson; charset=utf-8", headers=headers)


#: How far back of the call a nightly job should start its next ``updated_since``: a
#: cell stamped just before this call may commit just after it.
UPDATED_MARGIN = timedelta(minutes=10)

AGGREGATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Rows of the series; `X-Next-Updated-Since` is where a nightly job "
        "goes on from.",
        "content": {
            "application/json": {},
            "text/csv": {},
            "application/vnd.sdmx.data+csv; version=2.0.0": {},
        },
    }
}


@router.get("/aggregates", response_class=Response, responses=AGGREGATE_RESPONSES)
def aggregates_feed(
    session: SessionDep,
    state: StateDep,
    token: Annotated[ApiToken, Depends(require(Role.ANALYST))],
    start: Start = None,
    end: End = None,
    grain: Annotated[
        Literal["day", "week", "month"], Query(description="day, ISO week or month")
    ] = "day",
    by: Annotated[
        Literal["centre", "marz", "service", "channel", "national"],
        Query(description="the grouping (channel: at the desk and online apart)"),
    ] = "centre",
    updated_since: Instant = None,
    format: Annotated[Literal["json", "csv", "sdmx-csv"], Query()] = "json",
) -> Response:
    """Counts per score level, n and CSAT with its Wilson 95 % interval, per period
    (day, ISO week, month) and group (centre, marz, service, the country), one row per
    rating scale. Weeks and months are those that overlap ``start..end``; only the days
    inside it are counted."""
    today = state.today_now().astimezone(ZoneInfo(state.settings.timezone)).date()
    first, last = period(start, end, today)
    since = updated_since
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = series_mod.series(session, first, last, grain=grain, by=by, updated_since=since)
    records = [r.record(grain, by) for r in rows]
    session.add(
        AuditLog(
            at=state.clock(),
            actor=f"token:{token.id}",
            action="feed.aggregates",
            detail={"grain": grain, "by": by, "rows": len(records), "format": format},
        )
    )
    session.commit()
    headers = {"X-Next-Updated-Since": (state.clock() - UPDATED_MARGIN).isoformat()}
    if format == "csv":
        return Response(
            series_mod.to_csv(records), media_type="text/csv; charset=utf-8", headers=headers
        )
    if format == "sdmx-csv":
        return Response(
            series_mod.sdmx_csv(records),
            media_type="application/vnd.sdmx.data+csv; version=2.0.0; charset=utf-8",
            headers=headers,
        )
    body = {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "grain": grain,
        "by": by,
        "updated_since": since.isoformat() if since else None,
        "rows": records,
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)

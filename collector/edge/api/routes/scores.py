"""Scores: centres and services for analysts and managers, staff for their own manager,
rankings over a rolling window, and a public open-data table with disclosure control.

Periods are whole days in the business timezone (``start``..``end`` inclusive), never
finer: an employee's figure for a single press time cannot be singled out.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import OrderedDict
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy import func, select

from collector.edge.api.deps import SessionDep, StateDep, require
from collector.edge.api.params import (
    AUTH_RESPONSES,
    JSON_OR_CSV,
    MAX_DAYS,
    NOT_FOUND,
    End,
    Start,
    period,
)
from collector.edge.auth import Role, scoped_centres
from collector.models import ApiToken, AuditLog, Centre, DailyAggregate
from collector.reading import scores

router = APIRouter(prefix="/api/v1", tags=["scores"], responses=AUTH_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.ANALYST, Role.MANAGER))]
Manager = Annotated[ApiToken, Depends(require(Role.MANAGER))]


def _period(state: Any, start: date | None, end: date | None, days: int = 30) -> tuple[date, date]:
    today = state.today_now().astimezone(ZoneInfo(state.settings.timezone)).date()
    return period(start, end, today, days)


@router.get("/scores/centres")
def centre_scores(
    session: SessionDep, state: StateDep, token: Viewer, start: Start = None, end: End = None
) -> dict[str, Any]:
    """Per centre (a manager: their own) and service: counts per level, n, mean, CSAT
    with its Wilson 95 % interval."""
    first, last = _period(state, start, end)
    allowed = scoped_centres(token.role, token.centres)
    ids = None
    if allowed is not None:
        ids = list(session.scalars(select(Centre.id).where(Centre.code.in_(allowed))))
    return {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "centres": scores.centre_scores(session, first, last, ids),
    }


@router.get("/scores/centres/{code}/employees", responses=NOT_FOUND)
def employee_scores(
    code: str,
    session: SessionDep,
    state: StateDep,
    token: Manager,
    start: Start = None,
    end: End = None,
) -> dict[str, Any]:
    """A centre's staff, for that centre's manager (or an admin): a figure only where
    n >= 5, otherwise "not enough ratings"; ordered by employee code, not by score."""
    allowed = scoped_centres(token.role, token.centres)
    if allowed is not None and code not in allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token does not cover {code}")
    centre = session.scalars(select(Centre).where(Centre.code == code)).one_or_none()
    if centre is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no centre {code}")
    first, last = _period(state, start, end)
    session.add(
        AuditLog(
            at=state.clock(),
            actor=f"token:{token.id}",
            action="scores.employees",
            detail={"centre": code, "start": first.isoformat(), "end": last.isoformat()},
        )
    )
    session.commit()
    return {
        "centre": code,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "min_n": scores.EMPLOYEE_MIN_N,
        "employees": scores.employee_scores(session, centre.id, first, last),
    }


@router.get("/rankings/centres")
def centre_rankings(
    session: SessionDep,
    state: StateDep,
    _token: Viewer,
    end: End = None,
    days: Annotated[int, Query(ge=7, le=MAX_DAYS)] = 30,
    prior_weight: Annotated[float, Query(ge=0, le=1000)] = 15.0,
) -> dict[str, Any]:
    """Centres ranked by the posterior top-two share over a rolling window, shrunk
    towards the national share by ``prior_weight`` pseudo-votes, with intervals."""
    first, last = _period(state, None, end, days)
    return {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "prior_weight": prior_weight,
        "centres": scores.centre_rankings(session, first, last, prior_weight=prior_weight),
    }


#: Open-data answers by ETag: the same period and data give the same bytes.
_OPEN_CACHE: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
_OPEN_CACHE_SIZE = 64


@router.get(
    "/open/centres",
    response_model=None,
    responses={**JSON_OR_CSV, 304: {"description": "Not modified (`If-None-Match`)"}},
)
def open_data(
    request: Request,
    session: SessionDep,
    state: StateDep,
    start: Start = None,
    end: End = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """Public, no token: centre × service CSAT where n >= 10, with complementary
    suppression (hidden cells carry no numbers).

    The answer changes only when aggregates change: it carries an ``ETag`` (the period,
    the format and the newest aggregate change) and may be cached for a minute; an
    ``If-None-Match`` that still holds gets 304, and repeated asks are served from memory.
    """
    first, last = _period(state, start, end)
    newest, cells = session.execute(
        select(func.max(DailyAggregate.changed_at), func.count()).where(
            DailyAggregate.day >= first, DailyAggregate.day <= last
        )
    ).one()
    tag_src = f"{first}|{last}|{format}|{newest}|{cells}|{scores.PUBLIC_MIN_N}"
    etag = '"' + hashlib.sha256(tag_src.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=60"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cached = _OPEN_CACHE.get(etag)
    if cached is None:
        cached = _open_body(session, first, last, format)
        _OPEN_CACHE[etag] = cached
        while len(_OPEN_CACHE) > _OPEN_CACHE_SIZE:
            _OPEN_CACHE.popitem(last=False)
    body, media = cached
    return Response(body, media_type=media, headers=headers)


@router.get(
    "/open/centres.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The open data as CSV"}},
)
def open_data_csv(
    request: Request,
    session: SessionDep,
    state: StateDep,
    start: Start = None,
    end: End = None,
) -> Response:
    """The open data as CSV under a file name: the resource of the data package."""
    return open_data(request, session, state, start, end, "csv")


#: Frictionless Table Schema of the open data CSV (https://specs.frictionlessdata.io/).
OPEN_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "start", "type": "date", "format": "default", "description": "First day"},
        {"name": "end", "type": "date", "format": "default", "description": "Last day"},
        {
            "name": "centre",
            "type": "string",
            "description": "Integrated social service centre (registry code)",
            "constraints": {"required": True},
        },
        {
            "name": "service",
            "type": "string",
            "description": "Service code; NONE where the desk had none",
            "constraints": {"required": True},
        },
        {
            "name": "n",
            "type": "integer",
            "description": "Ratings; empty where the cell is suppressed",
            "constraints": {"minimum": scores.PUBLIC_MIN_N},
        },
        {
            "name": "csat",
            "type": "number",
            "description": "Share of ratings in the top two levels",
            "constraints": {"minimum": 0, "maximum": 1},
        },
        {
            "name": "csat_low",
            "type": "number",
            "description": "Wilson 95 % interval, lower bound",
            "constraints": {"minimum": 0, "maximum": 1},
        },
        {
            "name": "csat_high",
            "type": "number",
            "description": "Wilson 95 % interval, upper bound",
            "constraints": {"minimum": 0, "maximum": 1},
        },
    ],
    "missingValues": [""],
    "primaryKey": ["start", "end", "centre", "service"],
}


@router.get("/open/datapackage.json")
def open_data_package() -> dict[str, Any]:
    """Public: a Frictionless Tabular Data Package describing the open data (its resource
    is `centres.csv` beside it: the last 30 days)."""
    return {
        "profile": "tabular-data-package",
        "name": "gnahat-centre-ratings",
        "title": "Visitor ratings of Armenia's integrated social service centres",
        "description": "Share of satisfied visitors (top two levels) per centre and "
        f"service, with its 95 % interval; cells under {scores.PUBLIC_MIN_N} ratings and "
        "the cells that would reveal them are suppressed.",
        "licenses": [
            {
                "name": "CC-BY-4.0",
                "title": "Creative Commons Attribution 4.0",
                "path": "https://creativecommons.org/licenses/by/4.0/",
            }
        ],
        "resources": [
            {
                "name": "centres",
                "path": "centres.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": OPEN_SCHEMA,
            }
        ],
    }


def _open_body(session: Any, first: date, last: date, format: str) -> tuple[bytes, str]:
    rows = scores.public_table(session, first, last)
    if format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["start", "end", "centre", "service", "n", "csat", "csat_low", "csat_high"])
        for r in rows:
            if r["suppressed"]:
                w.writerow([first, last, r["centre"], r["service"], "", "", "", ""])
            else:
                lo, hi = r["csat_ci95"]
                w.writerow([first, last, r["centre"], r["service"], r["n"], r["csat"], lo, hi])
        return buf.getvalue().encode("utf-8"), "text/csv; charset=utf-8"
    body = {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "min_n": scores.PUBLIC_MIN_N,
        "cells": rows,
    }
    return orjson.dumps(body), "application/json"

"""Liveness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text

from collector.edge.api.deps import SessionDep, StateDep, require
from collector.edge.api.params import AUTH_RESPONSES
from collector.edge.auth import Role
from collector.models import ApiToken, DeviceState

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(session: SessionDep, state: StateDep) -> JSONResponse:
    """200 when the database answers (and the broker link is up, if this process ingests)."""
    body: dict[str, object] = {"status": "ok"}
    try:
        session.execute(text("SELECT 1"))
        body["database"] = "ok"
    except Exception as exc:
        body.update(status="error", database=f"error: {exc.__class__.__name__}")
    ing = state.ingest
    if ing is not None:
        up = ing.connected.is_set()
        body["mqtt"] = "connected" if up else "disconnected"
        body["ingest_queue"] = ing.queue_depth
        if not up:
            body["status"] = "degraded"
        if ing.failing_since is not None:
            # Messages are waiting and none can be committed: "ok" would be a lie.
            body["status"] = "error"
            body["ingest"] = (
                f"commits failing for {time.monotonic() - ing.failing_since:.0f} s; "
                "the broker holds the backlog"
            )
        failing = ing.writer_failing
        if failing is not None:
            body.update(status="error", ingest=f"the writer failed ({failing}); nothing "
                        "committed since")  # fmt: skip
        if not ing.writer_alive and not ing.fatal:
            body.update(status="error", ingest="the writer is not running")
        if ing.fatal:
            body.update(status="error", ingest=ing.fatal)
    code = 200 if body["status"] == "ok" else 503
    return JSONResponse(body, status_code=code)


@router.get(
    "/metrics",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **AUTH_RESPONSES,
    },
)
def metrics(
    session: SessionDep,
    state: StateDep,
    _token: Annotated[ApiToken, Depends(require(Role.TECHNICIAN))],
) -> Response:
    """Prometheus text exposition of this process's counters; a technician (or admin)
    token (`Authorization: Bearer …`, Prometheus' `authorization` scrape setting)."""
    online = session.scalar(
        select(func.count()).select_from(DeviceState).where(DeviceState.online.is_(True))
    )
    state.metrics.devices_online.set(online or 0)
    if state.ingest is not None:
        state.metrics.queue_depth.set(state.ingest.queue_depth)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text

from collector.api.deps import SessionDep, StateDep
from collector.models import DeviceState

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
    if state.ingest is not None:
        up = state.ingest.connected.is_set()
        body["mqtt"] = "connected" if up else "disconnected"
        body["ingest_queue"] = state.ingest.queue_depth
        if not up:
            body["status"] = "degraded"
    code = 200 if body["status"] == "ok" else 503
    return JSONResponse(body, status_code=code)


@router.get("/metrics")
def metrics(session: SessionDep, state: StateDep) -> Response:
    """Prometheus text exposition of this process's counters."""
    online = session.scalar(
        select(func.count()).select_from(DeviceState).where(DeviceState.online.is_(True))
    )
    state.metrics.devices_online.set(online or 0)
    if state.ingest is not None:
        state.metrics.queue_depth.set(state.ingest.queue_depth)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

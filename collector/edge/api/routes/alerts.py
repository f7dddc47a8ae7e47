"""Alerts over the API: list them (a manager: their own centres), acknowledge one with a
comment (that centre's manager, or an admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from collector.edge.api.deps import SessionDep, StateDep, require
from collector.edge.api.params import AUTH_RESPONSES, Problem
from collector.edge.auth import Role, scoped_centres
from collector.models import Alert, ApiToken, Centre
from collector.outbound import alerts

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=AUTH_RESPONSES)
Reader = Annotated[ApiToken, Depends(require(Role.ANALYST, Role.MANAGER, Role.TECHNICIAN))]
Acker = Annotated[ApiToken, Depends(require(Role.MANAGER))]
STATES = {
    "active": alerts.ACTIVE,
    "open": (alerts.OPEN,),
    "acknowledged": (alerts.ACKED,),
    "closed": (alerts.CLOSED,),
    "all": (alerts.OPEN, alerts.ACKED, alerts.CLOSED),
}


@router.get("/alerts")
def list_alerts(
    session: SessionDep,
    token: Reader,
    state: Annotated[
        Literal["active", "open", "acknowledged", "closed", "all"], Query()
    ] = "active",
    lang: Annotated[Literal["hy", "en", "ru"], Query()] = "en",
) -> dict[str, Any]:
    """Alerts by state (default: open or acknowledged), newest first, each with its text
    in ``lang``."""
    allowed = scoped_centres(token.role, token.centres)
    return {"alerts": alerts.listing(session, centres=allowed, states=STATES[state], lang=lang)}


class Ack(BaseModel):
    comment: str = Field(min_length=1, max_length=1000, description="What is being done")


ACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not JSON"},
    404: {"model": Problem, "description": "No such alert"},
    409: {"model": Problem, "description": "The alert has closed already"},
}


@router.post("/alerts/{alert_id}/ack", responses=ACK_RESPONSES)
def acknowledge_alert(
    alert_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: Ack,
    session: SessionDep,
    state: StateDep,
    token: Acker,
) -> dict[str, Any]:
    """Say someone is on it: no more reminders; audited. A comment is required."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    allowed = scoped_centres(token.role, token.centres)
    code = (
        session.scalar(select(Centre.code).where(Centre.id == alert.centre_id))
        if alert.centre_id is not None
        else None
    )
    if allowed is not None and code not in allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token does not cover that centre")
    try:
        alerts.acknowledge(session, alert_id, f"token:{token.id}", body.comment, state.clock())
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return {"id": alert_id, "state": alerts.ACKED}

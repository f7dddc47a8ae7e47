"""Technician views: units, their state, stream gaps, and the quarantine."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select

from collector.edge.api.deps import SessionDep, require
from collector.edge.api.params import AUTH_RESPONSES, NOT_FOUND
from collector.edge.auth import Role
from collector.models import ApiToken, Device, DeviceState, Quarantine, StreamState
from collector.reading.gaps import stream_gaps

router = APIRouter(prefix="/api/v1", tags=["devices"], responses=AUTH_RESPONSES)
Tech = Annotated[ApiToken, Depends(require(Role.TECHNICIAN))]


@router.get("/devices")
def list_devices(session: SessionDep, _token: Tech) -> list[dict[str, Any]]:
    """Every unit the collector knows or has heard from, with presence and gap counts."""
    states = {s.device: s for s in session.scalars(select(DeviceState))}
    streams: dict[str, list[StreamState]] = {}
    for st in session.scalars(select(StreamState)):
        streams.setdefault(st.device, []).append(st)
    known = {d.id: d for d in session.scalars(select(Device))}
    out = []
    for dev_id in sorted(set(states) | set(known)):
        s = states.get(dev_id)
        out.append(
            {
                "device": dev_id,
                "registered": dev_id in known,
                "retired": bool(known[dev_id].retired_at) if dev_id in known else None,
                "online": bool(s and s.online),
                "last_seen": s.last_seen.isoformat() if s and s.last_seen else None,
                "firmware": s.firmware if s else None,
                "health": s.health if s else None,
                "streams": [
                    {
                        "stream": st.stream,
                        "max_seq": st.max_seq,
                        "stored": st.stored,
                        "missing": st.max_seq - st.stored,
                    }
                    for st in streams.get(dev_id, [])
                ],
            }
        )
    return out


@router.get("/devices/{device}/gaps", responses=NOT_FOUND)
def device_gaps(device: str, session: SessionDep, _token: Tech) -> dict[str, Any]:
    """Missing seq ranges per stream of a unit (e.g. 41, 42, 44 stored → [43, 43])."""
    gaps = stream_gaps(session, device)
    if not gaps and session.get(Device, device) is None:
        raise HTTPException(404, f"no device {device!r}")
    return {"device": device, "streams": {s: [list(r) for r in g] for s, g in gaps.items()}}


@router.get("/quarantine")
def list_quarantine(
    session: SessionDep,
    _token: Tech,
    reason: str | None = None,
    include_resolved: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Quarantined messages with their reason (raw bytes shown as text where UTF-8)."""
    q = select(Quarantine).order_by(Quarantine.id.desc()).limit(limit)
    if reason:
        q = q.where(Quarantine.reason == reason)
    if not include_resolved:
        q = q.where(Quarantine.resolved_at.is_(None))
    return [
        {
            "id": e.id,
            "topic": e.topic,
            "reason": e.reason,
            "detail": e.detail,
            "device": e.device,
            "stream": e.stream,
            "seq": e.seq,
            "count": e.count,
            "first_seen": e.first_seen.isoformat(),
            "last_seen": e.last_seen.isoformat(),
            "resolution": e.resolution,
            "raw": e.raw.decode("utf-8", "replace")[:4096],
        }
        for e in session.scalars(q)
    ]

"""Fleet watch: each unit of a centre, as its manager and technicians need to see it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.models import WEB_STREAM, Assignment, Device, DeviceState, StreamState


def centre_units(session: Session, centre_id: int, now: datetime) -> list[dict[str, Any]]:
    """The units assigned to the centre now, by desk: presence, when last heard (any
    message) and when its last rating came, the outbox on the unit (depth, age of the
    oldest unsent), its clock, and the ratings known missing (gaps in its streams)."""
    rows = session.execute(
        select(Assignment.device_id, Assignment.desk)
        .join(Device, Device.id == Assignment.device_id)
        .where(
            Assignment.centre_id == centre_id,
            Assignment.valid_from <= now,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            (Device.retired_at.is_(None)) | (Device.retired_at > now),
        )
        .order_by(Assignment.desk)
    ).all()
    devices = [d for d, _ in rows]
    states = {
        s.device: s
        for s in session.scalars(select(DeviceState).where(DeviceState.device.in_(devices)))
    }
    streams = {
        d: (last, missing)
        for d, last, missing in session.execute(
            select(
                StreamState.device,
                func.max(StreamState.last_seen),
                func.sum(StreamState.max_seq - StreamState.stored),
            )
            # The unit's own streams: a phone rating on its desk says nothing of the unit.
            .where(StreamState.device.in_(devices), StreamState.stream != WEB_STREAM)
            .group_by(StreamState.device)
        )
    }
    out = []
    for device, desk in rows:
        st = states.get(device)
        health = (st.health or {}) if st is not None else {}
        last_event, missing = streams.get(device, (None, 0))
        oldest = health.get("oldest_unacked_s")
        out.append(
            {
                "device": device,
                "desk": desk,
                "online": bool(st and st.online),
                "last_seen": st.last_seen if st else None,
                "last_event": last_event,
                "queue_depth": health.get("queue_depth"),
                "oldest_unacked_min": None if oldest is None else int(float(oldest) // 60),
                "clock_synced": health.get("clock_synced"),
                "health_at": st.health_at if st else None,
                "missing": max(0, int(missing or 0)),
            }
        )
    return out

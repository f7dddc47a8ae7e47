"""Gap detection per (device, stream): which seq numbers never arrived."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.models import Event, StreamState


def stream_gaps(session: Session, device: str) -> dict[str, list[tuple[int, int]]]:
    """Missing inclusive seq ranges for each stream of ``device`` (empty list: no gap)."""
    prev = func.lag(Event.seq).over(partition_by=Event.stream, order_by=Event.seq)
    inner = select(Event.stream, Event.seq, prev.label("prev")).where(Event.device == device)
    sub = inner.subquery()
    rows = session.execute(
        select(sub.c.stream, sub.c.seq, sub.c.prev).where(
            (sub.c.prev.is_(None) & (sub.c.seq > 1)) | (sub.c.seq - sub.c.prev > 1)
        )
    ).all()
    purged = dict(
        session.execute(
            select(StreamState.stream, StreamState.purged_through).where(
                StreamState.device == device
            )
        ).all()
    )
    out: dict[str, list[tuple[int, int]]] = {s: [] for s in purged}
    for stream, seq, before in rows:
        # Seqs up to purged_through were stored (retention deleted them since): no gap.
        first = max((before or 0) + 1, purged.get(stream, 0) + 1)
        if first <= seq - 1:
            out.setdefault(stream, []).append((first, seq - 1))
    for ranges in out.values():
        ranges.sort()
    return out

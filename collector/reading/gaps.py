"""Gap detection per (device, stream): which seq numbers never arrived."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector.models import Event, PurgedRange, StreamState


def stream_gaps(session: Session, device: str) -> dict[str, list[tuple[int, int]]]:
    """Missing inclusive seq ranges for each stream of ``device`` (empty list: no gap).

    A seq is covered when its event is stored, or was stored and deleted by retention
    (the prefix ``purged_through`` and the ``purged_ranges``); every hole below the
    highest covered seq is a gap.
    """
    # Runs of consecutive stored seqs ("gaps and islands"): seq - row_number is constant
    # along a run.
    island = Event.seq - func.row_number().over(partition_by=Event.stream, order_by=Event.seq)
    inner = select(Event.stream, Event.seq, island.label("island")).where(Event.device == device)
    sub = inner.subquery()
    covered: dict[str, list[tuple[int, int]]] = {}
    for stream, lo, hi in session.execute(
        select(sub.c.stream, func.min(sub.c.seq), func.max(sub.c.seq)).group_by(
            sub.c.stream, sub.c.island
        )
    ):
        covered.setdefault(stream, []).append((lo, hi))
    for stream, through in session.execute(
        select(StreamState.stream, StreamState.purged_through).where(StreamState.device == device)
    ):
        covered.setdefault(stream, [])
        if through > 0:
            covered[stream].append((1, through))
    for stream, lo, hi in session.execute(
        select(PurgedRange.stream, PurgedRange.seq_from, PurgedRange.seq_to).where(
            PurgedRange.device == device
        )
    ):
        covered.setdefault(stream, []).append((lo, hi))
    out: dict[str, list[tuple[int, int]]] = {}
    for stream, spans in covered.items():
        holes: list[tuple[int, int]] = []
        nxt = 1
        for lo, hi in sorted(spans):
            if lo > nxt:
                holes.append((nxt, lo - 1))
            nxt = max(nxt, hi + 1)
        out[stream] = holes
    return out

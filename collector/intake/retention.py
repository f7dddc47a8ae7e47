"""Retention of raw events: delete old ones, keep their aggregates and exact dedup.

Employee attributions are personal data; after ``GNAHAT_RETENTION_DAYS`` the raw
events of a day go, while the daily aggregates (what managers, analysts and the
M&E IS use) stay. Every event of a day before the cutoff is deleted, gaps or not:
a gap never holds personal data back. What was deleted is remembered as seq ranges
— the gapless prefix ``purged_through`` and ``purged_ranges`` beyond it — so a copy
arriving years later is still acknowledged as a duplicate and gap detection still
sees no gap there; a seq that never came is in no range, stays a gap (reported), and
is stored if it ever arrives. Each stream is its own short transaction, so ingest
never waits on a whole run. Resolved quarantine entries older than the cutoff go
too; unresolved ones wait for an operator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.aggregates import lock as lock_aggregates
from collector.models import AuditLog, Event, Meta, PurgedRange, Quarantine, StreamState
from collector.reading.gaps import stream_gaps
from collector.registry import bump_registry_version
from device import protocol as p


@dataclass
class RetentionReport:
    cutoff: date
    events_deleted: int = 0
    streams_purged: int = 0
    quarantine_deleted: int = 0
    gaps: list[tuple[str, str, int, int]] = field(default_factory=list)
    """Gaps (never-arrived seqs) among the deleted events: device, stream, from, to."""

    def __str__(self) -> str:
        text = (
            f"raw events before {self.cutoff}: {self.events_deleted} deleted from "
            f"{self.streams_purged} stream(s); {self.quarantine_deleted} resolved quarantine "
            "entries deleted; daily aggregates kept"
        )
        if self.gaps:
            text += f"; {len(self.gaps)} gap(s) among them (never arrived; still reported):"
            text += "".join(f"\n  {d} {s} {lo}..{hi}" for d, s, lo, hi in self.gaps)
        return text


def cutoff_for(days: int, now: datetime, timezone: str) -> date:
    """The first day whose raw events are kept."""
    if days < 1:
        raise ValueError("retention is off (GNAHAT_RETENTION_DAYS = 0); give days >= 1")
    return now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=days)


def apply_retention(
    sessions: sessionmaker[Session],
    cutoff: date,
    *,
    now: datetime,
    dry_run: bool = False,
    actor: str = "cli",
    batch: int = 10_000,
    on_batch: Callable[[str, str, int], None] | None = None,
) -> RetentionReport:
    """Delete raw events of days before ``cutoff`` (see the module docstring).

    Set-based, in batches of at most ``batch`` events of one stream, each its own
    transaction (ingest of that stream waits at most one batch); what a batch deleted
    is recorded in the same transaction, so a run killed midway resumes where it
    stopped and ends as an uninterrupted one. ``on_batch`` is told after each commit.
    """
    report = RetentionReport(cutoff)
    with sessions() as s:
        streams = s.execute(
            select(StreamState.device, StreamState.stream).order_by(
                StreamState.device, StreamState.stream
            )
        ).all()
    for device, stream in streams:
        after = 0
        while True:  # bounded batches, each committed: a kill loses at most one batch
            with sessions() as s, s.begin():
                n, after = _purge_stream(
                    s, device, stream, cutoff, report, dry_run=dry_run, after=after, limit=batch
                )
            if n and not dry_run and on_batch is not None:
                on_batch(device, stream, n)
            if dry_run or n < batch:
                break
    with sessions() as s, s.begin():
        before = datetime.combine(cutoff, time(), tzinfo=UTC)
        old_quarantine = select(Quarantine.id).where(
            Quarantine.resolved_at.is_not(None), Quarantine.resolved_at < before
        )
        report.quarantine_deleted = len(s.scalars(old_quarantine).all())
        if dry_run:
            return report
        s.execute(delete(Quarantine).where(Quarantine.id.in_(old_quarantine)))
        row = s.get(Meta, "purged_before")
        if row is None:
            s.add(Meta(key="purged_before", value=cutoff.isoformat()))
        elif not row.value or date.fromisoformat(row.value) < cutoff:
            row.value = cutoff.isoformat()
        bump_registry_version(s)  # ingest reloads its snapshot, with the watermarks
        s.add(
            AuditLog(
                at=now,
                actor=actor,
                action="retention.apply",
                detail={
                    "cutoff": cutoff.isoformat(),
                    "events": report.events_deleted,
                    "quarantine": report.quarantine_deleted,
                    "gaps": [list(g) for g in report.gaps],
                },
            )
        )
    return report


def _purge_stream(
    s: Session,
    device: str,
    stream: str,
    cutoff: date,
    report: RetentionReport,
    *,
    dry_run: bool,
    after: int,
    limit: int,
) -> tuple[int, int]:
    """One batch of one stream; returns (events in it, last seq of it)."""
    query = (
        select(Event.seq)
        .where(
            Event.device == device,
            Event.stream == stream,
            Event.day < cutoff,
            Event.seq > after,
        )
        .order_by(Event.seq)
    )
    old = list(s.scalars(query if dry_run else query.limit(limit)))
    if not old:
        return 0, after
    st = s.get(StreamState, (device, stream), with_for_update=not dry_run)
    assert st is not None
    if after == 0:
        report.streams_purged += 1
    report.events_deleted += len(old)
    ranges = p.ranges_from_seqs(old)
    # Gaps among what goes: holes between the deleted seqs that no stored or purged seq
    # covers. They stay gaps; say so, since the raw neighbours that framed them go.
    holes = {(lo, hi) for lo, hi in stream_gaps(s, device).get(stream, [])}
    first, last = ranges[0][0], ranges[-1][1]
    floor = after if after else first
    report.gaps += [(device, stream, lo, hi) for lo, hi in sorted(holes) if floor < lo <= last]
    if dry_run:
        return len(old), last
    # Under ingest's own lock, and the registry version bumped in the same commit: a
    # writer that takes the lock after this batch sees its ranges at once (a re-send of
    # a press deleted here is a duplicate), not at the end of the run.
    lock_aggregates(s)
    bump_registry_version(s)
    s.execute(
        delete(Event).where(
            Event.device == device,
            Event.stream == stream,
            Event.day < cutoff,
            Event.seq >= first,
            Event.seq <= last,
        )
    )
    through = st.purged_through
    for lo, hi in ranges:
        if lo <= through + 1:
            through = max(through, hi)  # extends the gapless prefix
        else:
            s.add(PurgedRange(device=device, stream=stream, seq_from=lo, seq_to=hi))
    st.purged_through = through
    # Ranges now inside the prefix are redundant.
    s.execute(
        delete(PurgedRange).where(
            PurgedRange.device == device,
            PurgedRange.stream == stream,
            PurgedRange.seq_to <= through,
        )
    )
    return len(old), last

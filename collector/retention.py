"""Retention of raw events: delete old ones, keep their aggregates and exact dedup.

Employee attributions are personal data; after ``GNAHAT_RETENTION_DAYS`` the raw
events of a day may go, while the daily aggregates (what managers, analysts and the
M&E IS use) stay. Deletion is per ``(device, stream)`` and only ever a gapless prefix
of seq numbers whose days are all older than the cutoff: ``purged_through`` then
says "every seq up to here was stored", so a copy arriving years later is still
acknowledged as a duplicate, and gap detection still sees no gap there. Resolved
quarantine entries older than the cutoff go too; unresolved ones wait for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from collector.models import AuditLog, Event, Meta, Quarantine, StreamState
from collector.registry import bump_registry_version


@dataclass
class RetentionReport:
    cutoff: date
    events_deleted: int = 0
    streams_purged: int = 0
    quarantine_deleted: int = 0

    def __str__(self) -> str:
        return (
            f"raw events before {self.cutoff}: {self.events_deleted} deleted from "
            f"{self.streams_purged} stream(s); {self.quarantine_deleted} resolved quarantine "
            "entries deleted; daily aggregates kept"
        )


def cutoff_for(days: int, now: datetime, timezone: str) -> date:
    """The first day whose raw events are kept."""
    if days < 1:
        raise ValueError("retention is off (GNAHAT_RETENTION_DAYS = 0); give days >= 1")
    return now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=days)


def apply_retention(
    session: Session, cutoff: date, *, now: datetime, dry_run: bool = False, actor: str = "cli"
) -> RetentionReport:
    """Delete raw events of days before ``cutoff`` (see the module docstring)."""
    report = RetentionReport(cutoff)
    for st in session.scalars(select(StreamState).order_by(StreamState.device)).all():
        start = st.purged_through
        last = start
        rows = session.execute(
            select(Event.seq, Event.day)
            .where(Event.device == st.device, Event.stream == st.stream, Event.seq > start)
            .order_by(Event.seq)
            .execution_options(yield_per=5000)
        )
        for seq, day in rows:
            if seq != last + 1 or day >= cutoff:
                break  # a gap, or a day still kept: the prefix ends here
            last = seq
        rows.close()
        if last == start:
            continue
        report.streams_purged += 1
        report.events_deleted += last - start
        if not dry_run:
            session.execute(
                delete(Event).where(
                    Event.device == st.device,
                    Event.stream == st.stream,
                    Event.seq > start,
                    Event.seq <= last,
                )
            )
            st.purged_through = last
    before = datetime.combine(cutoff, time(), tzinfo=UTC)
    old_quarantine = select(Quarantine.id).where(
        Quarantine.resolved_at.is_not(None), Quarantine.resolved_at < before
    )
    report.quarantine_deleted = len(session.scalars(old_quarantine).all())
    if dry_run:
        return report
    session.execute(delete(Quarantine).where(Quarantine.id.in_(old_quarantine)))
    row = session.get(Meta, "purged_before")
    if row is None:
        session.add(Meta(key="purged_before", value=cutoff.isoformat()))
    elif not row.value or date.fromisoformat(row.value) < cutoff:
        row.value = cutoff.isoformat()
    bump_registry_version(session)  # ingest reloads its snapshot, with the watermarks
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action="retention.apply",
            detail={
                "cutoff": cutoff.isoformat(),
                "events": report.events_deleted,
                "quarantine": report.quarantine_deleted,
            },
        )
    )
    return report

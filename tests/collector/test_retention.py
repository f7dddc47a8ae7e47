"""Retention: old raw events go, aggregates stay, dedup and gap detection stay exact."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.retention import apply_retention, cutoff_for
from collector.intake.store import Store
from collector.models import DailyAggregate, Event, PurgedRange, Quarantine, StreamState
from collector.reading.gaps import stream_gaps
from tests.collector.helpers import DEV, T0, event, msg

CUTOFF = date(2026, 11, 26)


def cells(sessions: sessionmaker[Session]) -> list[tuple[object, ...]]:
    with sessions() as s:
        return [
            (a.day, a.centre_id, a.employee_id, a.service_id, a.n1, a.n2, a.n3, a.n4, a.n)
            for a in s.scalars(select(DailyAggregate).order_by(DailyAggregate.day))
        ]


def seqs(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return list(s.scalars(select(Event.seq).where(Event.device == DEV).order_by(Event.seq)))


@pytest.fixture
def filled(store: Store, sessions: sessionmaker[Session]) -> Store:
    old = [msg(event(i, score=1 + i % 4)) for i in range(1, 11)]  # the 24th
    new = [msg(event(i, at=T0 + timedelta(days=3))) for i in range(11, 16)]  # the 27th
    after_gap = [msg(event(17, at=T0))]  # old, but beyond a gap (16 never came)
    store.process(old + new + after_gap)
    store.process([msg(b"not json")])  # one quarantine entry, then resolve it
    with sessions() as s, s.begin():
        q = s.scalars(select(Quarantine)).one()
        q.resolved_at, q.resolution = T0, "operator"
    store.process([msg(b"still not json", device="am-sh-gyumri1-d02")])  # unresolved
    return store


def test_old_events_go_across_gaps_aggregates_stay(
    filled: Store, sessions: sessionmaker[Session]
) -> None:
    before = cells(sessions)
    dry = apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400), dry_run=True)
    assert (dry.events_deleted, dry.quarantine_deleted) == (11, 1)
    assert len(seqs(sessions)) == 16  # a dry run changes nothing
    report = apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400))
    assert (report.events_deleted, report.streams_purged, report.quarantine_deleted) == (11, 1, 1)
    # 17 is old too: a gap before it (16 never came) no longer holds it back.
    assert seqs(sessions) == [11, 12, 13, 14, 15]
    assert report.gaps == [(DEV, "s1", 16, 16)] and "16..16" in str(report)
    assert cells(sessions) == before
    with sessions() as s:
        assert s.scalar(select(StreamState.purged_through)) == 10
        assert [(r.seq_from, r.seq_to) for r in s.scalars(select(PurgedRange))] == [(17, 17)]
        assert stream_gaps(s, DEV) == {"s1": [(16, 16)]}  # 1..10 and 17 are not a gap
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 1  # unresolved kept
    assert apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400)).events_deleted == 0


def test_a_deleted_event_sent_again_is_a_duplicate(
    filled: Store, sessions: sessionmaker[Session]
) -> None:
    apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400))
    before = cells(sessions)
    # Re-sends of deleted ones (in the prefix and beyond the gap), and the missing one.
    result = filled.process([msg(event(5)), msg(event(17)), msg(event(16))])
    assert (result.stored, result.duplicates) == (1, 2)
    assert result.acks == {(DEV, "s1"): {5, 16, 17}}
    assert seqs(sessions) == [11, 12, 13, 14, 15, 16]
    with sessions() as s:
        assert stream_gaps(s, DEV) == {"s1": []}

    def day_total(rows: list[tuple[object, ...]]) -> int:
        return sum(int(str(c[-1])) for c in rows if c[0] == date(2026, 11, 24))

    assert day_total(cells(sessions)) == day_total(before) + 1  # only seq 16 is new


def test_rebuilding_aggregates_leaves_purged_days_alone(
    filled: Store, sessions: sessionmaker[Session]
) -> None:
    apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400))
    before = cells(sessions)
    filled.rebuild_all_aggregates()
    assert cells(sessions) == before


def test_cutoff_and_the_command(
    filled: Store,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from collector.cli import main

    assert cutoff_for(30, T0, "Asia/Yerevan") == date(2026, 10, 25)
    with pytest.raises(ValueError, match="retention is off"):
        cutoff_for(0, T0, "Asia/Yerevan")
    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    assert main(["retention", "apply"]) == 2  # GNAHAT_RETENTION_DAYS is 0: off
    assert "retention is off" in capsys.readouterr().err
    assert main(["retention", "apply", "--days", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would delete: raw events before")
    assert main(["retention", "apply", "--days", "1"]) == 0
    assert "daily aggregates kept" in capsys.readouterr().out


def test_the_late_missing_event_goes_at_the_next_run_and_its_gap_closes(
    filled: Store, sessions: sessionmaker[Session]
) -> None:
    apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400))
    filled.process([msg(event(16, at=T0))])  # an old day too
    report = apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400))
    assert report.events_deleted == 1 and report.gaps == []
    assert seqs(sessions) == [11, 12, 13, 14, 15]
    with sessions() as s:
        assert stream_gaps(s, DEV) == {"s1": []}
    assert filled.process([msg(event(16, at=T0))]).duplicates == 1


def test_a_retention_killed_midway_resumes_and_ends_like_an_uninterrupted_one(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """Bounded batches, each committed: a kill after the second batch, then a new run,
    end with the same rows, ranges and gaps as one run without the kill."""
    from collector.models import PurgedRange

    seqs_sent = [i for i in range(1, 41) if i not in (7, 23)]  # two gaps
    store.process([msg(event(i, at=T0)) for i in seqs_sent])  # all on an old day
    store.process([msg(event(i, at=T0 + timedelta(days=3))) for i in (41, 42)])

    class Killed(Exception):
        pass

    batches: list[int] = []

    def kill_after_two(device: str, stream: str, n: int) -> None:
        batches.append(n)
        if len(batches) == 2:
            raise Killed

    with pytest.raises(Killed):
        apply_retention(
            sessions, CUTOFF, now=T0 + timedelta(days=400), batch=5, on_batch=kill_after_two
        )
    assert seqs(sessions) != [41, 42]  # stopped midway, what it did is committed
    report = apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400), batch=5)
    assert seqs(sessions) == [41, 42]
    with sessions() as s:
        through = s.scalar(select(StreamState.purged_through))
        ranges = sorted((r.seq_from, r.seq_to) for r in s.scalars(select(PurgedRange)))
        gaps = stream_gaps(s, DEV)
    # As one uninterrupted run would leave it: 1..6 a prefix, the rest as ranges.
    assert through == 6
    covered = {q for lo, hi in ranges for q in range(lo, hi + 1)}
    assert covered == set(seqs_sent) - set(range(1, 7))
    assert gaps == {"s1": [(7, 7), (23, 23)]}
    assert report.events_deleted == len(seqs_sent) - 10  # the rest, after the 2 batches of 5
    assert filled_dup(store) == 1


def filled_dup(store: Store) -> int:
    """A re-send of a deleted event is still a duplicate."""
    return store.process([msg(event(12, at=T0))]).duplicates


def test_a_copy_of_a_just_purged_press_during_the_run_is_a_duplicate(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """Ingest sees each purged range as soon as its batch commits, not at the end of the
    run: a unit's re-send of a press the run just deleted is a duplicate, never counted
    again (3 presses stay n = 3)."""
    store.process([msg([event(i, score=4) for i in (1, 2, 3)])])
    other = "am-sh-gyumri1-d02"
    store.process([msg([event(1, device=other, stream="o")], device=other)])
    before = cells(sessions)
    store.process([msg(event(99, at=T0 + timedelta(days=3)))])  # the store's snapshot is warm
    copies = []

    def meanwhile(device: str, stream: str, n: int) -> None:
        if device == DEV:  # DEV's presses are gone and the run goes on with the next unit
            copies.append(store.process([msg(event(2, score=4))]))

    apply_retention(sessions, CUTOFF, now=T0 + timedelta(days=400), on_batch=meanwhile)
    [copy] = copies
    assert (copy.stored, copy.duplicates) == (0, 1) and copy.ack_messages()
    with sessions() as s:
        assert s.scalar(select(func.count()).where(Event.device == DEV, Event.seq == 2)) == 0
    assert [c for c in cells(sessions) if c[0] < CUTOFF] == [c for c in before if c[0] < CUTOFF]

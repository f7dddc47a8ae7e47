"""The aggregate series buckets days into ISO weeks and months in the database: every
week and month row equals the sum of its days' rows, on SQLite and PostgreSQL, with ISO
weeks that straddle months and partial periods at both edges. By month, whole months
come from the monthly cells: their counts and their ``updated_at`` (the newest change
of any day behind the row) must be what the days say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from collector.intake.store import Store
from collector.reading import series as series_mod
from tests.collector.helpers import event, msg

DEVICES = ["am-er-avan-d01", "am-sh-gyumri1-d01", "am-lo-vanadzor-d01"]


def test_weeks_and_months_are_the_sums_of_their_days(sessions: sessionmaker[Session]) -> None:
    stamped = [datetime(2026, 4, 1, 12, 0, tzinfo=UTC)]
    store = Store(sessions, clock=lambda: stamped[0])
    start = datetime(2026, 1, 3, 7, 0, tzinfo=UTC)  # the registry's units start in 2026
    messages = []
    for day in range(75):
        for k, device in enumerate(DEVICES):
            if (day + k) % 4 == 0:
                continue  # some centres have days without ratings
            at = start + timedelta(days=day, minutes=30 * k)
            e = event(day + 1, device=device, score=1 + (day * 7 + k) % 4, at=at)
            messages.append(msg(e, device=device))
    # Batches stamped at different times, in no order of day, and a late event into the
    # middle of February: a month's updated_at must be its newest day's.
    for i in range(0, len(messages), 37):
        stamped[0] += timedelta(minutes=7)
        store.process(messages[i : i + 37][::-1])
    stamped[0] += timedelta(hours=5)
    late = event(500, device=DEVICES[0], score=2, at=datetime(2026, 2, 14, 9, 0, tzinfo=UTC))
    store.process([msg(late, device=DEVICES[0])])
    first, last = date(2026, 1, 7), date(2026, 3, 4)  # Wednesdays: both edges cut a week
    with sessions() as s:
        for by in ("centre", "marz", "service", "national"):
            days = series_mod.series(s, first, last, grain="day", by=by)
            assert days
            for grain in ("week", "month"):
                expected: dict[tuple[str, str, int], tuple[list[int], datetime]] = {}
                for row in days:
                    key = (
                        series_mod.bucket(date.fromisoformat(row.period), grain),
                        row.group,
                        row.scale,
                    )
                    levels, newest = expected.get(key, ([0] * row.scale, row.updated_at))
                    levels = [a + b for a, b in zip(levels, row.counts.levels, strict=True)]
                    expected[key] = (levels, max(newest, row.updated_at))
                got = {
                    (r.period, r.group, r.scale): (r.counts.levels, r.updated_at)
                    for r in series_mod.series(s, first, last, grain=grain, by=by)
                }
                assert got == expected, (by, grain)
        weeks = {r.period for r in series_mod.series(s, first, last, grain="week")}
        assert {"2026-W02", "2026-W05", "2026-W09", "2026-W10"} <= weeks
        months = series_mod.series(s, first, last, grain="month", by="national")
        assert [r.period for r in months] == ["2026-01", "2026-02", "2026-03"]
        assert [r.updated_at == stamped[0] for r in months] == [False, True, False]
        since = series_mod.series(s, first, last, grain="month", updated_since=stamped[0])
        assert [r.period for r in since] == ["2026-02"]

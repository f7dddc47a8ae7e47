"""Store: exactly-once rows, ties by press time, quarantine with reasons, acks, aggregates."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, timedelta

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.store import ORIGIN_ONLINE, Received, Store
from collector.models import (
    FACTORS_SQL,
    DailyAggregate,
    Event,
    Flag,
    HourlyCount,
    MonthlyAggregate,
    Quarantine,
    StreamState,
)
from tests.collector.helpers import DEV, T0, event, msg, replace


def count(sessions: sessionmaker[Session], model: object) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[arg-type]


def test_store_dedup_ack_and_aggregate(store: Store, sessions: sessionmaker[Session]) -> None:
    r1 = store.process([msg(event(1)), msg(event(2, score=1)), msg(event(1))])
    assert (r1.stored, r1.duplicates) == (2, 1)
    assert r1.acks == {(DEV, "s1"): {1, 2}}
    r2 = store.process([msg([event(2), event(3)])])
    assert (r2.stored, r2.duplicates) == (1, 1)
    assert count(sessions, Event) == 3
    with sessions() as s:
        agg = s.scalars(select(DailyAggregate)).one()
        assert (agg.day, agg.n, agg.n4, agg.n1) == (date(2026, 11, 24), 3, 2, 1)
        ev = s.scalars(select(Event).where(Event.seq == 1)).one()
        assert ev.employee_id is not None and ev.service_id is not None
        st = s.scalars(select(StreamState)).one()
        assert (st.max_seq, st.stored) == (3, 3)


def test_unknown_device_and_mismatch_are_quarantined_and_acked(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    r = store.process(
        [
            msg(event(1, device="am-xx-nowhere-d01"), device="am-xx-nowhere-d01"),
            msg(event(1), device="am-sh-gyumri1-d04"),
        ]
    )
    assert r.stored == 0
    assert dict(r.quarantined) == {"unknown_device": 1, "device_mismatch": 1}
    assert r.acks == {("am-xx-nowhere-d01", "s1"): {1}}
    assert count(sessions, Quarantine) == 2


def test_unsynced_clock_is_corrected_within_one_boot(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    received = T0 + timedelta(hours=1)
    e = event(
        1,
        clock_synced=False,
        at=T0 - timedelta(days=400),
        mono_ms=1000,
        sent_mono_ms=61_000,
        sent_boot="b1",
    )
    # Sent by the next boot: no receipt correction, but boot b1 has a trusted press
    # (seq 1): the monotonic clock gives its distance to it exactly.
    same_boot = event(2, clock_synced=False, mono_ms=31_000, sent_mono_ms=5, sent_boot="b2")
    store.process([msg(e, at=received), msg(same_boot, at=received)])
    with sessions() as s:
        a, b = s.scalars(select(Event).order_by(Event.seq)).all()
        assert a.pressed_at == received - timedelta(seconds=60)
        assert a.flags & Flag.CLOCK_CORRECTED
        assert b.pressed_at == received - timedelta(seconds=30)
        assert b.flags & Flag.CLOCK_CORRECTED and not b.flags & Flag.CLOCK_UNTRUSTED


def test_burst_is_flagged_kept_and_left_out(store: Store, sessions: sessionmaker[Session]) -> None:
    mash = [
        replace(event(i, score=1), at=(T0 + timedelta(seconds=i)).isoformat()) for i in range(1, 13)
    ]
    store.process([msg(m) for m in mash])
    with sessions() as s:
        flags = s.scalars(select(Event.flags)).all()
        assert len(flags) == 12 and all(f & Flag.BURST for f in flags)
        agg = s.scalars(select(DailyAggregate)).one()
        assert (agg.n, agg.excluded) == (0, 12)


def test_replay_after_registry_fix(store: Store, sessions: sessionmaker[Session]) -> None:
    from collector.registry import import_registry

    new = "am-sh-gyumri1-d99"
    store.process([msg(event(1, device=new), device=new)])
    assert store.replay_quarantine() == {"kept": 1}
    with sessions() as s, s.begin():
        import_registry(
            s,
            {
                "devices": f"device,kind,scale\n{new},buttons,4\n",
                "assignments": f"device,centre,desk,valid_from\n{new},SH-GYUMRI1,99,2026-01-01\n",
            },
        )
    assert store.replay_quarantine() == {"stored": 1}
    assert count(sessions, Event) == 1
    assert store.replay_quarantine() == {}


def test_incremental_aggregates_equal_a_full_rebuild(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """Bursts that grow across batches, late events and duplicates: the cells kept
    incrementally equal the cells rebuilt from events."""
    import random

    rng = random.Random(7)
    devices = ["am-sh-gyumri1-d01", "am-sh-gyumri1-d02", "am-er-avan-d01"]
    seqs = dict.fromkeys(devices, 0)
    clock = dict.fromkeys(devices, 0)
    batches = []
    for _ in range(30):
        batch = []
        for _ in range(rng.randint(1, 15)):
            d = rng.choice(devices)
            seqs[d] += 1
            clock[d] += rng.choice([1, 1, 1, 1, 1, 30, 600])
            offset = timedelta(seconds=clock[d])
            if rng.random() < 0.1:
                offset -= timedelta(days=3)  # a late event from last week
            elif rng.random() < 0.1:
                offset -= timedelta(days=40)  # from last month
            e = replace(
                event(seqs[d], device=d, score=rng.randint(1, 4)), at=(T0 + offset).isoformat()
            )
            batch.append(msg(e, device=d))
            if rng.random() < 0.1:
                batch.append(msg(e, device=d))  # a duplicate
        batches.append(batch)
    for batch in batches:
        store.process(batch)

    def cells() -> dict[tuple[object, ...], tuple[int, ...]]:
        with sessions() as s:
            return {
                (a.day, a.centre_id, a.employee_id, a.service_id, a.scale): (
                    a.n1,
                    a.n2,
                    a.n3,
                    a.n4,
                    a.n5,
                    a.n,
                    a.excluded,
                )
                for a in s.scalars(select(DailyAggregate))
                if a.n or a.excluded
            }

    def months() -> dict[tuple[object, ...], tuple[int, ...]]:
        with sessions() as s:
            return {
                (m.month, m.centre_id, m.employee_id, m.service_id, m.scale): (
                    m.n1, m.n2, m.n3, m.n4, m.n5, m.n, m.excluded,
                )
                for m in s.scalars(select(MonthlyAggregate))
                if m.n or m.excluded
            }  # fmt: skip

    def hours() -> dict[tuple[object, ...], int]:
        with sessions() as s:
            return {(h.centre_id, h.day, h.utc_hour): h.n for h in s.scalars(select(HourlyCount))}

    incremental = cells()
    assert any(c[6] for c in incremental.values())  # some bursts were flagged
    assert len({k[0].month for k in incremental}) == 2  # the cells span two months
    # The monthly cells are the daily ones summed by month, the hourly counts the counted
    # presses by local day and UTC hour: worked out here from the rows themselves.
    by_month: dict[tuple[object, ...], list[int]] = {}
    for k, v in incremental.items():
        acc = by_month.setdefault((k[0].replace(day=1), *k[1:]), [0] * 7)
        for i, x in enumerate(v):
            acc[i] += x
    expected_months = {k: tuple(v) for k, v in by_month.items()}
    expected_hours: dict[tuple[object, ...], int] = {}
    with sessions() as s:
        for e in s.scalars(select(Event).where(Event.type == "rating")):
            if not e.flags & Flag.BURST:
                key = (e.centre_id, e.day, e.pressed_at.astimezone(UTC).hour)
                expected_hours[key] = expected_hours.get(key, 0) + 1
    assert months() == expected_months
    assert {k: n for k, n in hours().items() if n} == expected_hours
    with sessions() as s, s.begin():  # the rebuild makes them again from nothing
        s.execute(sql_delete(MonthlyAggregate))
        s.execute(sql_delete(HourlyCount))
    store.rebuild_all_aggregates()
    assert cells() == incremental
    assert months() == expected_months
    assert hours() == expected_hours


def test_unknown_fields_and_armenian_are_kept_in_the_row(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    e = replace(event(1), extra={"kiosk_lang": "hy", "note": "Շնորհակալություն։ և"})
    store.process([msg(e)])
    with sessions() as s:
        row = s.scalars(select(Event)).one()
        assert row.extra == {"kiosk_lang": "hy", "note": "Շնորհակալություն։ և"}
        assert row.pressed_at == T0 + timedelta(minutes=1)


def test_changed_at_and_resolved_at_come_from_the_injected_clock(
    sessions: sessionmaker[Session],
) -> None:
    """A late event re-opens its day: changed_at (what forwarding re-sends) moves on."""
    now = [T0 + timedelta(days=1)]
    store = Store(sessions, clock=lambda: now[0])
    store.process([msg(event(1))])
    with sessions() as s:
        assert s.scalars(select(DailyAggregate.changed_at)).one() == now[0]
    now[0] = T0 + timedelta(days=8)
    store.process([msg(event(2))])  # a week-late event for the same day
    with sessions() as s:
        assert s.scalars(select(DailyAggregate.changed_at)).one() == now[0]
    new = "am-sh-gyumri1-d98"
    store.process([msg(event(1, device=new), device=new)])
    from collector.registry import import_registry

    with sessions() as s, s.begin():
        import_registry(
            s,
            {
                "devices": f"device,kind,scale\n{new},buttons,4\n",
                "assignments": f"device,centre,desk,valid_from\n{new},SH-GYUMRI1,98,2026-01-01\n",
            },
        )
    now[0] = T0 + timedelta(days=9)
    assert store.replay_quarantine() == {"stored": 1}
    with sessions() as s:
        assert s.scalars(select(Quarantine.resolved_at)).one() == now[0]


def test_unknown_fields_keep_their_armenian_text_on_every_database(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    note = {"note": "Շնորհակալություն։ և", "layout": {"rows": 2}, "big": 2**62}
    store.process([msg([replace(event(i), extra=note) for i in (1, 2)])])
    with sessions() as s:
        extras = [e.extra for e in s.scalars(select(Event).order_by(Event.seq))]
    assert extras == [note, note]


def test_a_rebuild_touches_only_cells_whose_counts_changed(
    sessions: sessionmaker[Session],
) -> None:
    from sqlalchemy import update as sql_update

    from collector.intake.aggregates import STEP_DAYS

    now = [T0 + timedelta(days=40)]
    store = Store(sessions, clock=lambda: now[0])
    # Thirty days of presses at one desk, one an hour for 8 hours a day.
    batch = [
        msg(event(d * 8 + h + 1, at=T0 - timedelta(days=30) + timedelta(days=d, hours=h)))
        for d in range(30)
        for h in range(8)
    ]
    store.process(batch)

    def cells() -> dict[tuple[object, ...], tuple[tuple[int, ...], object]]:
        with sessions() as s:
            return {
                (a.day, a.centre_id, a.employee_id, a.service_id, a.scale): (
                    (a.n1, a.n2, a.n3, a.n4, a.n5, a.n, a.excluded),
                    a.changed_at,
                )
                for a in s.scalars(select(DailyAggregate))
            }

    def month_stamps() -> dict[object, object]:
        with sessions() as s:
            return {m.month: m.changed_at for m in s.scalars(select(MonthlyAggregate))}

    before = cells()
    months_before = month_stamps()
    now[0] += timedelta(days=1)
    report = store.rebuild_all_aggregates()
    assert (report.changed, report.removed) == (0, 0)  # ingest was exact: nothing to do
    assert report.days >= 30 and report.longest_step_s > 0
    assert cells() == before  # not even a changed_at stamp moved
    assert month_stamps() == months_before  # nor a month's (what the feed reports)
    victim = sorted(before)[3]
    with sessions() as s, s.begin():  # a bulk fix gone wrong in one cell
        s.execute(
            sql_update(DailyAggregate)
            .where(DailyAggregate.day == victim[0], DailyAggregate.centre_id == victim[1])
            .values(n=DailyAggregate.n + 5)
        )
        s.execute(sql_delete(Event).where(Event.day == sorted(before)[10][0]))
    now[0] += timedelta(days=1)
    report = store.rebuild_all_aggregates()
    assert report.changed == 1 and report.removed == 1
    after = cells()
    assert after[victim][0] == before[victim][0] and after[victim][1] == now[0]
    assert sorted(before)[10] not in after
    assert month_stamps()[victim[0].replace(day=1)] == now[0]  # the feed re-sends its month
    untouched = [k for k in after if k != victim]
    assert all(after[k] == before[k] for k in untouched)
    assert STEP_DAYS < 30  # so the rebuild above went in several short steps


def test_period_sums_from_monthly_cells_equal_the_daily_sums(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """Any period, whole months or not: what the pages read (monthly cells inside, daily
    at the edges) equals the daily cells summed."""
    import random

    from collector.reading.scores import level_sums, month_spans

    rng = random.Random(11)
    first = date(2026, 8, 1)
    batch = []
    for i in range(400):
        at = T0.replace(month=8, day=1) + timedelta(hours=rng.randrange(0, 24 * 110))
        batch.append(msg(event(i + 1, at=at, score=rng.randint(1, 4))))
    assert store.process(batch).stored == 400
    keys = ("centre_id", "service_id", "scale")
    compared = 0
    for _ in range(40):
        start = first + timedelta(days=rng.randrange(0, 110))
        end = start + timedelta(days=rng.randrange(0, 110))
        with sessions() as s:
            daily: dict[tuple[object, ...], list[int]] = {}
            for a in s.scalars(
                select(DailyAggregate).where(DailyAggregate.day >= start, DailyAggregate.day <= end)
            ):
                acc = daily.setdefault((a.centre_id, a.service_id, a.scale), [0] * 5)
                for j, x in enumerate((a.n1, a.n2, a.n3, a.n4, a.n5)):
                    acc[j] += x
            assert level_sums(s, start, end, keys) == daily, (start, end)
            compared += bool(daily)
    assert compared > 30
    whole, edges = month_spans(date(2026, 8, 1), date(2026, 10, 31))
    assert (whole, edges) == ((date(2026, 8, 1), date(2026, 10, 1)), [])
    whole, edges = month_spans(date(2026, 8, 15), date(2026, 9, 10))
    assert (whole, edges) == (None, [(date(2026, 8, 15), date(2026, 9, 10))])
    whole, edges = month_spans(date(2026, 8, 15), date(2026, 10, 10))
    assert whole == (date(2026, 9, 1), date(2026, 9, 1))
    assert edges == [
        (date(2026, 8, 15), date(2026, 8, 31)),
        (date(2026, 10, 1), date(2026, 10, 10)),
    ]


def test_the_migration_fills_monthly_cells_and_hourly_counts_from_what_is_kept(
    store: Store, sessions: sessionmaker[Session], database_url: str
) -> None:
    """An existing database gets the new tables filled with what ingest would have kept."""
    from alembic import command

    from collector.db import alembic_config, migrate

    batch = [
        msg(event(i + 1, at=T0 - timedelta(days=35) + timedelta(hours=7 * i), score=1 + i % 4))
        for i in range(200)
    ]
    batch += [msg(event(300 + i, at=T0 + timedelta(seconds=i))) for i in range(12)]  # a burst
    for i in range(0, len(batch), 30):  # stamped apart: a month's changed_at is its newest day's
        store.process(batch[i : i + 30])

    def snapshot() -> tuple[set[tuple[object, ...]], set[tuple[object, ...]]]:
        with sessions() as s:
            months = {tuple(r) for r in s.execute(select(MonthlyAggregate.__table__))}
            hours = {tuple(r) for r in s.execute(select(HourlyCount.__table__))}
        return months, hours

    kept = snapshot()
    assert len(kept[0]) >= 2 and len(kept[1]) > 100
    sessions.kw["bind"].dispose()
    command.downgrade(alembic_config(database_url), "0014")
    migrate(database_url)
    assert snapshot() == kept


def test_factors_and_channels_are_counted_as_stored_and_rebuilt_the_same(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """Ratings at the counter and online, factors linked to them, a visitor-chosen
    service, a suspect online message: the per-channel and per-factor cells kept at
    ingest equal those rebuilt from events, and hold what was sent."""
    from collector.models import ChannelAggregate, FactorAggregate, Service
    from device import protocol as p

    assert f"type = '{p.EventType.FACTORS.value}'" == FACTORS_SQL  # the partial index's

    def factors(seq: int, rating_seq: int, **answers: object) -> p.Event:
        return replace(
            event(seq), type=p.EventType.FACTORS, score=None, rating_seq=rating_seq,
            answers=answers, service=str(answers.pop("service", "")) or None,
        )  # fmt: skip

    online = {"channel": "online"}
    batch = [
        msg([event(1, score=4), factors(2, 1, procedure=2, solved="partly", conduct=4)]),
        msg([event(3, score=1), factors(4, 3, solved="no", competence=1, service="EMPLOYMENT")]),
        dataclasses.replace(  # the collector's phone page writes these, never MQTT
            msg([replace(event(1, stream="web", score=3), **online),
                 replace(factors(2, 1, solved="yes", procedure=4), stream="web", **online)]),
            origin=ORIGIN_ONLINE,
        ),
    ]  # fmt: skip
    suspect = msg(
        [replace(event(3, stream="web", score=4), **online),
         replace(factors(4, 3, solved="yes"), stream="web", **online)]
    )  # fmt: skip
    store.process(batch)
    store.process(
        [Received(suspect.topic, suspect.payload, suspect.received_at, flags=32,
                  origin=ORIGIN_ONLINE)]
    )  # fmt: skip

    def channel_cells() -> dict[tuple[object, ...], tuple[int, ...]]:
        with sessions() as s:
            return {
                (a.day, a.service_id, a.channel, a.scale): (a.n1, a.n2, a.n3, a.n4, a.n, a.excluded)
                for a in s.scalars(select(ChannelAggregate))
            }

    def factor_cells() -> dict[tuple[object, ...], tuple[int, int]]:
        with sessions() as s:
            return {
                (f.service_id, f.channel, f.factor, f.scale, f.level): (f.n, f.excluded)
                for f in s.scalars(select(FactorAggregate))
            }

    with sessions() as s:
        svc = dict(s.execute(select(Service.code, Service.id)).all())
    kept_channels, kept_factors = channel_cells(), factor_cells()
    day = date(2026, 11, 24)
    desk = svc["SOC_ASSISTANCE"]  # the service at DEV's desk
    assert kept_channels == {
        (day, desk, "counter", 4): (1, 0, 0, 1, 2, 0),
        (day, desk, "online", 4): (0, 0, 1, 0, 1, 1),  # the suspect one left out
    }
    assert kept_factors == {
        (desk, "counter", "procedure", 4, 2): (1, 0),
        (desk, "counter", "solved", 3, 2): (1, 0),
        (desk, "counter", "conduct", 4, 4): (1, 0),
        (svc["EMPLOYMENT"], "counter", "solved", 3, 1): (1, 0),  # the visitor's own choice
        (svc["EMPLOYMENT"], "counter", "competence", 4, 1): (1, 0),
        (desk, "online", "solved", 3, 3): (1, 1),
        (desk, "online", "procedure", 4, 4): (1, 0),
    }
    with sessions() as s:
        rows = {(e.stream, e.seq): e for e in s.scalars(select(Event))}
        assert rows[("s1", 2)].answers == {"procedure": 2, "solved": "partly", "conduct": 4}
        assert rows[("s1", 2)].rating_seq == 1 and rows[("web", 3)].flags & 32
        assert rows[("s1", 4)].chosen_service == "EMPLOYMENT"
    with sessions() as s, s.begin():
        s.execute(sql_delete(ChannelAggregate))
        s.execute(sql_delete(FactorAggregate))
    store.rebuild_all_aggregates()
    assert channel_cells() == kept_channels
    assert factor_cells() == kept_factors


def at(seq: int, when: object, **kw: object) -> object:
    """A rating pressed at ``when`` exactly (``event`` adds ``seq`` minutes)."""
    return replace(event(seq, **kw), at=when.isoformat())  # type: ignore[attr-defined]


def test_a_press_at_a_whole_second_is_found_by_its_own_time(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """The fast path writes times as the ORM compares them (SQLite compares text)."""
    store.process([msg(at(1, T0)), msg(at(2, T0 + timedelta(microseconds=500)))])
    with sessions() as s:
        at_t0 = s.scalars(
            select(Event.seq).where(Event.pressed_at >= T0, Event.pressed_at <= T0)
        ).all()
        assert at_t0 == [1]
        assert s.scalar(select(func.count()).where(Event.received_at >= T0)) == 2


def test_the_migration_gives_old_whole_second_times_their_full_form(
    store: Store, sessions: sessionmaker[Session], database_url: str
) -> None:
    from alembic import command
    from sqlalchemy import text

    from collector.db import alembic_config, migrate

    store.process([msg(at(1, T0))])
    engine = sessions.kw["bind"]
    if engine.dialect.name == "sqlite":  # what the fast path used to write
        with engine.begin() as c:
            c.execute(text("UPDATE events SET pressed_at = substr(pressed_at, 1, 19)"))
        with sessions() as s:
            assert s.scalar(select(func.count()).where(Event.pressed_at >= T0)) == 0
    engine.dispose()
    command.downgrade(alembic_config(database_url), "0016")
    migrate(database_url)
    with sessions() as s:
        assert s.scalars(select(Event.seq).where(Event.pressed_at >= T0)).all() == [1]


def test_bursts_across_batches_and_clusters(store: Store, sessions: sessionmaker[Session]) -> None:
    """A burst is found when its presses came in two batches; presses of one unit far
    apart in one batch are separate ranges and no burst."""
    t = T0 + timedelta(hours=1)
    calm = [at(i, t + timedelta(minutes=i), score=1) for i in range(1, 11)]
    store.process([msg(e) for e in calm])  # one a minute: no burst
    store.process([msg(at(20 + i, T0 + timedelta(seconds=i))) for i in range(5)])
    store.process([msg(at(30 + i, T0 + timedelta(seconds=5 + i))) for i in range(5)])
    with sessions() as s:
        flagged = set(s.scalars(select(Event.seq).where(Event.flags.op("&")(Flag.BURST) != 0)))
        assert flagged == {20, 21, 22, 23, 24, 30, 31, 32, 33, 34}
        agg = s.scalars(select(DailyAggregate)).all()
        assert sum(a.n for a in agg) == 10  # the calm ones; the burst is left out
        assert sum(a.excluded for a in agg) == 10


def test_the_burst_check_looks_up_each_range_by_index_however_big_the_table(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    """The burst check costs a few index lookups per range, never a read of every event:
    on PostgreSQL whatever the statistics say. Here there are none, as on a new table
    before autovacuum's first ANALYZE (or with autovacuum off): the planner then hashed
    the whole table on every batch, and a batch's check grew with every event stored."""
    for start in range(1, 3001, 500):
        store.process([msg(at(i, T0 + timedelta(minutes=i))) for i in range(start, start + 500)])
    burst = T0 - timedelta(hours=5)
    store.process([msg(at(5000 + i, burst + timedelta(seconds=i))) for i in range(10)])
    ranges = [
        (
            DEV,
            "counter",
            T0 + timedelta(minutes=i, seconds=-20),
            T0 + timedelta(minutes=i, seconds=20),
        )
        for i in range(1, 2001)
    ] + [(DEV, "counter", burst - timedelta(seconds=20), burst + timedelta(seconds=29))]
    with sessions() as s:
        conn = s.connection()
        dialect = conn.dialect.name
        for count in (True, False):
            sql, params = store.ranges_statement(dialect, ranges, count=count)
            if dialect == "postgresql":
                with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                    cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                    nodes = list(_plan_nodes(cur.fetchone()[0][0]["Plan"]))
                scans = {n.get("Relation Name"): n["Node Type"] for n in nodes}
                assert scans.get("events") in ("Index Scan", "Bitmap Heap Scan"), nodes
                assert not {"Hash Join", "Merge Join"} & {n["Node Type"] for n in nodes}, nodes
            else:
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
                assert any("events USING INDEX ix_events_device_pressed" in d for d in plan), plan
                assert not any(d.startswith("SCAN events") for d in plan), plan
        # One a minute is no burst; the ten presses in ten seconds are, and only they.
        assert store._ranges_query(conn, ranges, count=True) == {2000}
        found = store._ranges_query(conn, ranges[1999:], count=False)
        expected = [burst + timedelta(seconds=i) for i in range(10)] + [
            T0 + timedelta(minutes=2000)
        ]
        assert sorted(r.pressed_at for r in found) == expected


def _plan_nodes(node: dict[str, object]) -> Iterator[dict[str, object]]:
    yield node
    for child in node.get("Plans", []):  # type: ignore[attr-defined]
        yield from _plan_nodes(child)

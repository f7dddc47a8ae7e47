"""Forwarding against the 2.41-like fake (dhis2-core 2.41.9 semantics, see simulator/me_is.py):
re-sends, zeros, locked and unopened periods, renames, tokens and id schemes; SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, update

from collector.models import Event, ForwardBatch, Service
from collector.outbound import mapping
from simulator.me_is_access import Account
from tests.collector import test_forward as base
from tests.collector.helpers import T0
from tests.collector.test_forward import DAY, PERIOD, SVC, Env, press

env = base.env  # the fixture: a store, a fake M&E IS with the registry's package, a clock

EMPLOYMENT = "GNAHAT_SVC_EMPLOYMENT"
GROUP = "GnahatGrp01"  # the ministry's user group of the import account


def batches(e: Env) -> dict[str, ForwardBatch]:
    with e.sessions() as s:
        rows = list(s.scalars(select(ForwardBatch)))
        s.expunge_all()
    return {b.batch_key: b for b in rows}


def read_back(e: Env, org: str = "SH-GYUMRI1", **params: str) -> dict[tuple[str, str, str], str]:
    """What DHIS2's own read API gives (dataSet, period range and org unit required)."""
    r = httpx.get(
        e.server.url + "/api/dataValueSets",
        params={
            "dataSet": "GNAHAT_DAILY",
            "orgUnit": org,
            "startDate": "2026-11-01",
            "endDate": "2026-11-30",
            "idScheme": "code",
            **params,
        },
        auth=("gnahat", "pw"),
    )
    assert r.status_code == 200, r.text
    return {
        (v["dataElement"], v["period"], v["categoryOptionCombo"]): v["value"]
        for v in r.json()["dataValues"]
    }


def write_mapping(e: Env, tmp: Path, **options: str) -> Path:
    with e.sessions() as s:
        m = mapping.derive_from_db(s)
    m.options.update(options)
    path = tmp / "mapping.csv"
    path.write_text(mapping.to_csv(m), encoding="utf-8")
    e.fake.load_metadata(mapping.metadata_package(m, org_units=True))
    return path


def test_a_day_pushed_twice_and_swept_again_stays_delivered(env: Env) -> None:
    press(env, range(1, 4))
    fwd = env.forwarder(forward_resend_days=3)
    assert fwd.run_once().outcomes == {"sent": 1}
    # A retry after a lost answer, a dry run, the daily sweep: 2.41 counts every unchanged
    # value "ignored", and the batch is still delivered.
    [(_, dry)] = fwd.dry_run(DAY)
    assert dry.kind == "sent" and dry.summary is not None
    assert dry.summary["importCount"]["ignored"] == 4
    env.advance(days=1)
    assert fwd.run_once().outcomes == {"sent": 1}  # the sweep sends every value again
    sweep = env.fake.requests[-1]
    assert sweep["idempotency_key"].endswith(":resend-2026-11-26")
    assert len(sweep["body"]["dataValues"]) == 4 and sweep["summary"]["ignored"] == 4
    assert {b.state for b in batches(env).values()} == {"sent"}
    env.advance(hours=1)
    assert fwd.run_once().outcomes == {}  # nothing changed: nothing goes


def test_only_changed_values_go_and_zeros_read_back_as_significant(env: Env) -> None:
    press(env, range(1, 4), score=4)
    fwd = env.forwarder()
    fwd.run_once()
    assert read_back(env) == {
        ("GNAHAT_R4_1", PERIOD, SVC): "0",
        ("GNAHAT_R4_2", PERIOD, SVC): "0",
        ("GNAHAT_R4_3", PERIOD, SVC): "0",
        ("GNAHAT_R4_4", PERIOD, SVC): "3",
    }
    press(env, range(4, 5), score=1, at=T0 + timedelta(hours=3))  # a late press
    assert fwd.run_once().outcomes == {"sent": 1}
    last = env.fake.requests[-1]
    assert [dv["dataElement"] for dv in last["body"]["dataValues"]] == ["GNAHAT_R4_1"]
    assert last["summary"] == {"imported": 0, "updated": 1, "ignored": 0, "deleted": 0}
    assert read_back(env)[("GNAHAT_R4_1", PERIOD, SVC)] == "1"


def test_zeros_omitted_and_a_value_that_drops_to_zero_is_deleted(env: Env, tmp_path: Path) -> None:
    path = write_mapping(env, tmp_path, zeros="omit")
    press(env, range(1, 3), score=4)
    fwd = env.forwarder(forward_mapping=path)
    fwd.run_once()
    first = env.fake.requests[-1]
    assert [dv["value"] for dv in first["body"]["dataValues"]] == ["2"]  # no zeros sent
    assert first["summary"] == {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}
    assert read_back(env) == {("GNAHAT_R4_4", PERIOD, SVC): "2"}
    # A late correction: the desk's events belonged to Employment, not Social assistance.
    with env.sessions() as s, s.begin():
        employment = s.scalar(select(Service.id).where(Service.code == "EMPLOYMENT"))
        s.execute(update(Event).values(service_id=employment))
    env.store.rebuild_all_aggregates()
    env.advance(minutes=1)
    assert fwd.run_once().outcomes == {"sent": 1}  # the new value first, confirmed
    assert env.fake.requests[-1]["body"]["dataValues"] == [
        {"dataElement": "GNAHAT_R4_4", "categoryOptionCombo": EMPLOYMENT, "value": "2"}
    ]
    assert fwd.run_once().outcomes == {"sent": 1}  # then the old one's deletion
    values = env.fake.requests[-1]["body"]["dataValues"]
    assert {"dataElement": "GNAHAT_R4_4", "orgUnit": "SH-GYUMRI1", "deleted": True,
            "categoryOptionCombo": SVC} in values  # fmt: skip
    assert read_back(env) == {("GNAHAT_R4_4", PERIOD, EMPLOYMENT): "2"}  # moved, not doubled


def test_a_locked_period_is_reported_once_and_the_other_days_go(env: Env) -> None:
    env.load_package(expiry_days="3")
    for n, back in enumerate((4, 2, 1)):  # the 20th, 22nd and 23rd; the server's date: 25th
        press(env, range(1 + 10 * n, 3 + 10 * n), at=T0 - timedelta(days=back))
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"locked": 1, "sent": 2}
    by_key = batches(env)
    locked = by_key["SH-GYUMRI1/20261120"]
    assert (locked.state, locked.problem) == ("locked", "locked")
    assert "locked in the M&E IS: E7640" in (locked.last_error or "")
    assert by_key["SH-GYUMRI1/20261122"].state == "sent"
    requests = len(env.fake.requests)
    for _ in range(5):  # no loop of retries
        env.advance(hours=2)
        fwd.run_once()
    assert len([r for r in env.fake.requests[requests:] if "20261120" in str(r.get("body"))]) == 0
    # A late press for the locked day: the new counts wait with the batch, unsent.
    press(env, range(3, 4), at=T0 - timedelta(days=4))
    fwd.run_once()
    assert batches(env)["SH-GYUMRI1/20261120"].state == "locked"
    assert env.metrics.registry.get_sample_value("gnahat_forward_locked_batches") == 1
    # An administrator adds a lock exception (here: lifts expiry), then `forward retry`.
    env.load_package(expiry_days="0")
    assert fwd.retry(["SH-GYUMRI1/20261120"]) == 1
    assert fwd.run_once().outcomes == {"sent": 1}
    assert read_back(env)[("GNAHAT_R4_4", "20261120", SVC)] == "3"


def test_the_running_day_waits_for_the_servers_period_to_open(env: Env, tmp_path: Path) -> None:
    # The server runs in UTC with openFuturePeriods 0: a Daily period opens the day after.
    path = write_mapping(env, tmp_path, open_future_periods="0")
    env.now[0] = T0.replace(hour=21)  # 01:00 on the 25th in Yerevan, 21:00 on the 24th in UTC
    press(env, range(1, 3))
    fwd = env.forwarder(forward_mapping=path)
    assert fwd.run_once().outcomes == {}  # our day is over, the server's is not
    assert env.fake.requests == []
    env.now[0] = T0.replace(hour=23, minute=59)
    assert fwd.run_once().outcomes == {}
    env.now[0] = (T0 + timedelta(days=1)).replace(hour=0, minute=1)  # the period opens there
    assert fwd.run_once().outcomes == {"sent": 1}
    assert all(not r.get("conflicts") for r in env.fake.requests)


def test_a_service_renamed_mid_month_leaves_the_totals_equal(env: Env) -> None:
    for day in range(3):
        press(env, range(1 + 10 * day, 4 + 10 * day), at=T0 - timedelta(days=2 - day))
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"sent": 3}
    # The ministry renames the service; the administrator imports the new package.
    with env.sessions() as s, s.begin():
        s.execute(update(Service).where(Service.code == "SOC_ASSISTANCE").values(code="SOC_AID"))
    env.load_package()
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"sent": 3}  # every day, under the new name
    held = read_back(env)
    assert sum(int(v) for v in held.values()) == 18  # the old values wait for confirmation
    assert fwd.run_once().outcomes == {"sent": 3}  # then the old names' deletions
    held = read_back(env)
    assert {coc for _de, _pe, coc in held} == {"GNAHAT_SVC_SOC_AID"}
    assert sum(int(v) for v in held.values()) == 9  # ours: 3 days x 3 presses, not 18
    assert all(r["summary"]["deleted"] == 4 for r in env.fake.requests[-3:])


def test_nothing_is_deleted_before_its_replacement_is_confirmed(env: Env) -> None:
    """A service renamed before its category option combo exists on the server: the new
    values are refused (E7613) and the old ones stay; once the ministry adds the combo,
    the new values are confirmed, and only then are the old ones deleted. The M&E IS
    never holds fewer ratings for the day than before."""
    press(env, range(1, 4))
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"sent": 1}
    assert sum(int(v) for v in read_back(env).values()) == 3
    with env.sessions() as s, s.begin():  # renamed here; not yet in the server's metadata
        s.execute(update(Service).where(Service.code == "SOC_ASSISTANCE").values(code="SOC_AID"))
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"refused": 1}
    last = env.fake.requests[-1]
    assert not any(dv.get("deleted") for dv in last["body"]["dataValues"])
    assert sum(int(v) for v in read_back(env).values()) == 3  # nothing lost meanwhile
    env.load_package()  # the administrator imports the package with the new combo
    fwd.retry()
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"sent": 1}
    held = read_back(env)
    assert sum(int(v) for v in held.values()) == 6  # both, for a moment: never fewer
    assert fwd.run_once().outcomes == {"sent": 1}  # now the deletions
    held = read_back(env)
    assert {coc for _de, _pe, coc in held} == {"GNAHAT_SVC_SOC_AID"}
    assert sum(int(v) for v in held.values()) == 3
    assert batches(env)[next(iter(batches(env)))].state == "sent"


def test_a_fixed_typo_leaves_no_batch_pending_for_ever(env: Env) -> None:
    """Keys the server refused were not applied: after the fix they are not sent as
    deletions (each would be refused in turn, for ever) and the batch is delivered."""
    press(env, range(1, 4))
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"sent": 1}
    with env.sessions() as s, s.begin():  # a typo in the renamed code
        s.execute(update(Service).where(Service.code == "SOC_ASSISTANCE").values(code="SOC_AIDD"))
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"refused": 1}
    with env.sessions() as s, s.begin():  # fixed, and the package imported
        s.execute(update(Service).where(Service.code == "SOC_AIDD").values(code="SOC_AID"))
    env.load_package()
    fwd.retry()
    for _ in range(2):
        env.advance(minutes=5)
        assert fwd.run_once().outcomes == {"sent": 1}
    [batch] = batches(env).values()
    assert batch.state == "sent" and batch.last_error is None
    assert all("AIDD" not in str(r["body"]) for r in env.fake.requests[-2:])
    assert sum(int(v) for v in read_back(env).values()) == 3


def test_an_api_token_works_and_one_without_the_authority_is_named(env: Env) -> None:
    env.load_package(user_group=GROUP)
    env.fake.tokens["d2pat_good"] = Account({"F_DATAVALUE_ADD"}, groups={GROUP})
    env.fake.tokens["d2pat_readonly"] = {"F_VIEW_DATA"}
    press(env, range(1, 3))
    weak = env.forwarder(
        forward_username=None, forward_password=None, forward_token="d2pat_readonly"
    )
    assert weak.run_once().outcomes == {"retry": 1}
    b = batches(env)[f"SH-GYUMRI1/{PERIOD}"]
    assert b.problem == "auth" and "needs the F_DATAVALUE_ADD authority" in (b.last_error or "")
    weak.stop()
    good = env.forwarder(forward_username=None, forward_password=None, forward_token="d2pat_good")
    env.advance(minutes=1)
    assert good.run_once().outcomes == {"sent": 1}
    assert read_back(env)[("GNAHAT_R4_4", PERIOD, SVC)] == "2"


def test_uids_as_the_id_scheme(env: Env, tmp_path: Path) -> None:
    path = write_mapping(env, tmp_path, id_scheme="uid")
    press(env, range(1, 3))
    fwd = env.forwarder(forward_mapping=path)
    assert fwd.run_once().outcomes == {"sent": 1}
    req = env.fake.requests[-1]
    assert req["query"]["idScheme"] == "uid"
    m = mapping.load(path)
    assert req["body"]["orgUnit"] == m.org_units["SH-GYUMRI1"].uid
    assert read_back(env)[("GNAHAT_R4_4", PERIOD, SVC)] == "2"


def test_a_large_catch_up_goes_in_parts_within_the_limit(env: Env) -> None:
    press(env, range(1, 3))
    press(env, range(1, 3), device="am-sh-gyumri1-d02", stream="s2")
    fwd = env.forwarder(forward_max_values=3)
    assert fwd.run_once().outcomes == {"sent": 1}
    sizes = [len(r["body"]["dataValues"]) for r in env.fake.requests]
    assert sizes == [3, 3, 2] and all(r["status"] == 200 for r in env.fake.requests)
    assert len(read_back(env)) == 8


def test_employee_level_switched_on_early_never_empties_the_day(env: Env) -> None:
    """Employee-level forwarding switched on before the ministry created the pseudonym
    combos: the per-employee values are refused (E7615) and the day's totals stay; once
    the combos exist, the new values are confirmed and only then the totals go."""
    press(env, range(1, 4))
    assert env.forwarder().run_once().outcomes == {"sent": 1}
    assert sum(int(v) for v in read_back(env).values()) == 3
    fwd = env.forwarder(forward_employee_level=True, pseudonym_key="k" * 32)
    env.advance(minutes=5)
    fwd.plan()
    assert fwd.send_due() == {"refused": 1}
    assert "E7615" in str(env.fake.requests[-1]["conflicts"])
    assert sum(int(v) for v in read_back(env).values()) == 3  # the totals stay
    pseudonyms = [fwd._pseudonym("SH-GYUMRI1-E03"), "UNATTRIBUTED"]
    env.fake.load_metadata(
        {"categoryOptionCombos": [{"id": mapping.stable_uid("aoc", p), "code": p}
                                  for p in pseudonyms]}
    )  # fmt: skip
    fwd.retry()
    seen = []
    for _ in range(2):
        env.advance(minutes=5)
        assert fwd.run_once().outcomes == {"sent": 1}
        seen.append(sum(int(v) for (_de, _pe, _ou, _coc, _aoc), v in env.fake.values.items()))
    assert seen == [6, 3]  # both for a moment, never fewer; then the employees' only
    combos = {env.fake.cocs[aoc].code for (_de, _pe, _ou, _coc, aoc) in env.fake.values}
    assert combos == {fwd._pseudonym("SH-GYUMRI1-E03")}


def test_the_sweep_leaves_closed_days_alone_and_a_closed_unchanged_day_is_delivered(
    env: Env, tmp_path: Path
) -> None:
    """A data set whose expiryDays (3) is shorter than the 7-day re-send window: a day
    the M&E IS confirmed and has since closed is not swept again; and where our mapping
    does not know the server's expiry, the E7640 that an unchanged, confirmed day gets
    back is a delivery, not a "locked" batch (nor an alert for ever)."""
    path = write_mapping(env, tmp_path, expiry_days="3")  # the server's data set: 3 days
    press(env, range(1, 4))
    fwd = env.forwarder(forward_mapping=path)
    assert fwd.run_once().outcomes == {"sent": 1}
    sent = len(env.fake.requests)
    env.now[0] = T0 + timedelta(days=6)  # a new day's sweep; 2026-11-24 closed on the 27th
    report = fwd.run_once()
    assert len(env.fake.requests) == sent and report.outcomes == {}  # not swept
    assert batches(env)[f"SH-GYUMRI1/{PERIOD}"].state == "sent"
    # Our mapping without the expiry (0): the sweep re-sends the day and DHIS2 refuses it.
    unaware = tmp_path / "unaware.csv"
    unaware.write_text(path.read_text().replace("expiry_days,,,,3", "expiry_days,,,,0"))
    assert "expiry_days,,,,0" in unaware.read_text()
    fwd2 = env.forwarder(forward_mapping=unaware)
    env.now[0] = T0 + timedelta(days=7)
    assert fwd2.run_once().outcomes == {"sent": 1}
    assert "E7640" in str(env.fake.requests[-1]["conflicts"])
    batch = batches(env)[f"SH-GYUMRI1/{PERIOD}"]
    assert batch.state == "sent" and sum(int(v) for v in read_back(env).values()) == 3


def test_an_import_account_without_all_pushes_once_the_package_shares_data_write(
    env: Env,
) -> None:
    """A ministry's import account has F_DATAVALUE_ADD, a user group and data capture
    under the centres' parent, never ALL. A package that grants no data write gets every
    push aborted (E7601), named in the batch; the package with the mapping's user_group
    shares the data set and the category options, and the retried day is delivered."""
    env.fake.account("importer", "s3cret", {"F_DATAVALUE_ADD"}, groups={GROUP},
                     capture={mapping.TEST_ROOT_UID})  # fmt: skip
    press(env, range(1, 4))
    fwd = env.forwarder(forward_username="importer", forward_password="s3cret")
    assert fwd.run_once().outcomes == {"refused": 1}
    b = batches(env)[f"SH-GYUMRI1/{PERIOD}"]
    assert "E7601" in (b.last_error or "") and read_back(env) == {}
    env.load_package(user_group=GROUP)
    fwd.retry()
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"sent": 1}
    assert read_back(env)[("GNAHAT_R4_4", PERIOD, SVC)] == "3"

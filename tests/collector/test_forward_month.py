"""A month of forwarding against the 2.41-like fake, with the two changes that used to
delete data on DHIS2: a service renamed mid-month before its category option combo
existed there, and employee-level forwarding switched on before the ministry created
the pseudonym combos. Day by day, the M&E IS never holds fewer ratings for a (centre,
day) than it held before; at the end it holds exactly the aggregates. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from collector.models import Centre, DailyAggregate, Employee, Service
from collector.outbound import mapping
from tests.collector import test_forward as base
from tests.collector.test_forward import Env, press

env = base.env

DEVICES = ("am-sh-gyumri1-d03", "am-sh-gyumri1-d02", "am-lo-vanadzor-d03")
MONTH_START = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 10:00 in Yerevan
RENAMED_ON, PACKAGE_ON, EMPLOYEES_ON, COMBOS_ON = 10, 12, 15, 18


def held_ratings(e: Env) -> Counter[tuple[str, str]]:
    """Ratings the M&E IS holds per (org unit, period): every R element, every combo."""
    out: Counter[tuple[str, str]] = Counter()
    for (ou, pe, _coc, _de), count in held_cells(e).items():
        out[(ou, pe)] += count
    return out


def held_cells(e: Env) -> Counter[tuple[str, str, str, str]]:
    """(org unit, period, service combo, level element) -> count, over every employee."""
    out: Counter[tuple[str, str, str, str]] = Counter()
    with e.fake.lock:
        for (de, pe, ou, coc, _aoc), value in e.fake.values.items():
            key = (
                e.fake.org_units[ou].code or "",
                pe,
                e.fake.cocs[coc].code or "",
                e.fake.data_elements[de].code or "",
            )
            if key[3].startswith("GNAHAT_R") and int(value):
                out[key] += int(value)
    return out


def aggregate_cells(e: Env) -> Counter[tuple[str, str, str, str]]:
    out: Counter[tuple[str, str, str, str]] = Counter()
    with e.sessions() as s:
        services = {i: c for i, c in s.execute(select(Service.id, Service.code)).all()}
        rows = s.execute(
            select(DailyAggregate, Centre.code).join(Centre, Centre.id == DailyAggregate.centre_id)
        ).all()
        for cell, centre in rows:
            svc = services.get(cell.service_id, mapping.NO_SERVICE)
            for level in range(1, cell.scale + 1):
                count = getattr(cell, f"n{level}")
                if count:
                    key = (centre, cell.day.strftime("%Y%m%d"), f"GNAHAT_SVC_{svc}",
                           f"GNAHAT_R{cell.scale}_{level}")  # fmt: skip
                    out[key] += count
    return out


def test_a_month_with_a_rename_and_employee_level_never_loses_a_rating(env: Env) -> None:
    fwd = env.forwarder()
    seqs = dict.fromkeys(DEVICES, 0)
    most: Counter[tuple[str, str]] = Counter()
    refused_days = 0

    def run_and_check(rounds: int = 3) -> None:
        nonlocal refused_days
        # A rename's new values are confirmed before the old ones go, so a day may
        # briefly hold more than its ratings; it must never hold fewer than it had of
        # them (the truth caps what "had" can mean). No press comes between rounds.
        truth: Counter[tuple[str, str]] = Counter()
        for (ou, pe, _coc, _de), count in aggregate_cells(env).items():
            truth[(ou, pe)] += count
        for _ in range(rounds):
            report = fwd.run_once()
            refused_days += report.outcomes.get("refused", 0)
            now = held_ratings(env)
            fewer = {
                k: (most[k], now[k], truth[k]) for k in most if now[k] < min(most[k], truth[k])
            }
            assert not fewer, f"the M&E IS lost ratings (had, holds, true): {fewer}"
            most.update({k: v - most[k] for k, v in now.items() if v > most[k]})
            env.advance(minutes=10)

    for day in range(1, 31):
        at = MONTH_START + timedelta(days=day - 1)
        for i, device in enumerate(DEVICES):
            n = 1 + (day * (i + 2)) % 4
            for j in range(n):
                seqs[device] += 1
                press(env, range(seqs[device], seqs[device] + 1), device=device,
                      score=1 + (day + i + j) % 4, at=at)  # fmt: skip
        if day == RENAMED_ON:  # the registry renames it; the server does not know it yet
            with env.sessions() as s, s.begin():
                s.execute(
                    update(Service).where(Service.code == "SOC_ASSISTANCE").values(code="SOC_AID")
                )
        if day == PACKAGE_ON:  # the administrator imports the new package
            env.load_package()
            fwd.retry()
        if day == EMPLOYEES_ON:  # switched on before the ministry made the combos
            fwd.stop()
            fwd = env.forwarder(forward_employee_level=True, pseudonym_key="k" * 32)
        if day == COMBOS_ON:
            with env.sessions() as s:
                codes = [c for c in s.scalars(select(Employee.code)) if c]
            pseudonyms = [fwd._pseudonym(c) for c in codes] + ["UNATTRIBUTED"]
            env.fake.load_metadata(
                {"categoryOptionCombos": [{"id": mapping.stable_uid("aoc", p), "code": p}
                                          for p in pseudonyms]}
            )  # fmt: skip
            fwd.retry()
        env.now[0] = at.replace(hour=0, minute=30) + timedelta(days=1)
        run_and_check()
    for _ in range(6):  # settle: what is still pending goes
        env.advance(hours=1)
        run_and_check(1)
    assert refused_days > 0  # both changes were refused before they were fixed
    assert held_cells(env) == aggregate_cells(env)
    codes = {coc for _ou, _pe, coc, _de in held_cells(env)}
    assert "GNAHAT_SVC_SOC_ASSISTANCE" not in codes and "GNAHAT_SVC_SOC_AID" in codes
    combos = {env.fake.cocs[aoc].code for (*_k, aoc) in env.fake.values}
    assert "default" not in combos  # per employee only, once the combos existed

"""The zero-loss proof: 10 units, 5 000 presses, broker restart, two unit SIGKILLs, a
collector kill and a 30 s network cut end with stored = acknowledged, no duplicate, no gap."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from simulator.scenarios import ACTIONS, SHIPPED, load_scenario, on_broker, run_scenario


def test_ci_scenario_has_the_required_faults() -> None:
    sc = load_scenario("ci-faults")
    actions = [f.action for f in sc.faults]
    assert sc.units >= 10 and sc.presses >= 5000
    assert actions.count("unit_kill") >= 2
    assert {"broker_restart", "collector_restart", "network_cut"} <= set(actions)
    assert any(f.action == "network_cut" and f.seconds >= 30 for f in sc.faults)
    assert {"me_is_down", "me_is_errors"} <= set(actions)


@pytest.mark.slow
def test_zero_loss_under_faults(database_url: str, tmp_path: Path, broker_factory: object) -> None:
    out = io.StringIO()
    report = run_scenario(
        load_scenario("ci-faults"),
        workdir=tmp_path,
        database_url=database_url,
        out=out,
        progress=None,
    )
    assert report.ok, out.getvalue() + "\n".join(report.faults)
    assert report.acknowledged == report.stored == 5000
    assert report.duplicate_rows == 0 and report.gaps == 0 and report.queued == 0
    assert len(report.faults) == len(load_scenario("ci-faults").faults)
    # Through an M&E IS outage and 503s it holds exactly the collector's daily counts —
    # real counts: visitors press at human rates, so the scores are not all bursts.
    assert report.me_is_values > 0 and report.me_is_mismatches == 0
    # Against the 2.41-like fake holding the generated package: a clean exchange, no
    # conflict and no value sent twice unchanged.
    assert report.me_is_conflicts == 0 and report.me_is_ignored == 0
    assert report.counted > 4000 and report.counted + report.excluded == report.stored
    assert report.me_is_compared == report.counted
    assert report.wrong_day == 0


def test_shipped_scenarios_load_and_bad_ones_are_refused(tmp_path: Path) -> None:
    for f in SHIPPED.glob("*.toml"):
        assert load_scenario(f).faults
    bad = tmp_path / "bad.toml"
    bad.write_text('units = 2\n[[fault]]\nafter = 1\naction = "meteor"\n')
    with pytest.raises(ValueError, match="unknown action 'meteor'"):
        load_scenario(bad)
    bad.write_text('units = 2\n[[fault]]\nafter = 1\naction = "unit_kill"\nunit = 5\n')
    with pytest.raises(ValueError, match=r"unit 5 not in 0\.\.1"):
        load_scenario(bad)
    assert "network_cut" in ACTIONS


def test_clocks_blackhole_full_outbox_and_broker_kill(
    database_url: str, tmp_path: Path, broker_factory: object
) -> None:
    from sqlalchemy import select

    from collector.db import make_engine, session_factory
    from collector.models import Event, Flag
    from simulator.scenarios import pick_devices

    sc = load_scenario("clocks-and-disks")
    out = io.StringIO()
    report = run_scenario(sc, workdir=tmp_path, database_url=database_url, out=out, progress=None)
    assert report.ok, out.getvalue() + "\n".join(report.faults)
    assert report.refused > 0  # the full outbox refused presses visibly
    engine = make_engine(database_url)
    skewed = pick_devices(sc.units)[2]  # a day behind and unsynced
    with session_factory(engine)() as s:
        rows = s.execute(
            select(Event.flags, Event.pressed_at, Event.received_at).where(Event.device == skewed)
        ).all()
        assert rows and all(f & Flag.CLOCK_CORRECTED for f, _, _ in rows)
        assert all(abs((r - pr).total_seconds()) < 120 for _, pr, r in rows)
    engine.dispose()


@pytest.mark.slow
def test_a_clockless_unit_losing_power_with_a_backlog_counts_every_press_on_its_day(
    database_url: str, tmp_path: Path, broker_factory: object
) -> None:
    from sqlalchemy import func, select

    from collector.db import make_engine, session_factory
    from collector.models import Event, Quarantine
    from simulator.scenarios import pick_devices

    sc = load_scenario("clockless-power-cut")
    out = io.StringIO()
    report = run_scenario(sc, workdir=tmp_path, database_url=database_url, out=out, progress=None)
    assert report.ok, out.getvalue() + "\n".join(report.faults)
    assert report.acknowledged == report.stored == report.counted == sc.presses
    assert report.wrong_day == 0 and report.quarantined == 0
    assert report.me_is_compared == report.counted
    clockless = pick_devices(sc.units)[sc.clockless_units[0]]
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        boots = s.scalar(
            select(func.count(func.distinct(Event.boot))).where(Event.device == clockless)
        )
        assert boots == 2  # pressed before and after the power cut
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 0
    engine.dispose()
    assert (tmp_path / "collector.log").stat().st_size > 0  # the logs stay in the run's folder
    assert (tmp_path / "broker.log").stat().st_size > 0


def test_cluster_scenario_has_the_required_faults(tmp_path: Path) -> None:
    sc = load_scenario("cluster-faults")
    assert sc.broker == "nats" and sc.units >= 10 and sc.presses >= 5000
    kills = [f for f in sc.faults if f.action == "node_kill"]
    assert len({f.node for f in kills}) >= 2  # one node, then another
    assert any(f.action == "ingest_kill" for f in sc.faults)
    mosquitto = on_broker(sc, "mosquitto")
    assert {f.action for f in mosquitto.faults} >= {"broker_kill", "collector_restart"}
    bad = tmp_path / "bad.toml"
    bad.write_text('units = 2\n[[fault]]\nafter = 1\naction = "node_kill"\n')
    with pytest.raises(ValueError, match="node_kill does not apply to broker 'mosquitto'"):
        load_scenario(bad)
    bad.write_text('broker = "nats"\n[[fault]]\nafter = 1\naction = "network_cut"\n')
    with pytest.raises(ValueError, match="network_cut does not apply to broker 'nats'"):
        load_scenario(bad)
    bad.write_text('broker = "rabbit"\n')
    with pytest.raises(ValueError, match="broker 'rabbit'"):
        load_scenario(bad)


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["nats", "mosquitto"])
def test_cluster_scenario_zero_loss(postgres_url: str, tmp_path: Path, broker: str) -> None:
    """On PostgreSQL: the NATS cluster loses one node, then another once the first is
    back, and the active ingest; the same scenario on one Mosquitto (its broker killed
    where a node dies, its collector where the active ingest dies) still holds."""
    from simulator.nats import nats_binary

    if broker == "nats" and nats_binary() is None:
        pytest.skip("nats-server is not installed")
    sc = on_broker(load_scenario("cluster-faults"), broker)
    out = io.StringIO()
    report = run_scenario(sc, workdir=tmp_path, database_url=postgres_url, out=out, progress=None)
    assert report.ok, out.getvalue() + "\n".join(report.faults)
    assert report.acknowledged == report.stored == sc.presses
    assert report.duplicate_rows == 0 and report.gaps == 0 and report.queued == 0
    assert len(report.faults) == len(sc.faults)
    assert report.me_is_mismatches == 0 and report.wrong_day == 0


@pytest.mark.slow
def test_robustness_round_two_in_one_run(postgres_url: str, tmp_path: Path) -> None:
    """Writer failures, refused reconnects, the collector away while unsynced units
    press, and the active ingest's database cut (standby failover), together: stored =
    acknowledged, nothing doubled, every press at its time or flagged."""
    sc = load_scenario("robustness-2")
    assert (
        {"writer_fault", "refuse_units", "collector_down", "db_cut"}
        <= {f.action for f in sc.faults}
        and sc.standby
        and sc.unsynced_units
    )
    out = io.StringIO()
    report = run_scenario(sc, workdir=tmp_path, database_url=postgres_url, out=out, progress=None)
    text = out.getvalue() + "\n".join(report.faults)
    assert report.ok, text
    assert report.acknowledged == report.stored and report.duplicate_rows == 0, text
    assert report.misdated == 0 and report.wrong_day == 0, text
    assert not any("no active ingest" in f for f in report.faults), text
    # Refused units back off (waits 1, 1-2, 2-4, 4-8, 8-16 s: about five tries each in
    # 15 s): far fewer attempts than the one a second per unit of a fixed retry.
    assert report.refusal_s >= 10 and report.refusals < sc.units * report.refusal_s / 2, text
    log = (tmp_path / "ingest.log").read_text()
    assert "fault drill" in log and "could not be renewed in time: standing by" in log, log[-3000:]

"""What a scenario does to the system and how it checks the ministry's copy: the faults
injected by press count (broker, proxy, units, the collector's own writer, ingest and
database), and the reconciliation of the fake M&E IS with the collector's aggregates
(see :mod:`simulator.scenarios`, which runs them)."""

from __future__ import annotations

import json
import threading
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from device.mqtt_loop import stop_loop
from simulator.processes import (
    CollectorProcess,
    IngestPair,
)

if TYPE_CHECKING:
    from simulator.scenarios import Fault, Report


def _own_database_links(url: str) -> tuple[list[Any], list[dict[str, str]]]:
    """Each ingest of a standby pair reaches PostgreSQL through a link of its own that a
    fault can cut; on SQLite (one file, no network) both use the file."""
    from urllib.parse import urlsplit, urlunsplit

    from simulator.faults import TcpProxy

    if not url.startswith("postgresql"):
        return [], [{"GNAHAT_DATABASE_URL": url}, {"GNAHAT_DATABASE_URL": url}]
    parts = urlsplit(url)
    links, own = [], []
    for _ in range(2):
        link = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
        user = f"{parts.username}@" if parts.username else ""
        links.append(link)
        own.append({"GNAHAT_DATABASE_URL": urlunsplit(
            parts._replace(netloc=f"{user}127.0.0.1:{link.port}"))})  # fmt: skip
    return links, own


def _expected_me_is(sessions: Any, mapping_path: Path) -> dict[tuple[str, str, str, str], str]:
    """What the M&E IS should hold, from the aggregates themselves (not from the
    forwarder's payloads): every level's count per (day, centre, service) of every day the
    forwarder may push by now, under the codes of the mapping derived from the registry;
    zeros included (the package makes them significant)."""
    from collector.config import Settings
    from collector.models import Centre, DailyAggregate, Service
    from collector.outbound import mapping
    from collector.outbound.forward import Forwarder

    fwd = Forwarder(
        sessions,
        Settings(forward_url="http://unused", forward_today=True, forward_mapping=mapping_path),
    )
    try:
        with sessions() as s:
            m = fwd.refresh_mapping(s)
            last = fwd.last_day(datetime.now(UTC))
            centres = dict(s.execute(select(Centre.id, Centre.code)).all())
            services = dict(s.execute(select(Service.id, Service.code)).all())
            sums: dict[tuple[str, str, str, str], int] = {}
            for cell in s.scalars(select(DailyAggregate).where(DailyAggregate.day <= last)):
                service = services.get(cell.service_id, mapping.NO_SERVICE)
                for level in range(1, cell.scale + 1):
                    de = m.data_elements[(cell.scale, level)].code
                    key = (
                        de,
                        cell.day.strftime("%Y%m%d"),
                        m.org_units[centres[cell.centre_id]].code,
                        m.services[service].code,
                    )
                    sums[key] = sums.get(key, 0) + getattr(cell, f"n{level}")
        return {k: str(v) for k, v in sums.items()}
    finally:
        fwd.http.close()


def _reconcile_me_is(
    sessions: Any, me_is: Any, mapping_path: Path, timeout: float = 120.0
) -> tuple[int, int, int, int, int]:
    """Wait (bounded) until the fake M&E IS holds exactly the collector's aggregates;
    return (values there, values that differ or are missing, sum of the counts compared,
    conflicts it reported, values it counted ignored)."""
    import time

    expected = _expected_me_is(sessions, mapping_path)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        held = me_is.fake.held()
        differ = sum(1 for k, v in expected.items() if held.get(k) != v)
        differ += sum(1 for k in held if k not in expected)
        if differ == 0 or time.monotonic() > deadline:
            compared = sum(int(v) for k, v in expected.items() if held.get(k) == v)
            answers = [r for r in list(me_is.fake.requests) if "summary" in r]
            conflicts = sum(len(r.get("conflicts") or []) for r in answers)
            ignored = sum(int(r["summary"].get("ignored", 0)) for r in answers)
            return len(held), differ, compared, conflicts, ignored
        pause.wait(0.5)  # the forwarder pushes every second


def _inject(
    fault: Fault,
    *,
    broker: Any,
    collector: CollectorProcess,
    proxy: Any,
    units: list[Any],
    timers: list[threading.Timer],
    me_is: Any = None,
    ingests: IngestPair | None = None,
    db_links: list[Any] | None = None,
    report: Report | None = None,
) -> str:
    from device import protocol as p

    action = fault.action
    if action in ("writer_fault", "refuse_units", "collector_down", "db_cut"):
        return _inject_robustness(
            fault, collector=collector, proxy=proxy, timers=timers, ingests=ingests,
            db_links=db_links or [], report=report,
        )  # fmt: skip
    if action == "node_kill":
        # One node at a time: a node still down comes back (and the cluster is whole)
        # before the next one dies, as the scenario's "another after the first is back".
        for t in timers:
            if t.name == "revive-node":
                t.join()
        broker.wait_ready()
        broker.kill(fault.node)

        def revive() -> None:
            broker.start_node(fault.node)

        t = threading.Timer(fault.seconds, revive)
        t.name = "revive-node"
        t.start()
        timers.append(t)
        return f"node {fault.node} killed for {fault.seconds:g}s"
    if action == "ingest_kill":
        assert ingests is not None
        killed = ingests.kill_active()
        return f"active ingest {killed} killed; the standby takes over"
    if action == "broker_restart":
        broker.stop()
        broker.start()
        return "broker restarted"
    if action == "broker_kill":
        broker.stop(kill=True)
        broker.start()
        return "broker killed and restarted"
    if action == "unit_kill":
        units[fault.unit].kill()
        units[fault.unit].start()
        return f"unit {fault.unit} power cut and rebooted"
    if action == "collector_restart":
        collector.kill()
        collector.start()
        return "collector killed and restarted"

    def heal_after(seconds: float, heal: Any) -> None:
        # Each fault heals itself only: an overlapping one keeps its own timer.
        t = threading.Timer(seconds, heal)
        t.start()
        timers.append(t)

    if action == "me_is_down":
        me_is.stop()
        t = threading.Timer(fault.seconds, me_is.start)
        t.start()
        timers.append(t)
        return f"M&E IS down for {fault.seconds:g}s"
    if action == "me_is_errors":
        me_is.fake.faults.fail, me_is.fake.faults.fail_status = fault.count, 503
        return f"M&E IS answers the next {fault.count} pushes with 503"
    if action == "network_cut":
        proxy.cut()
        heal_after(fault.seconds, proxy.uncut)
        return f"network cut for {fault.seconds:g}s"
    if action == "network_blackhole":
        proxy.blackhole()
        heal_after(fault.seconds, proxy.unblackhole)
        return f"network blackhole for {fault.seconds:g}s"
    if action == "clock_skew":
        unit = units[fault.unit]
        unit.stop()
        unit.skew_s, unit.unsynced, unit.time_factor = fault.seconds, True, 1.0
        unit.start()
        return f"unit {fault.unit} restarted with its clock {fault.seconds:g}s off, unsynced"
    if action == "network_delay":
        proxy.delay_ms = fault.ms
        heal_after(fault.seconds, proxy.undelay)
        return f"network delay {fault.ms} ms for {fault.seconds:g}s"
    if action == "duplicate_redelivery":
        import sqlite3

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        unit = units[fault.unit]
        outbox = Path(tomllib.loads(unit.config.read_text())["outbox"]["path"])
        conn = sqlite3.connect(outbox)
        rows = conn.execute(
            "SELECT payload FROM outbox ORDER BY seq DESC LIMIT ?", (fault.count,)
        ).fetchall()
        conn.close()
        device = json.loads(rows[0][0])["device"] if rows else None
        if device:
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id="redeliver", protocol=mqtt.MQTTv311
            )
            c.connect(broker.host, broker.port)
            c.loop_start()
            for (payload,) in rows:
                for _ in range(2):
                    c.publish(p.event_topic(device), payload, qos=1).wait_for_publish(10)
            c.disconnect()
            stop_loop(c)
        return f"re-delivered {len(rows)} queued events of unit {fault.unit} twice"
    raise ValueError(action)


def _inject_robustness(
    fault: Fault,
    *,
    collector: CollectorProcess,
    proxy: Any,
    timers: list[threading.Timer],
    ingests: IngestPair | None,
    db_links: list[Any],
    report: Report | None,
) -> str:
    """The faults of the collector's own robustness: its writer failing, units refused
    by the broker, the collector away for a while, the active ingest's database cut."""
    import signal
    import time

    def later(seconds: float, then: Any, name: str = "heal") -> None:
        t = threading.Timer(seconds, then)
        t.name = name
        t.start()
        timers.append(t)

    action = fault.action
    if action == "writer_fault":
        for t in timers:  # a restart under way (collector_down) comes first
            if t.is_alive() and t.name == "collector-back":
                t.join()
        if ingests is not None:
            which = ingests.signal_active(signal.SIGUSR2)
            return f"the writer of ingest {which} fails a round"
        assert collector.proc is not None
        collector.proc.send_signal(signal.SIGUSR2)
        return "the collector's writer fails a round"
    if action == "refuse_units":
        before, began = proxy.refused, time.monotonic()
        proxy.refuse()

        def heal() -> None:
            proxy.unrefuse()
            if report is not None:
                report.refusals += proxy.refused - before
                report.refusal_s += round(time.monotonic() - began, 1)

        later(fault.seconds, heal)
        return f"every unit refused by the broker for {fault.seconds:g}s"
    if action == "collector_down":
        if ingests is not None:
            ingests.kill_all()
            later(fault.seconds, ingests.start_all, "collector-back")
        else:
            collector.kill()
            later(fault.seconds, collector.start, "collector-back")
        return f"the collector away for {fault.seconds:g}s (the broker holds its session)"
    if action == "db_cut":
        assert ingests is not None
        which = ingests.wait_active()
        if which is None or not db_links:
            return "no active ingest with a database link of its own to cut"
        link = db_links[which]
        link.cut()
        later(fault.seconds, link.uncut)
        return f"ingest {which}'s database link cut for {fault.seconds:g}s"
    raise ValueError(action)

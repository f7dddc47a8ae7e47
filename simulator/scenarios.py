"""Fault scenarios from files, run end to end with the accounting that proves guarantee 1.

A scenario (TOML, see ``simulator/scenarios/*.toml`` and docs/simulator.md) names a
fleet size, a number of presses, a seed and faults scheduled by press count. The
runner starts a Mosquitto, a collector process (``gnahat-collector serve``), a TCP
proxy between units and broker, and unit processes running the real device code;
presses round the fleet, injects the faults, heals, waits for every unit to drain,
then counts: acknowledged presses, stored events, duplicates dropped, quarantined,
still queued, gaps. It fails when anything acknowledged is not stored exactly once.

The collector also forwards to a fake M&E IS (DHIS2 ``dataValueSets``) that faults can
take down or make fail; at the end every value there must equal the collector's own
daily aggregates (nothing lost or doubled on the way to the ministry either).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import tomllib
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

from device.mqtt_loop import stop_loop

ACTIONS = {
    "broker_restart": "stop the broker (it saves its queue) and start it again",
    "broker_kill": "SIGKILL the broker (loses what it had not saved) and start it again",
    "unit_kill": "power cut: SIGKILL a unit process and start it again on the same outbox",
    "collector_restart": "SIGKILL the collector process and start it again",
    "network_cut": "sever every unit connection and refuse new ones for `seconds`",
    "network_delay": "add `ms` of latency to unit traffic for `seconds`",
    "network_blackhole": "keep unit connections open but forward nothing for `seconds`",
    "clock_skew": "restart a unit with its clock `seconds` off and reported unsynced",
    "outbox_full": "a unit's outbox refuses new presses (full disk) for the next `count` presses",
    "duplicate_redelivery": "publish again the last `count` events of a unit, as a broker might",
    "me_is_down": "the M&E IS stops answering (connection refused) for `seconds`",
    "me_is_errors": "the M&E IS answers the next `count` pushes with HTTP 503",
}
SHIPPED = Path(__file__).resolve().parent / "scenarios"
ME_IS_USER, ME_IS_PASSWORD = "gnahat", "scenario"


@dataclass
class Fault:
    after: int
    action: str
    unit: int = 0
    seconds: float = 0.0
    ms: int = 0
    count: int = 20


@dataclass
class Scenario:
    name: str
    units: int = 10
    presses: int = 1000
    seed: int = 1
    ack_timeout_s: float = 3.0
    unsynced_units: list[int] = field(default_factory=list)
    skewed_units: dict[str, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    description: str = ""


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    if not p.exists() and (SHIPPED / f"{path}.toml").exists():
        p = SHIPPED / f"{path}.toml"
    data = tomllib.loads(p.read_text(encoding="utf-8"))
    faults = []
    for i, f in enumerate(data.pop("fault", [])):
        if f.get("action") not in ACTIONS:
            raise ValueError(
                f"{p}: fault {i + 1}: unknown action {f.get('action')!r}; "
                f"use one of {', '.join(ACTIONS)}"
            )
        faults.append(Fault(**f))
    sc = Scenario(
        name=data.pop("name", p.stem), faults=sorted(faults, key=lambda f: f.after), **data
    )
    for f in sc.faults:
        if (
            f.action in ("unit_kill", "duplicate_redelivery", "clock_skew", "outbox_full")
            and not 0 <= f.unit < sc.units
        ):
            raise ValueError(f"{p}: fault at {f.after}: unit {f.unit} not in 0..{sc.units - 1}")
    return sc


@dataclass
class Report:
    acknowledged: int = 0
    refused: int = 0
    stored: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicate_rows: int = 0
    duplicates_dropped: int = 0
    quarantined: int = 0
    queued: int = 0
    gaps: int = 0
    me_is_values: int = 0
    me_is_mismatches: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.unexpected == 0
            and self.duplicate_rows == 0
            and self.gaps == 0
            and self.queued == 0
            and self.acknowledged == self.stored
            and self.me_is_mismatches == 0
        )

    def lines(self) -> list[str]:
        return [
            f"acknowledged to visitors  {self.acknowledged}",
            f"refused (fault shown)     {self.refused}",
            f"stored                    {self.stored}",
            f"missing (acked, unstored) {self.missing}",
            f"duplicate rows            {self.duplicate_rows}",
            f"duplicates dropped        {self.duplicates_dropped}",
            f"quarantined               {self.quarantined}",
            f"still queued on units     {self.queued}",
            f"gaps                      {self.gaps}",
            f"values at the M&E IS      {self.me_is_values} ({self.me_is_mismatches} differ)",
            f"result                    {'OK' if self.ok else 'FAILED'}",
        ]


class CollectorProcess:
    """``gnahat-collector serve`` in a child process, killable and restartable."""

    def __init__(
        self, database_url: str, broker_url: str, port: int, me_is_url: str | None = None
    ) -> None:
        self.env = {
            **os.environ,
            "GNAHAT_DATABASE_URL": database_url,
            "GNAHAT_MQTT_URL": broker_url,
            "GNAHAT_HTTP_PORT": str(port),
            "GNAHAT_MQTT_CLIENT_ID": "gnahat-scenario-collector",
            "PYTHONUNBUFFERED": "1",
        }
        if me_is_url:
            self.env.update(
                GNAHAT_FORWARD_URL=me_is_url,
                GNAHAT_FORWARD_USERNAME=ME_IS_USER,
                GNAHAT_FORWARD_PASSWORD=ME_IS_PASSWORD,
                GNAHAT_FORWARD_TODAY="true",
                GNAHAT_FORWARD_INTERVAL_S="1",
                GNAHAT_FORWARD_BACKOFF_MAX_S="2",
            )
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.dropped_before = 0

    def start(self, timeout: float = 60) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve"],
            cwd=root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        log: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                log.append(line)
                if "subscribed to" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            raise RuntimeError("collector did not start:\n" + "".join(log[-20:]))

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def kill(self) -> None:
        self.dropped_before += int(self.metric("gnahat_events_duplicate_total"))
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def duplicates_dropped(self) -> int:
        return self.dropped_before + int(self.metric("gnahat_events_duplicate_total"))


def pick_devices(n: int) -> list[str]:
    """n demo units spread over the centres (round robin)."""
    import csv

    from collector.demo_data import SHIPPED as REGISTRY

    by_centre: dict[str, list[str]] = {}
    with (REGISTRY / "assignments.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_centre.setdefault(row["centre"], []).append(row["device"])
    out: list[str] = []
    depth = 0
    while len(out) < n:
        for devices in by_centre.values():
            if depth < len(devices) and len(out) < n:
                out.append(devices[depth])
        depth += 1
    return out


def _progress(out: TextIO, done: int, total: int, note: str = "") -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} presses {note:40s}")
    out.flush()


def run_scenario(
    sc: Scenario,
    *,
    workdir: Path,
    database_url: str | None = None,
    out: TextIO = sys.stdout,
    progress: TextIO | None = sys.stderr,
) -> Report:
    from collector.db import make_engine, migrate, session_factory
    from collector.demo_data import SHIPPED as REGISTRY
    from collector.gaps import stream_gaps
    from collector.models import Event, Quarantine
    from collector.registry import import_dir
    from device import protocol as p
    from simulator.broker import MosquittoBroker, free_port
    from simulator.faults import TcpProxy
    from simulator.me_is import FakeMeIs, FakeMeIsServer
    from simulator.units import UnitProcess, unit_config

    workdir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{workdir / 'scenario.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s, s.begin():
        import_dir(s, REGISTRY, now=datetime(2026, 1, 1, tzinfo=UTC))
    report = Report()
    rng = random.Random(sc.seed)
    broker = MosquittoBroker(workdir / "broker")
    broker.start()
    me_is = FakeMeIsServer(FakeMeIs(username=ME_IS_USER, password=ME_IS_PASSWORD)).start()
    collector = CollectorProcess(url, broker.url, free_port(), me_is.url)
    proxy = TcpProxy(broker.host, broker.port).start()
    units: list[UnitProcess] = []
    timers: list[threading.Timer] = []
    acknowledged: set[tuple[str, str, int]] = set()
    devices = pick_devices(sc.units)
    try:
        collector.start()
        for i, device in enumerate(devices):
            cfg = unit_config(
                workdir / device / "unit.toml",
                device_id=device,
                broker_host=proxy.host,
                broker_port=proxy.port,
                outbox=workdir / device / "outbox.db",
                ack_timeout_s=sc.ack_timeout_s,
            )
            skew = sc.skewed_units.get(str(i), 0.0)
            units.append(
                UnitProcess(cfg, unsynced=i in sc.unsynced_units or bool(skew), skew_s=skew).start()
            )
        faults = list(sc.faults)
        full_until: dict[int, int] = {}
        for n in range(sc.presses):
            for k, until in list(full_until.items()):
                if n >= until:
                    units[k].cmd("limit 200000")
                    del full_until[k]
            while faults and faults[0].after <= n:
                fault = faults.pop(0)
                if fault.action == "outbox_full":
                    units[fault.unit].cmd("limit")
                    full_until[fault.unit] = n + fault.count
                    note = f"unit {fault.unit} outbox full for the next {fault.count} presses"
                else:
                    note = _inject(
                        fault,
                        broker=broker,
                        collector=collector,
                        proxy=proxy,
                        units=units,
                        timers=timers,
                        me_is=me_is,
                    )
                report.faults.append(f"at press {n}: {note}")
                if progress:
                    progress.write(f"\n{report.faults[-1]}\n")
            k = rng.randrange(len(units))
            unit = units[k]
            seq = unit.press(rng.choices([1, 2, 3, 4], weights=[14, 7, 17, 62])[0])
            if seq is not None:
                acknowledged.add((devices[k], unit.stream, seq))
            else:
                report.refused += 1
            if progress and (n % 50 == 0 or n == sc.presses - 1):
                _progress(progress, n + 1, sc.presses, "network cut" if proxy.is_cut else "")
        for t in timers:
            t.join()
        proxy.restore()
        if not broker.running:
            broker.start()
        if progress:
            progress.write("\nhealed; waiting for every unit to drain\n")
        for unit in units:
            unit.drain(180)
        report.queued = sum(int(u.status()["depth"]) for u in units)
        report.duplicates_dropped = collector.duplicates_dropped()
        if not me_is.running:
            me_is.start()
        if progress:
            progress.write("waiting for the M&E IS to hold what the collector holds\n")
        report.me_is_values, report.me_is_mismatches = _reconcile_me_is(sessions, me_is)
    finally:
        for t in timers:
            t.cancel()
        for unit in units:
            unit.stop()
        collector.stop()
        me_is.stop()
        proxy.close()
        broker.stop()

    with sessions() as s:
        rows = s.execute(
            select(Event.device, Event.stream, Event.seq).where(
                Event.device.in_(devices), Event.type == p.EventType.RATING.value
            )
        ).all()
        stored = {(d, st, q) for d, st, q in rows}
        report.duplicate_rows = len(rows) - len(stored)
        report.quarantined = s.scalar(select(func.count()).select_from(Quarantine)) or 0
        report.gaps = sum(len(g) for d in devices for g in stream_gaps(s, d).values())
    engine.dispose()
    report.acknowledged = len(acknowledged)
    report.stored = len(stored)
    report.missing = len(acknowledged - stored)
    report.unexpected = len(stored - acknowledged)
    for line in report.lines():
        out.write(line + "\n")
    out.flush()
    return report


def _expected_me_is(sessions: Any) -> dict[tuple[str, str, str, str], str]:
    """What the M&E IS should hold: the forwarder's own payloads for every finished-or-
    running day (by the collector's timezone), built from the aggregates."""
    from collector.config import Settings
    from collector.forward import Forwarder
    from collector.models import Centre, DailyAggregate, Service

    fwd = Forwarder(sessions, Settings(forward_url="http://unused", forward_today=True))
    try:
        last = fwd.last_day(datetime.now(UTC))
        out: dict[tuple[str, str, str, str], str] = {}
        with sessions() as s:
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            services = dict(s.execute(select(Service.id, Service.code)).all())
            pairs = s.execute(select(DailyAggregate.day, DailyAggregate.centre_id).distinct()).all()
            for day, centre_id in pairs:
                if day > last:
                    continue
                payload = fwd.adapter.build(
                    codes[centre_id], day, fwd.cells(s, day, centre_id, services)
                )
                for dv in payload["dataValues"]:
                    key = (dv["dataElement"], payload["period"], payload["orgUnit"])
                    out[(*key, dv["categoryOptionCombo"])] = dv["value"]
        return out
    finally:
        fwd.http.close()


def _reconcile_me_is(sessions: Any, me_is: Any, timeout: float = 120.0) -> tuple[int, int]:
    """Wait (bounded) until the fake M&E IS holds exactly the collector's aggregates;
    return (values there, values that differ or are missing)."""
    import time

    expected = _expected_me_is(sessions)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        with me_is.fake.lock:
            held = {(de, pe, ou, coc): v for (de, pe, ou, coc, _a), v in me_is.fake.values.items()}
        differ = sum(1 for k, v in expected.items() if held.get(k) != v)
        differ += sum(1 for k in held if k not in expected)
        if differ == 0 or time.monotonic() > deadline:
            return len(held), differ
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
) -> str:
    from device import protocol as p

    action = fault.action
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

    def heal_after(seconds: float) -> None:
        t = threading.Timer(seconds, proxy.restore)
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
        heal_after(fault.seconds)
        return f"network cut for {fault.seconds:g}s"
    if action == "network_blackhole":
        proxy.blackhole()
        heal_after(fault.seconds)
        return f"network blackhole for {fault.seconds:g}s"
    if action == "clock_skew":
        unit = units[fault.unit]
        unit.stop()
        unit.skew_s, unit.unsynced = fault.seconds, True
        unit.start()
        return f"unit {fault.unit} restarted with its clock {fault.seconds:g}s off, unsynced"
    if action == "network_delay":
        proxy.delay_ms = fault.ms
        heal_after(fault.seconds)
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

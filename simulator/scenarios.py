"""Fault scenarios from files, run end to end with the accounting that proves guarantee 1.

A scenario (TOML, see ``simulator/scenarios/*.toml`` and docs/simulator.md) names a
fleet size, a number of presses, a seed and faults scheduled by press count. The
runner starts a Mosquitto, a collector process (``gnahat-collector serve``), a TCP
proxy between units and broker, and unit processes running the real device code;
presses round the fleet, injects the faults, heals, waits for every unit to drain,
then counts: acknowledged presses, stored events, duplicates dropped, quarantined,
still queued, gaps. It fails when anything acknowledged is not stored exactly once.

With ``broker = "nats"`` the same runs on the clustered layout: a three-node
nats-server cluster with the accounts provisioning writes (one per unit), units that
know every node, two ``gnahat-collector ingest`` processes taking turns through the
database lease and ``serve --no-ingest`` for the web and forwarding; faults kill
nodes and the active ingest instead of the single broker.

The collector also forwards to a fake M&E IS (DHIS2 ``dataValueSets``) that faults can
take down or make fail; at the end every value there must equal the collector's own
daily aggregates (nothing lost or doubled on the way to the ministry either).
"""

from __future__ import annotations

import random
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

from simulator.injection import _inject, _own_database_links, _reconcile_me_is
from simulator.processes import (
    ME_IS_PASSWORD,
    ME_IS_USER,
    CollectorProcess,
    IngestPair,
    cluster_accounts,
)

#: A clockless unit's wall clock after each boot (no real-time clock, no network time).
CLOCKLESS_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ACTIONS = {
    "broker_restart": "stop the broker (it saves its queue) and start it again",
    "broker_kill": "SIGKILL the broker (loses what it had not saved) and start it again",
    "unit_kill": "power cut: SIGKILL a unit process and start it again on the same outbox",
    "collector_restart": "SIGKILL the collector process and start it again",
    "network_cut": "sever every unit connection and refuse new ones for `seconds`",
    "network_delay": "add `ms` of latency to unit traffic for `seconds`",
    "network_blackhole": "keep unit connections open but forward nothing for `seconds`",
    "clock_skew": "restart a unit with its clock `seconds` off and reported unsynced",
    "outbox_full": "a unit's outbox is full (disk) for exactly its next `count` presses",
    "duplicate_redelivery": "publish again the last `count` events of a unit, as a broker might",
    "me_is_down": "the M&E IS stops answering (connection refused) for `seconds`",
    "me_is_errors": "the M&E IS answers the next `count` pushes with HTTP 503",
    "writer_fault": "the ingest writer (the active one) fails its next round, as a defect would",
    "refuse_units": "answer every unit connection with a broker's CONNACK refusal for `seconds`",
    "collector_down": "SIGKILL every ingesting process; start them again after `seconds`",
    "db_cut": "(standby) cut the active ingest's own database link for `seconds`",
    "node_kill": "(nats) SIGKILL cluster node `node`; it starts again after `seconds`",
    "ingest_kill": "(nats) SIGKILL the ingest process holding the lease; it comes back as standby",
}
#: What a scenario on each broker layout can do (the cluster has no proxy in front of
#: its nodes, and a single Mosquitto has no node or standby to kill).
LAYOUT_ACTIONS = {
    "mosquitto": set(ACTIONS) - {"node_kill", "ingest_kill"},  # db_cut: with `standby`
    "nats": {
        "node_kill",
        "ingest_kill",
        "unit_kill",
        "clock_skew",
        "outbox_full",
        "me_is_down",
        "me_is_errors",
        "collector_restart",
    },
}
SHIPPED = Path(__file__).resolve().parent / "scenarios"


@dataclass
class Fault:
    after: int
    action: str
    unit: int = 0
    seconds: float = 0.0
    ms: int = 0
    count: int = 20
    node: int = 0


@dataclass
class Scenario:
    name: str
    units: int = 10
    presses: int = 1000
    seed: int = 1
    ack_timeout_s: float = 3.0
    unsynced_units: list[int] = field(default_factory=list)
    skewed_units: dict[str, float] = field(default_factory=dict)
    clockless_units: list[int] = field(default_factory=list)
    """Units with no real-time clock: their wall clock starts at 1970 at every boot."""
    time_factor: float = 600.0
    """How much faster than real time the synced units' wall clocks run: the presses of
    a run spread over hours of visits (human rates), so scores are not bursts."""
    mashing_units: list[int] = field(default_factory=list)
    """Units whose visitors mash the buttons (wall clock at real speed: bursts)."""
    visit_s: float = 30.0
    """Shortest time between two visitors at one desk, in the desk's own time."""
    faults: list[Fault] = field(default_factory=list)
    description: str = ""
    broker: str = "mosquitto"
    """``mosquitto`` (one broker, the single-server layout) or ``nats`` (a three-node
    cluster with per-unit accounts and active/standby ingest)."""
    standby: bool = False
    """(mosquitto) ingest as an active/standby pair through the database lease, each
    with a database link of its own that ``db_cut`` can break (PostgreSQL)."""


def on_broker(sc: Scenario, broker: str) -> Scenario:
    """The same scenario on the other layout, each fault as its counterpart there: a
    node's death is the single broker's death, the active ingest's death the
    collector's."""
    from dataclasses import replace

    counterpart = {
        "mosquitto": {"node_kill": "broker_kill", "ingest_kill": "collector_restart"},
        "nats": {"broker_kill": "node_kill", "broker_restart": "node_kill"},
    }[broker]
    faults = [replace(f, action=counterpart.get(f.action, f.action)) for f in sc.faults]
    for f in faults:
        if f.action not in LAYOUT_ACTIONS[broker]:
            raise ValueError(f"{sc.name}: {f.action} has no counterpart on {broker}")
    return replace(sc, broker=broker, faults=faults, name=f"{sc.name}-on-{broker}")


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
    if sc.broker not in LAYOUT_ACTIONS:
        raise ValueError(f"{p}: broker {sc.broker!r}: use one of {', '.join(LAYOUT_ACTIONS)}")
    for f in sc.faults:
        if f.action not in LAYOUT_ACTIONS[sc.broker]:
            raise ValueError(
                f"{p}: fault at {f.after}: {f.action} does not apply to broker {sc.broker!r}"
            )
        if f.action == "db_cut" and not sc.standby:
            raise ValueError(f"{p}: fault at {f.after}: db_cut needs `standby = true`")
        if f.action == "node_kill" and not 0 <= f.node < 3:
            raise ValueError(f"{p}: fault at {f.after}: node {f.node} not in 0..2")
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
    counted: int = 0
    excluded: int = 0
    wrong_day: int = 0
    misdated: int = 0
    """Presses dated outside their true time (5 s of slack) and not flagged as an
    estimate whose bounds hold it."""
    misdated_examples: list[str] = field(default_factory=list)
    refusals: int = 0
    """Unit connections refused (``refuse_units``), and over how many seconds."""
    refusal_s: float = 0.0
    me_is_values: int = 0
    me_is_compared: int = 0
    """Sum of the counts the M&E IS holds that were compared with the collector's."""
    me_is_mismatches: int = 0
    me_is_conflicts: int = 0
    """Conflicts the M&E IS reported over the run (a mapping or metadata gap)."""
    me_is_ignored: int = 0
    """Values it counted ignored (sent again unchanged, or a zero it does not keep)."""
    faults: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    """The status of every unit that still held events after draining (what to look at)."""

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
            and self.me_is_conflicts == 0
            and self.wrong_day == 0
            and self.misdated == 0
            and self.counted > 0  # a proof over zeros proves nothing
            and self.me_is_compared > 0
        )

    def _refusal_lines(self) -> list[str]:
        if not self.refusal_s:
            return []
        rate = self.refusals / self.refusal_s
        return [f"refused connections       {self.refusals} in {self.refusal_s:g} s ({rate:.1f}/s)"]

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
            f"counted in scores         {self.counted}",
            f"excluded (bursts)         {self.excluded}",
            f"on a wrong day            {self.wrong_day}",
            f"misdated (not flagged)    {self.misdated}",
            *self._refusal_lines(),
            f"values at the M&E IS      {self.me_is_values} ({self.me_is_mismatches} differ)",
            f"counts compared there     {self.me_is_compared}",
            f"M&E IS conflicts, ignored {self.me_is_conflicts}, {self.me_is_ignored}",
            f"result                    {'OK' if self.ok else 'FAILED'}",
            *(f"  still queued: {line}" for line in self.stuck),
            *(f"  misdated: {line}" for line in self.misdated_examples),
        ]


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


#: A unit without a trusted clock is dated by receipt, in real time: its visitors are
#: paced in real time, a little wider than the burst limit (8 presses in 20 s).
REAL_VISIT_S = 2.6


def _next_unit(units: list[Any], ready_at: list[float], rng: random.Random, sc: Scenario) -> int:
    """A desk whose next visitor has arrived (human rates), waiting for one if needed."""
    import time

    now = time.monotonic()
    ready = [k for k in range(len(units)) if ready_at[k] <= now]
    if not ready:
        soonest = min(ready_at)
        threading.Event().wait(max(0.0, soonest - now))  # pacing, not synchronisation
        now = time.monotonic()
        ready = [k for k in range(len(units)) if ready_at[k] <= now]
    k = rng.choice(ready)
    if k in sc.mashing_units:
        gap = 0.0
    elif units[k].time_factor == 1.0:
        gap = REAL_VISIT_S
    else:
        gap = sc.visit_s / units[k].time_factor
    ready_at[k] = now + gap
    return k


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
    port_base: int | None = None,
) -> Report:
    """Run ``sc``; logs of the collector and the broker go to ``workdir``.

    ``port_base``: the broker listens on it, the collector's HTTP on +1, the units'
    proxy on +2 and the fake M&E IS on +3 (default: free ports).
    """
    from collector.db import make_engine, migrate, session_factory
    from collector.demo_data import SHIPPED as REGISTRY
    from collector.models import Event, Quarantine
    from collector.reading.gaps import stream_gaps
    from collector.registry import import_dir
    from device import protocol as p
    from simulator.broker import MosquittoBroker, free_port
    from simulator.faults import TcpProxy
    from simulator.me_is import FakeMeIs
    from simulator.me_is_server import FakeMeIsServer, serve_registry
    from simulator.units import UnitProcess, unit_config

    workdir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{workdir / 'scenario.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    from collector.edge.auth import Role, create_token

    with sessions() as s, s.begin():
        import_dir(s, REGISTRY, now=datetime(2026, 1, 1, tzinfo=UTC))
        metrics_token = create_token(s, name="scenario metrics", role=Role.TECHNICIAN)[1]
    import time
    from zoneinfo import ZoneInfo

    from collector.models import Flag

    report = Report()
    rng = random.Random(sc.seed)

    def port(offset: int) -> int:
        return port_base + offset if port_base else free_port()

    devices = pick_devices(sc.units)
    nats = sc.broker == "nats"
    cluster: Any = None
    ingests: IngestPair | None = None
    unit_passwords: dict[str, Path] = {}
    collector_env: dict[str, str] = {}
    if nats:
        from simulator.nats import NatsCluster

        accounts_file, collector_password, unit_passwords = cluster_accounts(
            workdir / "accounts", devices
        )
        cluster = NatsCluster(workdir / "nats", accounts_file=accounts_file)
        cluster.start()
        broker: Any = cluster
        broker_url = cluster.url
        collector_env = {
            "GNAHAT_MQTT_USERNAME": "gnahat-collector",
            "GNAHAT_MQTT_PASSWORD": collector_password,
            "GNAHAT_MQTT_PROTOCOL": "3.1.1",
            "GNAHAT_INGEST_LEASE_S": "6",
        }
    else:
        broker = MosquittoBroker(workdir / "broker", port=port(0))
        broker.start()
        broker_url = broker.url
    standby = sc.standby and not nats
    db_links: list[Any] = []
    me_is = FakeMeIsServer(
        FakeMeIs(username=ME_IS_USER, password=ME_IS_PASSWORD), port=port(3)
    ).start()
    # It holds what `forward metadata` makes for this registry, and nothing else.
    serve_registry(me_is.fake, sessions, workdir / "mapping.csv")
    collector = CollectorProcess(
        url,
        broker_url,
        port(1),
        me_is.url,
        log_path=workdir / "collector.log",
        metrics_token=metrics_token,
        mapping=workdir / "mapping.csv",
        # on the cluster, ingest runs in its own active/standby processes
        args=("--no-ingest",) if nats or standby else (),
        extra_env=collector_env,
        ready_text="Uvicorn running" if nats or standby else "subscribed to",
    )
    if standby:
        db_links, own = _own_database_links(url)
        ingests = IngestPair(
            {"GNAHAT_MQTT_URL": broker_url, "GNAHAT_MQTT_CLIENT_ID": "gnahat-scenario-collector",
             "GNAHAT_INGEST_LEASE_S": "3"},
            workdir / "ingest.log",
            own,
        )  # fmt: skip
    if nats:
        ingests = IngestPair(
            {
                "GNAHAT_DATABASE_URL": url,
                "GNAHAT_MQTT_URL": broker_url,
                "GNAHAT_MQTT_CLIENT_ID": "gnahat-scenario-collector",
                **collector_env,
            },
            workdir / "ingest.log",
        )
        proxy: Any = None
    else:
        proxy = TcpProxy(broker.host, broker.port, listen_port=port(2)).start()
    units: list[UnitProcess] = []
    timers: list[threading.Timer] = []
    acknowledged: set[tuple[str, str, int]] = set()
    # When each press really happened: between the moment it was asked of the unit and
    # the moment the unit answered. A fast clock runs 600x: a press that takes 50 ms
    # covers 30 s of the unit's day, so a press near midnight has two candidate days.
    truth: dict[tuple[str, str, int], tuple[datetime, datetime]] = {}
    epoch = time.time()
    epoch_dt = datetime.fromtimestamp(epoch, UTC)
    # The fast clocks start in the past so that the run's visits end about now: the
    # collector forwards no day that lies ahead of its own clock.
    fast_units = max(1, sc.units - len(sc.unsynced_units) - len(sc.clockless_units))
    lead_s = sc.presses * sc.visit_s / fast_units * 1.5 + 6 * 3600  # faults take time too

    def true_time(unit: UnitProcess) -> datetime:
        now = datetime.now(UTC)
        if unit.time_factor == 1.0:
            return now
        return epoch_dt + (now - epoch_dt) * unit.time_factor - timedelta(seconds=lead_s)

    try:
        collector.start()
        if ingests is not None:
            ingests.start_all()
        for i, device in enumerate(devices):
            if nats:
                # units spread over the nodes: each starts on its own first node
                eps = cluster.mqtt_endpoints
                (host, first), *rest = eps[i % len(eps) :] + eps[: i % len(eps)]
                cfg = unit_config(
                    workdir / device / "unit.toml",
                    device_id=device,
                    broker_host=host,
                    broker_port=first,
                    outbox=workdir / device / "outbox.db",
                    ack_timeout_s=sc.ack_timeout_s,
                    username=device,
                    password_file=str(unit_passwords[device]),
                    extra_mqtt={"brokers": [f"{h}:{pt}" for h, pt in rest]},
                )
            else:
                cfg = unit_config(
                    workdir / device / "unit.toml",
                    device_id=device,
                    broker_host=proxy.host,
                    broker_port=proxy.port,
                    outbox=workdir / device / "outbox.db",
                    ack_timeout_s=sc.ack_timeout_s,
                )
            skew = sc.skewed_units.get(str(i), 0.0)
            if i in sc.clockless_units:
                skew = (CLOCKLESS_EPOCH - datetime.now(UTC)).total_seconds()
            unsynced = i in sc.unsynced_units or bool(skew)
            # Synced units' clocks run fast: their visitors come at human rates. A unit
            # without a trusted clock is dated by the collector's receipt: real time.
            fast = not unsynced and i not in sc.mashing_units
            units.append(
                UnitProcess(
                    cfg,
                    unsynced=unsynced,
                    skew_s=-lead_s if fast else skew,
                    time_factor=sc.time_factor if fast else 1.0,
                    epoch=epoch,
                ).start()
            )
        faults = list(sc.faults)
        ready_at = [0.0] * len(units)  # monotonic time from which a desk has a new visitor
        for n in range(sc.presses):
            while faults and faults[0].after <= n:
                fault = faults.pop(0)
                if fault.action == "outbox_full":
                    units[fault.unit].cmd(f"fill {fault.count}")
                    note = f"unit {fault.unit} outbox full for its next {fault.count} presses"
                else:
                    note = _inject(
                        fault,
                        broker=broker,
                        collector=collector,
                        proxy=proxy,
                        units=units,
                        timers=timers,
                        me_is=me_is,
                        ingests=ingests,
                        db_links=db_links,
                        report=report,
                    )
                report.faults.append(f"at press {n}: {note}")
                if progress:
                    progress.write(f"\n{report.faults[-1]}\n")
            k = _next_unit(units, ready_at, rng, sc)
            unit = units[k]
            asked = true_time(unit)
            seq = unit.press(rng.choices([1, 2, 3, 4], weights=[14, 7, 17, 62])[0])
            if seq is not None:
                acknowledged.add((devices[k], unit.stream, seq))
                truth[(devices[k], unit.stream, seq)] = (asked, true_time(unit))
            else:
                report.refused += 1
            if progress and (n % 50 == 0 or n == sc.presses - 1):
                cut = proxy is not None and proxy.is_cut
                _progress(progress, n + 1, sc.presses, "network cut" if cut else "")
        for t in timers:
            t.join()
        if ingests is not None:
            ingests.settle()
        if nats:
            for i, node in enumerate(cluster.nodes):
                if not node.running:
                    cluster.start_node(i)
        else:
            proxy.restore()
            for link in db_links:
                link.restore()
            if not broker.running:
                broker.start()
        if progress:
            progress.write("\nhealed; waiting for every unit to drain\n")
        for unit in units:
            unit.drain(180)
        statuses = [u.status() for u in units]
        report.queued = sum(int(st["depth"]) for st in statuses)
        report.stuck = [
            f"unit {i} ({devices[i]}) " + " ".join(f"{k}={v}" for k, v in st.items())
            for i, st in enumerate(statuses)
            if int(st["depth"])
        ]
        report.duplicates_dropped = collector.duplicates_dropped()
        if not me_is.running:
            me_is.start()
        if progress:
            progress.write("waiting for the M&E IS to hold what the collector holds\n")
        (
            report.me_is_values,
            report.me_is_mismatches,
            report.me_is_compared,
            report.me_is_conflicts,
            report.me_is_ignored,
        ) = _reconcile_me_is(sessions, me_is, workdir / "mapping.csv")
    finally:
        for t in timers:
            t.cancel()
        for unit in units:
            unit.stop()
        if ingests is not None:
            ingests.stop()
        collector.stop()
        me_is.stop()
        if proxy is not None:
            proxy.close()
        for link in db_links:
            link.close()
        if nats:
            (workdir / "broker.log").write_text(cluster.logs() + "\n", encoding="utf-8")
            cluster.stop()
        else:
            broker.stop()
            (workdir / "broker.log").write_text("\n".join(broker.log) + "\n", encoding="utf-8")

    tz = ZoneInfo("Asia/Yerevan")
    with sessions() as s:
        rows = s.execute(
            select(
                Event.device,
                Event.stream,
                Event.seq,
                Event.flags,
                Event.day,
                Event.pressed_lo,
                Event.pressed_hi,
                Event.pressed_at,
            ).where(Event.device.in_(devices), Event.type == p.EventType.RATING.value)
        ).all()
        stored = {(d, st, q) for d, st, q, *_ in rows}
        for d, st, q, flags, day, lo, hi, at in rows:
            if flags & Flag.BURST:
                report.excluded += 1
            else:
                report.counted += 1
            span = truth.get((d, st, q))
            if span is None:
                continue
            first, last = span
            if _misdated(first, last, at, flags, lo, hi):
                report.misdated += 1
                if len(report.misdated_examples) < 5:
                    report.misdated_examples.append(
                        f"{d} {st} #{q}: stored {at.isoformat()} flags {flags}, true "
                        f"{first.isoformat()}..{last.isoformat()}"
                    )
            if flags & Flag.DAY_UNCERTAIN:
                # Counted on its estimate's day; its bounds must meet its true span.
                if not ((lo is None or lo <= last) and (hi is None or first <= hi)):
                    report.wrong_day += 1
            elif day not in (first.astimezone(tz).date(), last.astimezone(tz).date()):
                report.wrong_day += 1
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


def _misdated(first: datetime, last: datetime, at: datetime, flags: int, lo: Any, hi: Any) -> int:
    """1 if a press is dated outside its true span (5 s of slack: a send and a commit)
    without being flagged an estimate whose bounds hold that span, else 0."""
    from collector.models import Flag

    slack = timedelta(seconds=5)
    if flags & Flag.CLOCK_UNTRUSTED:
        return int(not ((lo is None or lo <= last + slack) and (hi is None or first - slack <= hi)))
    return int(not first - slack <= at <= last + slack)

"""The one-command demo: broker, collector (SQLite, demo registry) and a simulated fleet.

Starts Mosquitto when installed (else the embedded amqtt broker), migrates a fresh
SQLite database, imports the demo registry, creates an analyst and a technician
token, serves the collector's HTTP API with ingest, and runs a seeded fleet of
real unit code across the 18 centres at an accelerated clock. Ctrl-C drains the
units, prints the accounting and stops everything.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

log = logging.getLogger(__name__)

#: The unit the demo unplugs, and when (real seconds after the fleet starts).
SILENT_DEVICE = "am-sh-gyumri1-d02"
UNPLUG_AFTER_S = 60.0
#: The desk whose visitors leave unhappy (worst-first weights).
SINKING_DEVICE = "am-sh-gyumri1-d01"
SINKING_MIX = [40.0, 30.0, 15.0, 15.0]
#: The share of visitors who rate on their phone by the desk's QR code.
ONLINE_SHARE = 0.05


@dataclass
class DemoOptions:
    data: Path = Path("demo-data")
    units_per_centre: int = 2
    factor: float = 120.0
    seed: int = 2026
    days: float = 7.0
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    broker: str = "auto"  # auto | mosquitto | embedded
    report_every_s: float = 15.0


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class Demo:
    def __init__(self, opts: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.stop_event = threading.Event()
        self.broker: Any = None
        self.server: Any = None
        self.server_thread: threading.Thread | None = None
        self.fleet: Any = None
        self.runner: threading.Thread | None = None
        self.app: Any = None
        self.me_is: Any = None
        self.phone_ratings = 0
        self.silenced: set[str] = set()
        self.actions_done = 0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ------------------------------------------------------------ start

    def start(self) -> None:
        from simulator.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary

        o = self.opts
        if o.data.exists():
            shutil.rmtree(o.data)
        o.data.mkdir(parents=True)
        use_mosquitto = o.broker == "mosquitto" or (o.broker == "auto" and mosquitto_binary())
        if use_mosquitto:
            self.broker = MosquittoBroker(o.data / "broker")
            protocol = "5"
        else:
            self.broker = EmbeddedBroker()
            protocol = "3.1.1"
        self.broker.start()
        from simulator.fleet import SimClock
        from simulator.me_is import FakeMeIs
        from simulator.me_is_server import FakeMeIsServer
        from simulator.visitors import next_opening

        self.clock = SimClock(next_opening(datetime.now().astimezone()), o.factor)
        self.me_is = FakeMeIsServer(FakeMeIs(username="gnahat", password="demo")).start()
        self._start_collector(protocol)
        self._start_fleet()

    def _start_collector(self, protocol: str) -> None:
        import uvicorn

        from collector.config import Settings
        from collector.db import make_engine, migrate, session_factory
        from collector.demo_data import SHIPPED
        from collector.edge.auth import Role, create_token
        from collector.edge.users import create_user
        from collector.main import create_app
        from collector.registry import import_dir

        o = self.opts
        url = f"sqlite:///{(o.data / 'gnahat.db').resolve()}"
        migrate(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with sessions() as s, s.begin():
            import_dir(s, SHIPPED, actor="demo")
            self._demo_alert_rules(s)
        from simulator.me_is_server import serve_registry

        # The fake M&E IS knows what `forward metadata` would create on a real one, and
        # keeps the simulated time, as the collector does.
        mapping_path = (o.data / "mapping.csv").resolve()
        serve_registry(self.me_is.fake, sessions, mapping_path, clock=self.clock.now)
        with sessions() as s, s.begin():
            _, self.analyst_token = create_token(s, name="demo analyst", role=Role.ANALYST)
            _, self.tech_token = create_token(s, name="demo technician", role=Role.TECHNICIAN)
            self.manager_password = secrets.token_urlsafe(12)
            create_user(
                s,
                "demo-manager",
                self.manager_password,
                role=Role.MANAGER,
                centres=["SH-GYUMRI1", "ER-AVAN"],
                display_name="Demo manager",
                now=datetime.now(UTC),
                actor="demo",
            )
        engine.dispose()
        port = o.http_port if _port_free(o.http_host, o.http_port) else 0
        if port == 0:
            from simulator.broker import free_port

            port = free_port(o.http_host)
        self.http_port = port
        self.settings = Settings(
            database_url=url,
            mqtt_url=self.broker.url,
            mqtt_protocol=protocol,
            mqtt_client_id="gnahat-demo-collector",
            http_host=o.http_host,
            http_port=port,
            feed_settle_s=1.0,
            forward_url=self.me_is.url,
            forward_username="gnahat",
            forward_password="demo",
            forward_today=True,  # show pushes as the simulated day goes on
            forward_mapping=mapping_path,
            forward_interval_s=10.0,
            alert_interval_s=15.0,
            # Every simulated phone comes from this machine's one address, and the days
            # pass faster: the per-address limit would flag them all.
            online_per_address_hour=100_000,
        )
        self.app = create_app(self.settings, ingest=True, forward_clock=self.clock.now)
        self.app.state.gnahat.business_clock = self.clock.now  # the simulated days
        config = uvicorn.Config(
            self.app,
            host=o.http_host,
            port=port,
            log_level="warning",
            lifespan="on",
            server_header=False,
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.server_thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.server_thread.start()
        while not self.server.started:
            if not self.server_thread.is_alive():
                raise RuntimeError("the collector's HTTP server did not start")
            self.stop_event.wait(0.05)
        self.sessions = self.app.state.gnahat.sessions

    def _demo_alert_rules(self, s: Any) -> None:
        """Alerts a newcomer sees fire within minutes. Silence is measured on the wall
        clock while the demo's days pass ``factor`` times faster, so every hour counts
        as opening time here and a unit is silent after two minutes."""
        from sqlalchemy import update

        from collector.models import Centre
        from collector.outbound import alerts

        s.execute(update(Centre).values(hours="24/7"))
        # The fleet connects within seconds of the registry's import: no "never heard"
        # alert for units that are still starting.
        alerts.set_rule(s, "unit_silent", {"minutes": 2, "never_heard": False}, None,
                        datetime.now(UTC))  # fmt: skip

    def _unplug(self) -> None:
        """A unit goes silent during opening hours (its cable pulled)."""
        if self.stop_event.wait(UNPLUG_AFTER_S) or self.fleet is None:
            return
        unit = self.fleet.units.get(SILENT_DEVICE)
        if unit is not None:
            self.silenced.add(SILENT_DEVICE)
            unit.daemon.stop()
            self.say(
                f"[demo] unit {SILENT_DEVICE} unplugged: its alert opens after two silent "
                "minutes (dashboard → Alerts, or `gnahat-collector alert list`)"
            )

    def _start_fleet(self) -> None:
        from collector.demo_data import CENTRES, badge_for, device_id
        from device.config import MqttConfig
        from simulator.fleet import Fleet
        from simulator.visitors import Desk

        o = self.opts
        desks = [
            Desk(
                device_id(code, i),
                badge_for(f"{code}-E{i:02d}"),
                # One desk whose visitors leave unhappy: its dissatisfied share rises
                # above the threshold once it has enough ratings.
                mix=SINKING_MIX if device_id(code, i) == SINKING_DEVICE else None,
                # The first desk of every centre has a touch screen that asks the factor
                # questions; some visitors everywhere rate on their phones by QR.
                kiosk=i == 1,
                online_share=ONLINE_SHARE,
            )
            for code, *_ in CENTRES
            for i in range(1, o.units_per_centre + 1)
        ]
        self.desks = desks
        mqtt = MqttConfig(
            host=self.broker.host,
            port=self.broker.port,
            username=None,
            ack_timeout_s=10,
            health_interval_s=30,
        )
        # The cooldown runs on real (monotonic) time: shrink it with the acceleration so a
        # simulated 3 s stays 3 s of simulated time.
        self.fleet = Fleet(
            [d.device for d in desks],
            workdir=o.data / "units",
            mqtt=mqtt,
            clock=self.clock,
            cooldown_s=3.0 / o.factor,
        )
        self.fleet.start()
        self.runner = threading.Thread(target=self._run_visitors, name="visitors", daemon=True)
        self.runner.start()
        threading.Thread(target=self._unplug, name="unplug", daemon=True).start()

    def _run_visitors(self) -> None:
        from simulator.visitors import Kind, schedule

        o = self.opts
        end = self.clock.start + timedelta(days=o.days)
        for action in schedule(self.desks, self.clock.start, end, seed=o.seed):
            if self.stop_event.wait(self.clock.real_seconds_until(action.at)):
                return
            unit = self.fleet.units[action.device]
            if action.device in self.silenced:
                continue  # unplugged: its visitors find it dark
            try:
                if action.kind is Kind.BADGE:
                    unit.badge(action.value)
                elif action.kind is Kind.FACTORS:
                    if unit.daemon.unit is not None:
                        unit.daemon.unit.follow_up(json.loads(action.value))
                elif action.kind is Kind.ONLINE:
                    self._rate_by_phone(action.device, json.loads(action.value))
                elif action.kind is Kind.MASH:
                    for _ in range(6):
                        unit.press(int(action.value))
                else:
                    unit.press(int(action.value))
            except Exception:
                log.exception("simulated action failed on %s", action.device)
            self.actions_done += 1

    def _rate_by_phone(self, device: str, rating: dict[str, Any]) -> None:
        """A visitor scans the desk's QR code and rates on the collector's phone page,
        over HTTP as a phone would (a fresh browser: its own cookie)."""
        import httpx

        from collector.edge.online import desk_code, desk_token

        url = f"http://{self.opts.http_host}:{self.http_port}/r/"
        url += desk_token(self.settings.secret_key, device)
        # The visitor scans the code the desk's screen shows at the end of the visit.
        code = desk_code(self.settings.secret_key, device, self.clock.now())
        with httpx.Client(timeout=10) as phone:
            page = phone.get(url, params={"lang": "hy", "c": code})
            visit = re.search(r'name="visit" value="([^"]+)"', page.text)
            if visit is None:
                log.warning("phone page of %s answered %s", device, page.status_code)
                return
            form = {"visit": visit.group(1), "lang": "hy"}
            form.update({k: str(v) for k, v in rating.items()})
            answer = phone.post(url, data=form)
            if answer.status_code == 200:
                self.phone_ratings += 1

    # ------------------------------------------------------------ report and stop

    def stored_ratings(self) -> int:
        from collector.models import Event

        with self.sessions() as s:  # the units' ratings (phones are counted apart)
            return (
                s.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.type == "rating", Event.channel == "counter")
                )
                or 0
            )

    def banner(self) -> None:
        base = f"http://{self.opts.http_host}:{self.http_port}"
        broker = type(self.broker).__name__.replace("Broker", "").lower()
        # The simulated days the fleet runs through (the M&E IS read-back asks a range).
        since = self.clock.start.date() - timedelta(days=1)
        until = self.clock.start.date() + timedelta(days=self.opts.days)
        self.say("")
        self.say("Gnahat demo is running")
        self.say(f"  broker      {self.broker.url} ({broker})")
        self.say(f"  database    {self.opts.data / 'gnahat.db'}")
        self.say(
            f"  fleet       {len(self.desks)} units in 18 centres, clock x{self.opts.factor:g}"
            f" from {self.clock.start:%a %Y-%m-%d %H:%M} Yerevan"
        )
        self.say(
            f"  dashboard   {base}/login  (user demo-manager, password {self.manager_password})"
        )
        self.say(f"  public      {base}/centres  (each centre's months and its answers; no login)")
        self.say(f"  health      {base}/healthz")
        self.say(f"  metrics     curl -H 'Authorization: Bearer {self.tech_token}' {base}/metrics")
        self.say(f"  API docs    {base}/docs")
        self.say(
            f"  feed        curl -H 'Authorization: Bearer {self.analyst_token}' "
            f"'{base}/api/v1/feeds/events?limit=20'"
        )
        self.say(
            f"  units       curl -H 'Authorization: Bearer {self.tech_token}' {base}/api/v1/devices"
        )
        self.say(
            f"  M&E IS      curl -u gnahat:demo '{self.me_is.url}/api/dataValueSets?"
            f"dataSet=GNAHAT_DAILY&orgUnit=SH-GYUMRI1&startDate={since}&endDate={until}"
            "&idScheme=code' (a fake DHIS2 2.41; the collector pushes every 10 s)"
        )
        self.say("  Ctrl-C stops everything")
        self.say("")

    def report(self) -> dict[str, int]:
        from collector.models import DailyAggregate

        totals: dict[str, int] = self.fleet.totals()
        totals["stored"] = self.stored_ratings()
        with self.sessions() as s:
            n, excluded = s.execute(
                select(
                    func.coalesce(func.sum(DailyAggregate.n), 0),
                    func.coalesce(func.sum(DailyAggregate.excluded), 0),
                )
            ).one()
        totals["counted"], totals["excluded"] = int(n), int(excluded)
        totals["forwarded"] = self.forwarded()
        return totals

    def forwarded(self) -> int:
        """Sum of the rating counts the fake M&E IS holds."""
        if self.me_is is None:
            return 0
        held = self.me_is.fake.held()  # by codes: the ratings are GNAHAT_R<scale>_<level>
        return sum(int(v) for (de, *_), v in held.items() if re.match(r"GNAHAT_R\d_", de))

    def factor_answers(self) -> int:
        from collector.models import FactorAggregate

        with self.sessions() as s:
            return int(s.scalar(select(func.coalesce(func.sum(FactorAggregate.n), 0))) or 0)

    def progress(self) -> None:
        t = self.report()
        self.say(
            f"[{self.clock.now():%a %H:%M}] presses {t['presses']}  acknowledged "
            f"{t['acknowledged']}  stored {t['stored']}  counted {t['counted']}  "
            f"(bursts left out {t['excluded']})  queued on units {t['queued']}  "
            f"pushes to M&E IS {self.pushes()} holding {t['forwarded']}  "
            f"by phone {self.phone_ratings}  factor answers {self.factor_answers()}"
        )

    def pushes(self) -> int:
        if self.me_is is None:
            return 0
        return sum(1 for r in list(self.me_is.fake.requests) if r.get("status") in (200, 409))

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        if self.runner is not None:
            self.runner.join(10)
        totals: dict[str, int] = {}
        if self.fleet is not None:
            self.fleet.drain(20)
            ingest = self.app.state.gnahat.ingest if self.app is not None else None
            if ingest is not None:
                ingest.wait_idle(20)
            totals = self.report()
            self.fleet.stop()
        if self.server is not None:
            self.server.should_exit = True
            if self.server_thread is not None:
                self.server_thread.join(15)
        if self.me_is is not None:
            self.me_is.stop()
        if self.broker is not None:
            self.broker.stop()
        return totals


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    demo = Demo(opts, out)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        demo.start()
        demo.banner()
        while not stop.wait(opts.report_every_s):
            demo.progress()
    finally:
        totals = demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if totals:
        demo.say(
            f"accounting: acknowledged {totals['acknowledged']}, stored {totals['stored']}, "
            f"counted in scores {totals['counted']}, left out as bursts {totals['excluded']}, "
            f"held by the M&E IS {totals['forwarded']}, still queued on units {totals['queued']}, "
            f"rated by phone {demo.phone_ratings}"
        )
        if totals["acknowledged"] != totals["stored"]:
            demo.say("MISMATCH: acknowledged presses differ from stored events")
            return 1
    demo.say("stopped")
    return 0

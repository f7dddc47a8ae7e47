"""``gnahat-sim``: the demo, technician tools (press, badge, tail) and scenarios."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnahat-sim", description="Gnahat simulator: a fleet of real unit code on mock pins."
    )
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="broker + collector + simulated fleet; Ctrl-C stops all")
    demo.add_argument(
        "--data", type=Path, default=Path("demo-data"), help="working folder (wiped at start)"
    )
    demo.add_argument("--units-per-centre", type=int, default=2)
    demo.add_argument("--factor", type=float, default=120.0, help="clock acceleration")
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument("--days", type=float, default=7.0, help="simulated days to run")
    demo.add_argument("--http-port", type=int, default=8080)
    demo.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    demo.add_argument("--report-every", type=float, default=15.0, help="seconds between lines")

    for name, helptext in (
        ("press", "press a rating button on a simulated unit"),
        ("badge", "tap a staff badge on a simulated unit"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("device")
        p.add_argument("value", help="score (press) or badge id (badge)")
        p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
        p.add_argument("--username")
        p.add_argument("--password-file")
        p.add_argument(
            "--state",
            type=Path,
            default=Path.home() / ".gnahat-sim",
            help="where each simulated unit keeps its outbox",
        )
        p.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the ack")

    run = sub.add_parser("run", help="run a fault scenario file and print the accounting")
    run.add_argument("scenario", help="a TOML file, or the name of a shipped one (smoke, ...)")
    run.add_argument("--database-url", help="collector database (default: SQLite in --work)")
    run.add_argument(
        "--work",
        type=Path,
        help="working folder, kept (default: a temporary one, kept only if the run fails)",
    )
    run.add_argument(
        "--port-base",
        type=int,
        help="broker on this port, collector HTTP +1, unit proxy +2, fake M&E IS +3",
    )
    run.add_argument(
        "--broker",
        choices=["mosquitto", "nats"],
        help="run it on this layout instead of the file's (each fault as its counterpart)",
    )
    sub.add_parser("scenarios", help="list the shipped scenarios and fault actions")
    me = sub.add_parser("me-is", help="run a fake M&E IS (DHIS2 dataValueSets) until Ctrl-C")
    me.add_argument("--port", type=int, default=8090)
    me.add_argument(
        "--metadata",
        type=Path,
        help="a DHIS2 metadata package to load (`gnahat-collector forward metadata --org-units`)",
    )
    me.add_argument("--user", help="Basic auth account (default: none needed)")
    me.add_argument("--password", default="")
    me.add_argument("--token", help="an ApiToken it accepts (with F_DATAVALUE_ADD)")

    tail = sub.add_parser("tail", help="follow events as the collector stores them")
    tail.add_argument("--url", default="http://127.0.0.1:8080")
    tail.add_argument("--token", required=True, help="an analyst token")
    tail.add_argument("--after", type=int, default=0)
    tail.add_argument("--interval", type=float, default=1.0)
    tail.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    return parser


def cmd_one_shot(args: argparse.Namespace) -> int:
    """Run the real unit code for DEVICE just long enough to send one press or tap."""
    from device.clock import SystemClock
    from device.config import MqttConfig
    from simulator.fleet import Fleet

    url = urlsplit(args.broker)
    mqtt = MqttConfig(
        host=url.hostname or "127.0.0.1",
        port=url.port or 1883,
        username=args.username,
        password_file=args.password_file,
        ack_timeout_s=5,
    )
    fleet = Fleet([args.device], workdir=args.state, mqtt=mqtt, clock=SystemClock(), cooldown_s=0)
    fleet.start()
    try:
        unit = fleet.units[args.device]
        if args.command == "press":
            score = int(args.value)
            if not 1 <= score <= unit.config.scale:
                print(f"score must be 1..{unit.config.scale}", file=sys.stderr)
                return 2
            counted = unit.press(score)
            seq = unit.daemon.outbox.last_seq
            print(
                f"{'pressed' if counted else 'not counted'}: {args.device} score {score} "
                f"(stream {unit.daemon.outbox.stream}, seq {seq})"
            )
        else:
            unit.badge(args.value)
            print(f"badge {args.value} tapped on {args.device}")
        if fleet.drain(args.wait):
            print("acknowledged by the collector")
            return 0
        print(
            f"not acknowledged within {args.wait:g}s; the event stays queued in "
            f"{args.state / args.device} and goes out next time",
            file=sys.stderr,
        )
        return 1
    finally:
        fleet.stop()


def cmd_tail(args: argparse.Namespace) -> int:
    import httpx

    cursor, seen = args.after, 0
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=10) as client:
        while True:
            r = client.get("/api/v1/feeds/events", params={"after": cursor, "limit": 1000})
            if r.status_code != 200:
                print(f"feed answered {r.status_code}: {r.text}", file=sys.stderr)
                return 1
            for line in r.text.splitlines():
                e = json.loads(line)
                print(
                    f"{e['pressed_at']}  {e['centre'] or '-':16s} {e['device']:24s} "
                    f"{e['type']:12s} {e['score'] if e['score'] is not None else '':>2}",
                    flush=True,
                )
                seen += 1
                if args.count and seen >= args.count:
                    return 0
            cursor = int(r.headers.get("X-Next-Cursor", cursor))
            time.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        from simulator.demo import DemoOptions, run_demo

        return run_demo(
            DemoOptions(
                data=args.data,
                units_per_centre=args.units_per_centre,
                factor=args.factor,
                seed=args.seed,
                days=args.days,
                http_port=args.http_port,
                broker=args.broker,
                report_every_s=args.report_every,
            )
        )
    if args.command in ("press", "badge"):
        return cmd_one_shot(args)
    if args.command == "tail":
        return cmd_tail(args)
    if args.command == "run":
        import shutil
        import tempfile

        from simulator.scenarios import load_scenario, on_broker, run_scenario

        try:
            sc = load_scenario(args.scenario)
            if args.broker and args.broker != sc.broker:
                sc = on_broker(sc, args.broker)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"scenario {sc.name}: {sc.description}")
        work = args.work or Path(tempfile.mkdtemp(prefix=f"gnahat-scenario-{sc.name}-"))
        report = run_scenario(
            sc, workdir=work, database_url=args.database_url, port_base=args.port_base
        )
        if report.ok and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs: {work / 'collector.log'}, {work / 'broker.log'}")
        return 0 if report.ok else 1
    if args.command == "me-is":
        import threading

        from simulator.me_is import FakeMeIs
        from simulator.me_is_server import FakeMeIsServer

        fake = FakeMeIs(username=args.user, password=args.password)
        if args.token:
            fake.tokens[args.token] = {"F_DATAVALUE_ADD"}
        if args.metadata:
            fake.load_metadata(json.loads(args.metadata.read_text(encoding="utf-8")))
        server = FakeMeIsServer(fake, port=args.port).start()
        print(
            f"fake M&E IS at {server.url}/api/dataValueSets (faults: POST {server.url}"
            "/_fake/faults); Ctrl-C stops it"
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        server.stop()
        return 0
    if args.command == "scenarios":
        from simulator.scenarios import ACTIONS, SHIPPED, load_scenario

        for f in sorted(SHIPPED.glob("*.toml")):
            print(f"{f.stem:14s} {load_scenario(f).description}")
        print()
        for name, what in ACTIONS.items():
            print(f"{name:22s} {what}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

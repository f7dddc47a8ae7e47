"""``gnahat-device``: run the unit daemon, self-test a unit, show its queue."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from device.mqtt_loop import stop_loop

DEFAULT_CONFIG = "/etc/gnahat/unit.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnahat-device", description="Gnahat button unit: rating buttons to MQTT."
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the unit daemon (systemd Type=notify)")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    st = sub.add_parser("selftest", help="technician's check: LEDs, buttons, badge, broker, clock")
    st.add_argument("--config", default=DEFAULT_CONFIG)
    st.add_argument(
        "--auto",
        action="store_true",
        help="only the checks that need no person (broker, clock, disk, config)",
    )
    st.add_argument("--timeout", type=float, default=20.0, help="seconds to wait per press")
    status = sub.add_parser("status", help="outbox depth, last ack, stream, seq")
    status.add_argument("--config", default=DEFAULT_CONFIG)
    return parser


def cmd_run(config_path: str) -> int:
    from device.config import load_config
    from device.daemon import Daemon
    from device.errors import ConfigError

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        _fault_signal()
        return 78  # EX_CONFIG: systemd shows it; the fault LED is lit
    daemon = Daemon(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.request_stop())
    daemon.start()
    try:
        daemon.run()
    finally:
        daemon.stop()
    return 0


def _fault_signal() -> None:
    """No usable config: light the fault LED on its default pin if GPIO is there."""
    try:
        from gpiozero import LED

        from device import pins

        led = LED(pins.FAULT_LED)
        led.blink(on_time=1, off_time=1, background=True)
        threading.Event().wait(5)
        led.close()
    except Exception:  # no GPIO on this machine
        pass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def selftest(
    cfg: Any,
    *,
    pin_factory: Any = None,
    ask: Callable[[str], bool] | None = None,
    wait_press: Callable[[Any, float], bool] | None = None,
    timeout: float = 20.0,
    out: TextIO = sys.stdout,
    auto: bool = False,
) -> list[Check]:
    """Run every check, print ``PASS``/``FAIL`` per line, return the results."""
    from device.clock import kernel_clock_synced

    checks: list[Check] = []

    def report(c: Check) -> None:
        checks.append(c)
        out.write(f"{'PASS' if c.ok else 'FAIL'}  {c.name:28s} {c.detail}\n")
        out.flush()

    report(Check("config", True, f"device {cfg.device_id}, {cfg.scale} buttons, {cfg.mode} mode"))
    m = cfg.mqtt
    try:
        with socket.create_connection((m.host, m.port), timeout=5):
            report(Check("broker reachable", True, f"{m.host}:{m.port}"))
    except OSError as exc:
        report(Check("broker reachable", False, f"{m.host}:{m.port}: {exc}"))
    report(Check("broker login", *_mqtt_login(cfg)))
    synced = kernel_clock_synced()
    report(
        Check(
            "clock synchronised",
            synced,
            "NTP in sync"
            if synced
            else "not in sync: presses are dated by the collector (check time sync)",
        )
    )
    try:
        free = shutil.disk_usage(str(_parent(cfg.outbox_path))).free / 2**20
        report(Check("disk space", free > 50, f"{free:.0f} MiB free for the outbox"))
    except OSError as exc:
        report(Check("disk space", False, str(exc)))
    if auto:
        return checks
    from gpiozero import LED, Button

    ask = ask or _ask_tty
    for i, pin in enumerate(cfg.pins.leds):
        with LED(pin, pin_factory=pin_factory) as led:
            led.on()
            report(
                Check(
                    f"LED of button {i + 1}",
                    ask(f"Is the LED of button {i + 1} lit?"),
                    f"BCM {pin}",
                )
            )
    for name, pin in (("prompt LED", cfg.pins.prompt_led), ("fault LED", cfg.pins.fault_led)):
        if pin is not None:
            with LED(pin, pin_factory=pin_factory) as led:
                led.on()
                report(Check(name, ask(f"Is the {name} lit?"), f"BCM {pin}"))
    waiter = wait_press or (lambda b, t: bool(b.wait_for_press(t)))
    for i, pin in enumerate(cfg.pins.buttons):
        out.write(f"      press button {i + 1} (score {i + 1}) ...\n")
        out.flush()
        with Button(pin, pull_up=True, pin_factory=pin_factory) as b:
            ok = waiter(b, timeout)
        report(Check(f"button {i + 1}", ok, f"BCM {pin}" + ("" if ok else " — no press seen")))
    return checks


def _parent(path: str) -> Any:
    from pathlib import Path

    p = Path(path).parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _mqtt_login(cfg: Any) -> tuple[bool, str]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    done = threading.Event()
    result: list[str] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{cfg.device_id}-selftest", protocol=mqtt.MQTTv311
    )
    if m.username:
        client.username_pw_set(m.username, m.password())
    if m.tls:
        client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file, keyfile=m.key_file)

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        result.append(str(reason))
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
    except OSError as exc:
        return False, str(exc)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    stop_loop(client)
    if not result:
        return False, "no answer from the broker"
    return result[0] == "Success", f"as {m.username or 'anonymous'}: {result[0]}"


def _ask_tty(question: str) -> bool:
    answer = input(f"      {question} [y/n] ").strip().lower()
    return answer.startswith("y")


def cmd_status(config_path: str, out: TextIO = sys.stdout) -> int:
    from device.config import load_config
    from device.outbox import Outbox

    cfg = load_config(config_path)
    with Outbox(cfg.outbox_path, max_events=cfg.outbox_max_events) as outbox:
        oldest = outbox.oldest()
        out.write(
            f"device      {cfg.device_id}\n"
            f"stream      {outbox.stream}\n"
            f"last seq    {outbox.last_seq}\n"
            f"queued      {outbox.depth} of {outbox.max_events}\n"
            f"oldest      {'-' if oldest is None else oldest[0]}\n"
            f"last ack    {outbox.meta('last_ack_at') or 'never'}\n"
        )
        if outbox.recovered_from is not None:
            out.write(
                f"WARNING     the outbox was corrupt and was moved to {outbox.recovered_from};\n"
                "            a new stream started; unsent events still readable there: "
                f"{outbox.recovered_unsent if outbox.recovered_unsent is not None else '?'}\n"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "status":
        return cmd_status(args.config)
    from device.config import load_config
    from device.errors import ConfigError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"FAIL  config                       {exc}")
        return 1
    checks = selftest(cfg, timeout=args.timeout, auto=args.auto)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

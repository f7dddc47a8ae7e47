"""One simulated unit in its own process: the real device daemon on gpiozero mock pins.

Driven by lines on stdin, answers on stdout (one line each), so a test or the
fleet can SIGKILL it at any instant and start it again on the same outbox:

    press SCORE        → "ok SEQ" once the press is durably written and acknowledged
                         to the visitor, "no" when not counted
    badge BADGE        → "ok"   (an RDM6300 frame through a virtual serial port)
    arm                → "ok"   (the staff arm button)
    auto N [SCORES]    → presses N times (scores cycling), then "done A" (A acknowledged)
    drain SECONDS      → "drained" when every event is acked, else "pending DEPTH"
    status             → "status depth=D stream=S last_seq=Q connected=0|1 broker=H:P
                          published=N resent=N restarts=N inflight=N"
    limit [N]          → "ok N": the outbox refuses presses beyond N events (full disk)
    fill N             → "ok N": the outbox is full (as a full disk) for exactly the next N
                         presses; they are refused with the fault pattern, then it has room
    quit               → "bye", clean stop

``python -m simulator.unit_process CONFIG.toml``
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from device.config import load_config
from device.daemon import Daemon
from device.feedback import Pattern
from device.inputs import Rdm6300Parser


class LoopbackSerial:
    """A serial port whose incoming bytes are written by the simulator."""

    def __init__(self) -> None:
        import serial

        self.port = serial.serial_for_url("loop://", timeout=0.2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.port, name)


class SkewedClock:
    """The system clock shifted by ``skew_s`` (a unit whose clock is wrong), its wall time
    optionally running ``factor`` times faster from ``epoch`` (a scenario's visitors
    come at human rates while the run takes minutes). The monotonic clock is real."""

    def __init__(
        self, inner: Any, skew_s: float, *, factor: float = 1.0, epoch: float | None = None
    ) -> None:
        self.inner = inner
        self.skew = timedelta(seconds=skew_s)
        self.factor = factor
        self.epoch = datetime.fromtimestamp(epoch, UTC) if epoch is not None else None

    def now(self) -> datetime:
        real: datetime = self.inner.now()
        if self.epoch is not None and self.factor != 1.0:
            real = self.epoch + (real - self.epoch) * self.factor
        return real + self.skew

    def mono_ms(self) -> int:
        result: int = self.inner.mono_ms()
        return result

    def synced(self) -> bool:
        result: bool = self.inner.synced()
        return result


def run(
    config_path: str,
    *,
    unsynced: bool = False,
    skew_s: float = 0.0,
    time_factor: float = 1.0,
    epoch: float | None = None,
) -> int:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from device.clock import SystemClock

    cfg = load_config(config_path)
    factory = MockFactory(pin_class=MockPWMPin)
    clock: Any = SystemClock(synced_check=lambda: not unsynced)
    if skew_s or time_factor != 1.0:
        clock = SkewedClock(clock, skew_s, factor=time_factor, epoch=epoch)
    serials: dict[str, LoopbackSerial] = {}

    def serial_factory(url: str, baud: int) -> Any:
        serials[url] = LoopbackSerial()
        return serials[url].port

    daemon = Daemon(
        cfg,
        pin_factory=factory,
        clock=clock,
        serial_factory=serial_factory,
        voice_runner=lambda argv: None,
    )
    daemon.start()
    assert daemon.unit is not None and daemon.feedback is not None and daemon.link is not None
    unit, link, outbox = daemon.unit, daemon.link, daemon.outbox
    out = sys.stdout

    def reply(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    fill_left = [0]

    def press(score: int) -> str:
        if fill_left[0] > 0:
            outbox.max_events = 0  # full: the real refusal path (OutboxFull), nothing dropped
        before = len(daemon.feedback.shown) if daemon.feedback else 0
        pin = factory.pin(cfg.pins.buttons[score - 1])
        pin.drive_low()
        pin.drive_high()
        shown = daemon.feedback.shown[before:] if daemon.feedback else []
        if fill_left[0] > 0:
            fill_left[0] -= 1
            if fill_left[0] == 0:
                outbox.max_events = cfg.outbox_max_events  # room again
        if any(pat is Pattern.THANKS for pat, _ in shown):
            return f"ok {outbox.last_seq}"
        return "no"

    reply(f"ready {cfg.device_id} {outbox.stream}")
    try:
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            cmd, args = parts[0], parts[1:]
            if cmd == "press":
                reply(press(int(args[0])))
            elif cmd == "badge":
                if cfg.badge_reader is not None and daemon.badge_reader is not None:
                    daemon.badge_reader.handle_bytes(Rdm6300Parser.encode_frame(args[0]))
                else:
                    unit.badge(args[0])
                reply("ok")
            elif cmd == "arm":
                if cfg.pins.arm_button is not None:
                    pin = factory.pin(cfg.pins.arm_button)
                    pin.drive_low()
                    pin.drive_high()
                reply("ok")
            elif cmd == "auto":
                scores = [int(s) for s in args[1].split(",")] if len(args) > 1 else [4, 3, 4, 2]
                acked = 0
                for i in range(int(args[0])):
                    if press(scores[i % len(scores)]).startswith("ok"):
                        acked += 1
                reply(f"done {acked}")
            elif cmd == "drain":
                ok = link.wait_until_drained(float(args[0]) if args else 60.0)
                reply("drained" if ok else f"pending {outbox.depth}")
            elif cmd == "status":
                ep = link.failover.current if link.failover is not None else ("-", 0)
                reply(
                    f"status depth={outbox.depth} stream={outbox.stream} last_seq={outbox.last_seq}"
                    f" connected={int(link.connected.is_set())} broker={ep[0]}:{ep[1]}"
                    f" published={link.published} resent={link.resent} restarts={link.restarts}"
                    f" inflight={link.in_flight}"
                )
            elif cmd == "limit":
                # Simulates a full outbox: presses are refused (fault pattern), none dropped.
                outbox.max_events = int(args[0]) if args else outbox.depth
                reply(f"ok {outbox.max_events}")
            elif cmd == "fill":
                fill_left[0] = int(args[0])
                reply(f"ok {fill_left[0]}")
            elif cmd == "quit":
                break
            else:
                reply(f"error unknown command {cmd}")
    finally:
        daemon.stop()
    reply("bye")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.unit_process")
    parser.add_argument("config")
    parser.add_argument("--unsynced", action="store_true", help="report the clock as unsynced")
    parser.add_argument("--skew-s", type=float, default=0.0, help="shift the wall clock")
    parser.add_argument("--time-factor", type=float, default=1.0, help="wall clock speed")
    parser.add_argument("--epoch", type=float, default=None, help="when the speed-up starts")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return run(
        args.config,
        unsynced=args.unsynced,
        skew_s=args.skew_s,
        time_factor=args.time_factor,
        epoch=args.epoch,
    )


if __name__ == "__main__":
    sys.exit(main())

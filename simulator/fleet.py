"""A fleet of simulated units in one process: the real device daemon, each on its own
gpiozero MockFactory, its own outbox and a virtual badge reader (``loop://``).

Presses go through the real GPIO input path (``pin.drive_low()``), so debounce,
cooldown, outbox, feedback and link are the ones that run on a Pi. For faults that
need a power cut, use :class:`simulator.units.UnitProcess` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from device.config import MqttConfig, UnitConfig, parse_config
from device.daemon import Daemon
from device.feedback import Pattern
from device.inputs import Rdm6300Parser

log = logging.getLogger(__name__)


class SimClock:
    """Simulated wall time running ``factor`` times faster than real time.

    Monotonic time stays real: timers and ack time-outs behave as on a unit.
    """

    def __init__(self, start: datetime, factor: float = 1.0, *, synced: bool = True) -> None:
        self.start = start
        self.factor = factor
        self.is_synced = synced
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def synced(self) -> bool:
        return self.is_synced

    def real_seconds_until(self, at: datetime) -> float:
        return max(0.0, (at - self.now()).total_seconds() / self.factor)


@dataclass
class SimUnit:
    device: str
    daemon: Daemon
    factory: Any
    presses: int = 0
    acknowledged: int = 0
    not_counted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def config(self) -> UnitConfig:
        return self.daemon.config

    def press(self, score: int) -> bool:
        fb = self.daemon.feedback
        assert fb is not None
        with self.lock:
            before = len(fb.shown)
            pin = self.factory.pin(self.config.pins.buttons[score - 1])
            pin.drive_low()
            pin.drive_high()
            self.presses += 1
            shown = [pat for pat, _ in fb.shown[before:]]
            if Pattern.THANKS in shown:
                self.acknowledged += 1
                return True
            self.not_counted += 1
            return False

    def badge(self, badge: str) -> None:
        reader = self.daemon.badge_reader
        with self.lock:
            if reader is not None:
                reader.handle_bytes(Rdm6300Parser.encode_frame(badge))
            elif self.daemon.unit is not None:
                self.daemon.unit.badge(badge)

    @property
    def queued(self) -> int:
        return self.daemon.outbox.depth


class LoopSerial:
    @staticmethod
    def open(url: str, baud: int) -> Any:
        import serial

        return serial.serial_for_url("loop://", timeout=0.2)


class Fleet:
    def __init__(
        self,
        devices: Iterable[str],
        *,
        workdir: Path,
        mqtt: MqttConfig,
        clock: Any,
        mode: str = "free",
        cooldown_s: float = 3.0,
        unit_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.clock = clock
        self.units: dict[str, SimUnit] = {}
        self._configs = []
        for device in devices:
            cfg = parse_config(
                {
                    "unit": {
                        "device_id": device,
                        "mode": mode,
                        "cooldown_s": cooldown_s,
                        "debounce_ms": 0,
                        **(unit_overrides or {}),
                    },
                    "badge_reader": {"port": "loop://"},
                }
            )
            cfg = replace(cfg, mqtt=mqtt, outbox_path=str(workdir / device / "outbox.db"))
            self._configs.append(cfg)

    def start(self) -> None:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        for cfg in self._configs:
            factory = MockFactory(pin_class=MockPWMPin)
            daemon = Daemon(
                cfg,
                pin_factory=factory,
                clock=self.clock,
                serial_factory=LoopSerial.open,
                voice_runner=lambda argv: None,
            )
            daemon.start()
            self.units[cfg.device_id] = SimUnit(cfg.device_id, daemon, factory)

    def stop(self) -> None:
        for unit in self.units.values():
            unit.daemon.stop()

    def drain(self, timeout: float = 30.0) -> bool:
        ok = True
        for unit in self.units.values():
            assert unit.daemon.link is not None
            ok = unit.daemon.link.wait_until_drained(timeout) and ok
        return ok

    def totals(self) -> dict[str, int]:
        return {
            "presses": sum(u.presses for u in self.units.values()),
            "acknowledged": sum(u.acknowledged for u in self.units.values()),
            "not_counted": sum(u.not_counted for u in self.units.values()),
            "queued": sum(u.queued for u in self.units.values()),
        }

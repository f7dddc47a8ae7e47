"""The unit daemon: builds every part from the config and runs until told to stop.

Talks to systemd (``Type=notify``): READY once the outbox is open and the inputs
are live, WATCHDOG pings from the main loop, STOPPING on the way out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from device.clock import Clock, SystemClock
from device.config import UnitConfig
from device.feedback import Feedback, Voice
from device.inputs import ArmButton, BadgeReader, QueueSerial, RatingButtons
from device.link import Link
from device.outbox import Outbox
from device.unit import Unit

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notify socket, if there is one."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall(state.encode("ascii"))
    return True


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2_000_000 if usec and usec.isdigit() else None


def open_serial(url: str, baudrate: int) -> Any:
    import serial

    return serial.serial_for_url(
        url, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=0.2
    )


class Daemon:
    def __init__(
        self,
        config: UnitConfig,
        *,
        pin_factory: Any = None,
        clock: Clock | None = None,
        serial_factory: Callable[[str, int], Any] = open_serial,
        voice_runner: Callable[[list[str]], Any] | None = None,
    ) -> None:
        self.config = config
        self.pin_factory = pin_factory
        self.clock = clock or SystemClock()
        self.serial_factory = serial_factory
        self.voice_runner = voice_runner
        self.outbox = Outbox(config.outbox_path, max_events=config.outbox_max_events)
        self.feedback: Feedback | None = None
        self.unit: Unit | None = None
        self.link: Link | None = None
        self.buttons: RatingButtons | None = None
        self.arm_button: ArmButton | None = None
        self.badge_reader: BadgeReader | None = None
        self.queue_serial: QueueSerial | None = None
        self.kiosk: Any = None
        self._stop = threading.Event()

    def start(self) -> None:
        cfg = self.config
        pins = cfg.pins
        self.outbox.open()
        self.feedback = Feedback(
            leds=pins.leds,
            prompt_led=pins.prompt_led,
            fault_led=pins.fault_led,
            buzzer=pins.buzzer,
            voice=Voice(cfg.voice, self.voice_runner),
            pin_factory=self.pin_factory,
        )
        link_ref: list[Link] = []
        self.unit = Unit(
            cfg,
            clock=self.clock,
            outbox=self.outbox,
            feedback=self.feedback,
            on_appended=lambda _e: link_ref[0].wake() if link_ref else None,
        )
        self.link = Link(
            cfg,
            self.outbox,
            self.clock,
            boot=self.unit.boot,
            health_extra=self.health,
            on_command=self.unit.on_command,
        )
        link_ref.append(self.link)
        self.buttons = RatingButtons(
            pins.buttons,
            debounce_ms=cfg.debounce_ms,
            mono_ms=self.clock.mono_ms,
            pin_factory=self.pin_factory,
        )
        self.buttons.when_rated = self.unit.press
        if pins.arm_button is not None:
            self.arm_button = ArmButton(
                pins.arm_button,
                debounce_ms=cfg.debounce_ms,
                mono_ms=self.clock.mono_ms,
                pin_factory=self.pin_factory,
            )
            self.arm_button.when_armed = self.unit.arm
        # Optional peripherals open on their own threads: one that is unplugged (now or
        # later) is reported in health and reopened, and the buttons work regardless.
        if cfg.badge_reader is not None:
            badge = cfg.badge_reader
            self.badge_reader = BadgeReader(
                hold_ms=cfg.badge_hold_ms,
                mono_ms=self.clock.mono_ms,
                opener=lambda: self.serial_factory(badge.port, badge.baudrate),
            )
            self.badge_reader.when_badge = self.unit.badge
            self.badge_reader.start()
        if cfg.queue_serial is not None:
            qcfg = cfg.queue_serial
            self.queue_serial = QueueSerial(
                opener=lambda: self.serial_factory(qcfg.port, qcfg.baudrate)
            )
            self.queue_serial.when_armed = lambda _ticket: (
                self.unit.arm("queue") if self.unit else None
            )
            self.queue_serial.start()
        if cfg.kiosk.enabled:
            from device.kiosk import KioskServer

            self.kiosk = KioskServer(self.unit, cfg.kiosk).start()
        self.link.start()
        sd_notify("READY=1\nSTATUS=accepting presses")
        log.info(
            "unit %s up: stream %s, %d queued", cfg.device_id, self.outbox.stream, self.outbox.depth
        )

    def peripherals(self) -> dict[str, str]:
        """State of each optional peripheral: ``ok``, or why it is not."""
        out: dict[str, str] = {}
        for part in (self.badge_reader, self.queue_serial):
            if part is not None:
                out[part.name] = (
                    part.state if part.last_error is None else (f"{part.state}: {part.last_error}")
                )
        return out

    def health(self) -> dict[str, Any]:
        """What the heartbeat adds: the unit's figures, peripherals, outbox recovery."""
        extra = self.unit.health() if self.unit is not None else {}
        parts = self.peripherals()
        if parts:
            extra["peripherals"] = parts
        if self.outbox.recovered_from is not None:
            extra["outbox_recovered"] = self.outbox.recovered_from
            extra["outbox_recovered_unsent"] = self.outbox.recovered_unsent
        return extra

    def run(self) -> None:
        """Main loop: timers and watchdog until :meth:`request_stop`."""
        wd = watchdog_interval_s()
        tick = min(1.0, wd) if wd else 1.0
        while not self._stop.wait(tick):
            if self.unit is not None:
                self.unit.tick()
            if wd:
                sd_notify("WATCHDOG=1")

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        sd_notify("STOPPING=1")
        if self.kiosk is not None:
            self.kiosk.stop()  # no new ratings from the screen while we shut down
        for part in (self.badge_reader, self.queue_serial):
            if part is not None:
                part.close()
        if self.link is not None:
            self.link.stop()
        for part2 in (self.buttons, self.arm_button, self.feedback):
            if part2 is not None:
                part2.close()
        self.outbox.close()

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

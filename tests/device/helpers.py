"""Builders for unit tests: configs and a wired unit on mock pins."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from device.clock import FakeClock
from device.config import MqttConfig, UnitConfig, parse_config
from device.feedback import Feedback
from device.outbox import Outbox
from device.unit import Unit

YEREVAN = timezone(timedelta(hours=4))
#: Parts built by make_unit; tests/device/conftest.py closes them after each test.
BUILT: list[Any] = []
DEV = "am-sh-gyumri1-d03"


def config(tmp_path: Path, **unit: Any) -> UnitConfig:
    cfg = parse_config({"unit": {"device_id": DEV, **unit}})
    return replace(cfg, outbox_path=str(tmp_path / "outbox.db"))


def with_broker(cfg: UnitConfig, host: str, port: int, **mqtt: Any) -> UnitConfig:
    return replace(cfg, mqtt=MqttConfig(host=host, port=port, username=None, **mqtt))


def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 24, 10, 0, tzinfo=YEREVAN))


def make_unit(cfg: UnitConfig, factory: Any, clk: FakeClock) -> tuple[Unit, Outbox, Feedback]:
    outbox = Outbox(cfg.outbox_path, max_events=cfg.outbox_max_events).open()
    fb = Feedback(
        leds=cfg.pins.leds,
        prompt_led=cfg.pins.prompt_led,
        fault_led=cfg.pins.fault_led,
        buzzer=cfg.pins.buzzer,
        pin_factory=factory,
    )
    BUILT.extend([fb, outbox])
    return Unit(cfg, clock=clk, outbox=outbox, feedback=fb, boot="boot1"), outbox, fb

"""Unit config validation, the pin map kept equal to hardware/, and the device CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from device import pins
from device.cli import cmd_status, main, selftest
from device.config import load_config, parse_config
from device.errors import ConfigError
from simulator.broker import MosquittoBroker
from simulator.units import unit_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "unit.device_id: missing"),
        ({"unit": {"device_id": "Bad Id"}}, "unit.device_id: 'Bad Id' is not a device id"),
        ({"unit": {"device_id": "d1", "mode": "party"}}, "unit.mode: 'party' is not a mode"),
        ({"unit": {"device_id": "d1", "scale": 7}}, "unit.scale: 7 buttons"),
        ({"unit": {"device_id": "d1", "cooldown_s": "3"}}, "unit.cooldown_s: '3' has the wrong"),
        ({"unit": {"device_id": "d1"}, "pins": {"buttons": [5, 6]}}, "pins.buttons: 2 pins"),
        ({"unit": {"device_id": "d1"}, "pins": {"buttons": [5, 6, 13, 17]}}, "used twice"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"cert_file": "c.pem"}}, "mqtt.key_file"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"batch_max": 1000}}, "mqtt.batch_max"),
        ({"unit": {"device_id": "d1"}, "badge_reader": {}}, "badge_reader.port: missing"),
        ({"unit": {"device_id": "d1"}, "outbox": {"max_events": 0}}, "outbox.max_events"),
        ({"unit": {"device_id": "d1"}, "gpio": {}}, "gpio: unknown section"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"brokers": "b:1883"}}, "mqtt.brokers: 'b:1883'"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"brokers": ["b:99999"]}}, "1 to 65535"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"brokers": ["b:1883/x"]}}, "not host or host:port"),
        ({"unit": {"device_id": "d1"}, "mqtt": {"brokers": [""]}}, "an empty broker endpoint"),
    ],
)
def test_config_errors_name_key_and_fix(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
    assert " — " in str(info.value)  # every problem says how to fix it


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[unit\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_defaults_come_from_the_pin_map() -> None:
    cfg = parse_config({"unit": {"device_id": "d1", "scale": 5}})
    assert cfg.pins.buttons == pins.RATING_BUTTONS and cfg.pins.buzzer == pins.BUZZER


def test_hardware_pin_map_matches_code() -> None:
    doc = (ROOT / "hardware" / "pinmap.md").read_text("utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", doc, re.M))
    assert {k: int(v) for k, v in rows.items()} == pins.PIN_MAP


def test_status_cli_shows_queue(tmp_path: Path) -> None:
    from device.outbox import Outbox

    cfg = unit_config(
        tmp_path / "u.toml",
        device_id="am-er-avan-d01",
        broker_host="127.0.0.1",
        broker_port=1,
        outbox=tmp_path / "o.db",
    )
    with Outbox(tmp_path / "o.db") as ob:
        stream = ob.stream
    out = io.StringIO()
    assert cmd_status(str(cfg), out) == 0
    text = out.getvalue()
    assert stream in text and "queued      0 of 200000" in text and "last ack    never" in text


def test_selftest_reports_pass_and_fail_per_line(
    broker: MosquittoBroker, tmp_path: Path, mock_factory: Any
) -> None:
    path = unit_config(
        tmp_path / "u.toml",
        device_id="am-er-avan-d01",
        broker_host=broker.host,
        broker_port=broker.port,
        outbox=tmp_path / "o.db",
    )
    cfg = load_config(path)
    presses = iter([True, False, True, True])
    out = io.StringIO()
    checks = selftest(
        cfg,
        pin_factory=mock_factory,
        ask=lambda q: True,
        wait_press=lambda b, t: next(presses),
        out=out,
    )
    lines = out.getvalue().splitlines()
    assert any(line.startswith("PASS  broker reachable") for line in lines)
    assert any(line.startswith("PASS  broker login") for line in lines)
    assert any(line.startswith("FAIL  button 2") for line in lines)
    assert sum(c.name.startswith("LED of button") for c in checks) == 4


def test_selftest_fails_on_unreachable_broker(tmp_path: Path) -> None:
    path = unit_config(
        tmp_path / "u.toml",
        device_id="am-er-avan-d01",
        broker_host="127.0.0.1",
        broker_port=1,
        outbox=tmp_path / "o.db",
    )
    out = io.StringIO()
    checks = selftest(load_config(path), auto=True, out=out)
    assert not next(c for c in checks if c.name == "broker reachable").ok
    assert main(["selftest", "--config", str(tmp_path / "missing.toml")]) == 1


def test_systemd_unit_is_notify_with_watchdog() -> None:
    text = (ROOT / "device" / "systemd" / "gnahat-device.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text


def test_daemon_notifies_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from device.daemon import sd_notify

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sd_notify("READY=1")
    assert sock.recv(100) == b"READY=1"
    sock.close()


def test_a_unit_takes_the_other_nodes_of_a_broker_cluster() -> None:
    cfg = parse_config(
        {
            "unit": {"device_id": "d1"},
            "mqtt": {"host": "a", "tls": True, "brokers": ["b", "c:8884", "[::1]:8885"]},
        }
    )
    assert cfg.mqtt.endpoints() == [("a", 8883), ("b", 8883), ("c", 8884), ("::1", 8885)]

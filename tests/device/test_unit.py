"""The unit's rules on gpiozero MockFactory pins: modes, cooldown, debounce, badges, faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from device import protocol as p
from device.daemon import Daemon
from device.feedback import Pattern
from device.inputs import Rdm6300Parser
from tests.device.helpers import DEV, clock, config, make_unit


def events(outbox: Any) -> list[dict[str, Any]]:
    return [json.loads(payload) for _, payload in outbox.pending(limit=10_000)]


def test_free_mode_press_cooldown_and_feedback_after_write(
    mock_factory: Any, tmp_path: Path
) -> None:
    clk = clock()
    cfg = config(tmp_path, cooldown_s=3)
    unit, outbox, fb = make_unit(cfg, mock_factory, clk)
    seen_depth: list[int] = []
    fb.on_shown(lambda pat, arg: seen_depth.append(outbox.depth))
    assert unit.press(4)
    assert seen_depth == [1]  # feedback came after the durable write
    clk.advance(1000)
    assert not unit.press(1)  # inside the cooldown: suppressed, not sent
    clk.advance(2500)
    assert unit.press(2)
    evs = events(outbox)
    assert [(e["seq"], e["score"], e["scale"], e["staff"]) for e in evs] == [
        (1, 4, 4, None),
        (2, 2, 4, None),
    ]
    assert [s for s, _ in fb.shown] == [Pattern.THANKS, Pattern.NOT_COUNTED, Pattern.THANKS]
    assert unit.suppressed == 1 and unit.health()["suppressed_presses"] == 1
    assert all(e["device"] == DEV and e["stream"] == outbox.stream for e in evs)
    assert evs[0]["at"].endswith("+04:00") and evs[0]["clock_synced"] is True


def test_buttons_on_mock_pins_debounce_and_light_the_pressed_led(
    mock_factory: Any, tmp_path: Path
) -> None:
    clk = clock()
    cfg = config(tmp_path, cooldown_s=0, debounce_ms=40)
    d = Daemon(cfg, pin_factory=mock_factory, clock=clk)
    from dataclasses import replace

    from device.config import MqttConfig

    d.config = replace(cfg, mqtt=MqttConfig(host="127.0.0.1", port=1))  # never connects
    d.start()
    try:
        pin = mock_factory.pin(cfg.pins.buttons[2])
        pin.drive_low()  # press score 3
        clk.advance(5)
        pin.drive_high()
        pin.drive_low()  # contact bounce 5 ms later: ignored
        pin.drive_high()
        clk.advance(100)
        pin.drive_low()  # a real second press
        pin.drive_high()
        assert [e["score"] for e in events(d.outbox)] == [3, 3]
        assert d.buttons is not None and d.buttons.bounces == 1
        led = mock_factory.pin(cfg.pins.leds[2])
        assert led.state or led.states  # the LED of button 3 was driven
    finally:
        d.stop()


def test_armed_mode_one_press_per_arming_and_window(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    unit, outbox, fb = make_unit(config(tmp_path, mode="armed", arm_window_s=20), mock_factory, clk)
    assert not unit.press(4)  # not armed: not counted
    unit.arm()
    assert unit.is_armed
    assert unit.press(3)
    assert not unit.press(3)  # one press per encounter: mashing impossible
    unit.arm()
    clk.advance(20_001)
    assert not unit.is_armed and not unit.press(2)  # window elapsed
    assert [e["score"] for e in events(outbox)] == [3]
    assert unit.not_armed == 3
    kinds = [s for s, _ in fb.shown]
    assert kinds.count(Pattern.PROMPT_ON) == 2 and kinds.count(Pattern.NOT_COUNTED) == 3


def test_badges_login_logout_switch_and_timeout(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    unit, outbox, _ = make_unit(
        config(tmp_path, cooldown_s=0, session_timeout_s=60), mock_factory, clk
    )
    unit.badge("0F00A1B2C3")
    unit.press(4)
    unit.badge("0F00A1B2C3")  # same badge: logout
    unit.press(2)
    unit.badge("AAAAAAAAAA")
    unit.badge("BBBBBBBBBB")  # another badge: switch
    clk.advance(61_000)
    unit.tick()  # session timeout
    got = [(e["type"], e.get("staff")) for e in events(outbox)]
    assert got == [
        ("staff_login", "0F00A1B2C3"),
        ("rating", "0F00A1B2C3"),
        ("staff_logout", "0F00A1B2C3"),
        ("rating", None),
        ("staff_login", "AAAAAAAAAA"),
        ("staff_logout", "AAAAAAAAAA"),
        ("staff_login", "BBBBBBBBBB"),
        ("staff_logout", "BBBBBBBBBB"),
    ]
    assert events(outbox)[-1]["reason"] == "timeout"


def test_armed_mode_badge_tap_arms_and_second_tap_logs_out(
    mock_factory: Any, tmp_path: Path
) -> None:
    clk = clock()
    unit, outbox, _ = make_unit(config(tmp_path, mode="armed"), mock_factory, clk)
    unit.badge("0F00A1B2C3")  # login and arm
    assert unit.is_armed
    assert unit.press(5 - 1)
    unit.badge("0F00A1B2C3")  # arms again
    assert unit.is_armed
    unit.badge("0F00A1B2C3")  # tap while armed: logout
    assert unit.staff is None and not unit.is_armed
    assert [e["type"] for e in events(outbox)] == ["staff_login", "rating", "staff_logout"]


def test_outbox_full_refuses_visibly_and_keeps_old_events(
    mock_factory: Any, tmp_path: Path
) -> None:
    from dataclasses import replace

    clk = clock()
    cfg = replace(config(tmp_path, cooldown_s=0), outbox_max_events=2)
    unit, outbox, fb = make_unit(cfg, mock_factory, clk)
    assert unit.press(1) and unit.press(2)
    assert not unit.press(3)
    assert fb.shown[-1][0] is Pattern.FAULT and unit.refused == 1
    assert [e["score"] for e in events(outbox)] == [1, 2]
    fault_led = mock_factory.pin(cfg.pins.fault_led)
    assert fault_led.state
    outbox.ack([(1, 1)])
    assert unit.press(3)


def test_unsynced_clock_is_reported(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    clk.is_synced = False
    unit, outbox, _ = make_unit(config(tmp_path), mock_factory, clk)
    unit.press(4)
    e = events(outbox)[0]
    assert e["clock_synced"] is False and e["mono_ms"] == clk.mono and e["boot"] == "boot1"


def test_rdm6300_over_loop_serial_checksum_resync_and_hold(tmp_path: Path) -> None:
    import serial

    from device.inputs import BadgeReader

    port = serial.serial_for_url("loop://", timeout=0.2)
    clk = clock()
    reader = BadgeReader(port, hold_ms=1500, mono_ms=clk.mono_ms)
    got: list[str] = []
    reader.when_badge = got.append
    good = Rdm6300Parser.encode_frame("0F00A1B2C3")
    broken = bytearray(good)
    broken[5] ^= 0x01  # flips a data character: checksum fails
    port.write(b"\x00garbage" + bytes(broken) + good)
    reader.poll()
    port.write(good)  # held on the reader: the same tap
    clk.advance(200)
    reader.poll()
    clk.advance(2000)
    port.write(good[:7])  # a new tap, split across reads
    reader.poll()
    port.write(good[7:])
    reader.poll()
    assert got == ["0F00A1B2C3", "0F00A1B2C3"]
    assert reader.parser.errors >= 2
    reader.close()


@pytest.mark.parametrize("frame", [b"\x020F00A1B2C3XX\x03", b"\x02" + b"0" * 12 + b"\x04"])
def test_rdm6300_bad_frames_are_refused(frame: bytes) -> None:
    from device.errors import BadgeFrameError

    with pytest.raises(BadgeFrameError):
        Rdm6300Parser.decode_frame(frame)


def test_queue_system_arms_over_a_pty(mock_factory: Any, tmp_path: Path) -> None:
    import os
    import pty

    import serial

    from device.inputs import QueueSerial

    master, slave = pty.openpty()
    port = serial.Serial(os.ttyname(slave), 9600, timeout=0.2)
    clk = clock()
    unit, _outbox, _ = make_unit(config(tmp_path, mode="armed"), mock_factory, clk)
    qs = QueueSerial(port)
    qs.when_armed = lambda ticket: unit.arm("queue")
    os.write(master, b"HELLO\r\nARM A-042\r\n")
    while not unit.is_armed:
        qs.poll()
    assert qs.ignored == 1
    assert unit.press(4)
    qs.close()
    os.close(master)


def test_cmd_identify_blinks_everything(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    unit, _, fb = make_unit(config(tmp_path), mock_factory, clk)
    unit.on_command(p.Command.IDENTIFY, {"seconds": 1})
    assert fb.shown[-1][0] is Pattern.IDENTIFY


def test_health_heartbeat_reports_queue_clock_and_suppressed(
    mock_factory: Any, tmp_path: Path
) -> None:
    from device.link import Link

    clk = clock()
    clk.is_synced = False
    cfg = config(tmp_path, cooldown_s=3)
    unit, outbox, _ = make_unit(cfg, mock_factory, clk)
    unit.press(4)
    unit.press(4)  # suppressed by the cooldown
    clk.advance(5000)
    link = Link(cfg, outbox, clk, boot="boot1", health_extra=unit.health)
    h = p.decode_health(link.health_payload(), topic_device=DEV)
    assert h.queue_depth == 1 and h.oldest_unacked_s == 5.0
    assert h.clock_synced is False and h.suppressed_presses == 1
    assert h.stream == outbox.stream and h.last_seq == 1 and h.firmware == cfg.firmware
    assert h.extra["mode"] == "free" and h.disk_free_mb is not None

"""A missing or failing optional part never takes the unit's buttons down."""

from __future__ import annotations

import os
import pty
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from device.config import MqttConfig, SerialConfig
from device.daemon import Daemon
from device.outbox import Outbox
from tests.device.helpers import clock, config


def _press(mock_factory: Any, pin_no: int) -> None:
    pin = mock_factory.pin(pin_no)
    pin.drive_low()
    pin.drive_high()


def test_unplugged_badge_reader_at_start_and_while_running(
    mock_factory: Any, tmp_path: Path
) -> None:
    link = tmp_path / "ttyBADGE"  # nothing plugged in yet
    clk = clock()
    cfg = replace(
        config(tmp_path, cooldown_s=0),
        badge_reader=SerialConfig(port=str(link), baudrate=9600),
        mqtt=MqttConfig(host="127.0.0.1", port=1),  # never connects
    )
    d = Daemon(cfg, pin_factory=mock_factory, clock=clk)
    d.start()  # does not raise
    try:
        assert d.badge_reader is not None
        assert d.badge_reader.wait_state("unplugged")
        _press(mock_factory, cfg.pins.buttons[3])
        assert d.outbox.depth == 1  # the buttons work without the reader
        assert d.health()["peripherals"]["badge-reader"].startswith("unplugged")

        master, slave = pty.openpty()
        link.symlink_to(os.ttyname(slave))  # the reader is plugged in
        assert d.badge_reader.try_open()
        assert d.badge_reader.state == "ok" and d.health()["peripherals"]["badge-reader"] == "ok"

        os.close(master)  # pulled out while running: noticed, reported, reopened later
        assert d.badge_reader.wait_state("unplugged")
        _press(mock_factory, cfg.pins.buttons[2])
        assert d.outbox.depth == 2
        master2, slave2 = pty.openpty()
        link.unlink()
        link.symlink_to(os.ttyname(slave2))
        assert d.badge_reader.try_open() and d.badge_reader.reopened >= 1
        os.close(master2)
        os.close(slave)
        os.close(slave2)
    finally:
        d.stop()


def test_a_corrupt_outbox_is_moved_aside_and_a_new_stream_starts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as ob:
        old_stream = ob.stream
    path.write_bytes(b"this is not a database" * 100)  # a worn card
    with Outbox(path) as ob:
        assert ob.stream != old_stream and ob.last_seq == 0
        assert ob.recovered_from is not None and Path(ob.recovered_from).exists()
        moved = ob.recovered_from
    with Outbox(path) as ob:  # remembered across restarts, until re-imaged
        assert ob.recovered_from == moved
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"

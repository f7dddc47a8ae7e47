"""A missing or failing optional part never takes the unit's buttons down."""

from __future__ import annotations

import os
import pty
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from device.config import MqttConfig, SerialConfig
from device.daemon import Daemon
from device.outbox import Outbox
from tests.collector.helpers import event
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


def test_a_locked_outbox_is_left_alone_with_its_presses(tmp_path: Path) -> None:
    """ "database is locked" (another process holds the file), like an I/O error or a full
    disk, proves nothing about the file: it is not moved aside, no new stream starts,
    and the unacked press is there once the lock is gone."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as ob:
        stream = ob.stream
        ob.append(lambda seq: event(seq), mono_ms=0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # e.g. a technician's sqlite3 shell left open
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Outbox(path, busy_timeout_s=0.05).open()
        assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Outbox(path) as ob:
        assert (ob.stream, ob.depth, ob.recovered_from) == (stream, 1, None)


def test_a_moved_outbox_says_how_many_unsent_presses_it_still_holds(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as ob:
        for _ in range(3):
            ob.append(lambda seq: event(seq), mono_ms=0)
    with sqlite3.connect(path) as conn:  # a table of its own after the outbox's pages
        conn.execute("CREATE TABLE junk (x TEXT)")
        conn.executemany("INSERT INTO junk VALUES (?)", [("x" * 100,)] * 200)
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='junk'").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:  # a worn sector in that table: the outbox rows still read
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    with Outbox(path) as ob:
        assert ob.recovered_from is not None and ob.recovered_unsent == 3

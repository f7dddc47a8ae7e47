"""Start, drive, kill and restart unit processes (the real device code) from Python."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w


def unit_config(
    path: Path,
    *,
    device_id: str,
    broker_host: str,
    broker_port: int,
    outbox: Path,
    mode: str = "free",
    cooldown_s: float = 0.0,
    debounce_ms: int = 0,
    ack_timeout_s: float = 5.0,
    health_interval_s: float = 30.0,
    username: str | None = None,
    password_file: str | None = None,
    badge_reader: bool = True,
    extra_mqtt: dict[str, Any] | None = None,
) -> Path:
    """Write a unit TOML config (as provisioning would) for a simulated unit."""
    mqtt: dict[str, Any] = {
        "host": broker_host,
        "port": broker_port,
        "ack_timeout_s": ack_timeout_s,
        "health_interval_s": health_interval_s,
        "reconnect_min_s": 1,
        "reconnect_max_s": 5,
    }
    if username:
        mqtt["username"] = username
    if password_file:
        mqtt["password_file"] = password_file
    mqtt.update(extra_mqtt or {})
    data: dict[str, Any] = {
        "unit": {
            "device_id": device_id,
            "mode": mode,
            "cooldown_s": cooldown_s,
            "debounce_ms": debounce_ms,
        },
        "mqtt": mqtt,
        "outbox": {"path": str(outbox)},
    }
    if badge_reader:
        data["badge_reader"] = {"port": "loop://"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


class UnitProcess:
    """A ``simulator.unit_process`` child; ``kill()`` is a power cut (SIGKILL)."""

    def __init__(
        self,
        config: Path,
        *,
        unsynced: bool = False,
        skew_s: float = 0.0,
        log_level: str = "WARNING",
        time_factor: float = 1.0,
        epoch: float | None = None,
    ):
        self.config = config
        self.unsynced = unsynced
        self.skew_s = skew_s
        self.time_factor = time_factor
        self.epoch = epoch
        self.log_level = log_level
        self.proc: subprocess.Popen[str] | None = None
        self.stream = ""

    def start(self) -> UnitProcess:
        argv = [
            sys.executable,
            "-m",
            "simulator.unit_process",
            str(self.config),
            "--log-level",
            self.log_level,
        ]
        if self.unsynced:
            argv.append("--unsynced")
        if self.skew_s:
            argv += ["--skew-s", str(self.skew_s)]
        if self.time_factor != 1.0 and self.epoch is not None:
            argv += ["--time-factor", str(self.time_factor), "--epoch", repr(self.epoch)]
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        first = self._readline()
        if not first.startswith("ready "):
            raise RuntimeError(f"unit did not start: {first!r}")
        self.stream = first.split()[2]
        return self

    def _readline(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"unit process ended (exit {self.proc.poll()})")
        return line.strip()

    def cmd(self, line: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._readline()

    def press(self, score: int) -> int | None:
        reply = self.cmd(f"press {score}")
        return int(reply.split()[1]) if reply.startswith("ok") else None

    def status(self) -> dict[str, str]:
        reply = self.cmd("status")
        return dict(part.split("=", 1) for part in reply.split()[1:])

    def drain(self, seconds: float = 60.0) -> bool:
        return self.cmd(f"drain {seconds}") == "drained"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_pipes()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError, OSError):
                self.cmd("quit")
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self.proc = None

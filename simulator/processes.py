"""The collector side of a scenario run, as processes a test can kill: ``serve`` (with or
without ingest), an active/standby pair of ``ingest`` processes on the database lease,
and the broker accounts provisioning writes for a cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ME_IS_USER, ME_IS_PASSWORD = "gnahat", "scenario"


class CollectorProcess:
    """``gnahat-collector serve`` in a child process, killable and restartable."""

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        port: int,
        me_is_url: str | None = None,
        *,
        log_path: Path | None = None,
        metrics_token: str = "",
        mapping: Path | None = None,
        args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        ready_text: str = "subscribed to",
    ) -> None:
        self.log_path = log_path
        self.args = args
        self.ready_text = ready_text
        self.metrics_token = metrics_token
        self.env = {
            **os.environ,
            "GNAHAT_DATABASE_URL": database_url,
            "GNAHAT_MQTT_URL": broker_url,
            "GNAHAT_HTTP_PORT": str(port),
            "GNAHAT_MQTT_CLIENT_ID": "gnahat-scenario-collector",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if me_is_url:
            self.env.update(
                GNAHAT_FORWARD_URL=me_is_url,
                GNAHAT_FORWARD_USERNAME=ME_IS_USER,
                GNAHAT_FORWARD_PASSWORD=ME_IS_PASSWORD,
                GNAHAT_FORWARD_TODAY="true",
                GNAHAT_FORWARD_INTERVAL_S="1",
                GNAHAT_FORWARD_BACKOFF_MAX_S="2",
            )
            if mapping is not None:
                self.env["GNAHAT_FORWARD_MAPPING"] = str(mapping)
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.dropped_before = 0

    def start(self, timeout: float = 60) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve", *self.args],
            cwd=root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        log: list[str] = []

        sink = self.log_path.open("a", encoding="utf-8") if self.log_path else None

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            try:
                for line in self.proc.stderr:
                    log.append(line)
                    if sink is not None:
                        sink.write(line)
                        sink.flush()
                    if self.ready_text in line:
                        ready.set()
            finally:
                if sink is not None:
                    sink.close()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            raise RuntimeError("collector did not start:\n" + "".join(log[-20:]))

    def metric(self, name: str) -> float:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/metrics",
                headers={"Authorization": f"Bearer {self.metrics_token}"},
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def kill(self) -> None:
        self.dropped_before += int(self.metric("gnahat_events_duplicate_total"))
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def duplicates_dropped(self) -> int:
        return self.dropped_before + int(self.metric("gnahat_events_duplicate_total"))


class IngestPair:
    """Two ``gnahat-collector ingest`` processes with one client id taking turns
    through the database lease (``GNAHAT_INGEST_STANDBY``): one ingests, the other
    waits to take over the broker session."""

    def __init__(
        self, env: dict[str, str], log_path: Path, own: list[dict[str, str]] | None = None
    ) -> None:
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GNAHAT_INGEST_STANDBY": "true",
            **env,
        }
        self.own = own or [{}, {}]
        """Settings of each process's own (e.g. its database link)."""
        self.log_path = log_path
        self.procs: list[subprocess.Popen[str] | None] = [None, None]
        self.active_at: list[threading.Event] = [threading.Event(), threading.Event()]
        self.restarts: list[threading.Thread] = []

    def start(self, i: int) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "ingest"],
            cwd=root,
            env={**self.env, **self.own[i]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs[i] = proc
        active = self.active_at[i] = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            with self.log_path.open("a", encoding="utf-8") as sink:
                for line in proc.stderr:
                    sink.write(f"[ingest {i}] {line}")
                    sink.flush()
                    if "subscribed to" in line:
                        active.set()

        threading.Thread(target=read, daemon=True).start()

    def start_all(self, timeout: float = 60) -> None:
        self.start(0)
        if not self.active_at[0].wait(timeout):
            raise RuntimeError(f"no ingest took the lease; see {self.log_path}")
        self.start(1)

    def kill_active(self) -> int:
        """SIGKILL the process that subscribed last (the lease holder) and start a new
        one in its place: it stands by. Returns which one was killed."""
        live = [
            i for i, pr in enumerate(self.procs) if pr is not None and self.active_at[i].is_set()
        ]
        i = live[-1] if live else 0
        proc = self.procs[i]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        other = self.active_at[1 - i]

        def restart() -> None:
            # once the standby has taken the lease, so that the new process stands by
            other.wait(120)
            self.start(i)

        t = threading.Thread(target=restart, daemon=True)
        t.start()
        self.restarts.append(t)
        return i

    def active(self) -> int | None:
        """The process that subscribed last (the lease holder), if any runs."""
        live = [
            i for i, pr in enumerate(self.procs)
            if pr is not None and pr.poll() is None and self.active_at[i].is_set()
        ]  # fmt: skip
        return live[-1] if live else None

    def wait_active(self, timeout: float = 90) -> int | None:
        """The lease holder, once one ingests again (after a restart of the pair)."""
        deadline = time.monotonic() + timeout
        tick = threading.Event()
        while (i := self.active()) is None and time.monotonic() < deadline:
            tick.wait(0.1)
        return i

    def signal_active(self, sig: int) -> int | None:
        i = self.wait_active()
        proc = self.procs[i] if i is not None else None
        if proc is not None:
            proc.send_signal(sig)
        return i

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def settle(self) -> None:
        for t in self.restarts:
            t.join()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def cluster_accounts(folder: Path, devices: list[str]) -> tuple[Path, str, dict[str, Path]]:
    """What provisioning writes for a cluster: ``nats-accounts.conf`` with one account
    per unit; returns it, the collector's password and each unit's password file."""
    from provisioning.broker import Accounts, new_password, render_nats_accounts
    from provisioning.ca import write_secret

    folder.mkdir(parents=True, exist_ok=True)
    accounts = Accounts(folder)
    collector_password = accounts.ensure_collector() or ""
    files: dict[str, Path] = {}
    for device in devices:
        password = new_password()
        accounts.set_unit(device, password=password, cert_serial=None)
        files[device] = folder / f"{device}.password"
        write_secret(files[device], password.encode())
    accounts.save()
    conf = folder / "nats-accounts.conf"
    write_secret(conf, render_nats_accounts(accounts).encode())
    return conf, collector_password, files

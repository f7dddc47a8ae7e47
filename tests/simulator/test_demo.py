"""`gnahat-sim demo` as a user runs it: starts, stores events, stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(x) for x in out.split()}


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_starts_stores_events_and_stops_cleanly(
    tmp_path: Path, broker_factory: object, broker: str
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "demo",
            "--data",
            str(tmp_path / "demo"),
            "--factor",
            "3000",
            "--report-every",
            "1",
            "--http-port",
            str(port),
            "--units-per-centre",
            "1",
            "--broker",
            broker,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    token = None
    stored = pushes = phones = answers = 0
    me_is = password = None
    children: set[int] = set()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if m := re.search(r"Bearer (gnh_[\w-]+)' 'http", line):
                token = m.group(1)
                children = _children(proc.pid)
            if m := re.search(r"M&E IS +curl -u gnahat:demo '(http://[^']+)'", line):
                me_is = m.group(1)
            if m := re.search(r"user demo-manager, password (\S+)\)", line):
                password = m.group(1)
            if m := re.search(
                r"stored (\d+) .*pushes to M&E IS (\d+).*by phone (\d+)  factor answers (\d+)",
                line,
            ):
                stored, pushes = int(m.group(1)), int(m.group(2))
                phones, answers = int(m.group(3)), int(m.group(4))
                if stored >= 5 and pushes >= 1 and phones >= 1 and answers >= 1:
                    # The printed read-back names one centre: a first push may hold
                    # others only, so wait (a report line a second) until it holds it.
                    assert me_is is not None
                    values = httpx.get(me_is, auth=("gnahat", "demo")).json()["dataValues"]
                    if values:
                        break
        assert token, "\n".join(lines)
        assert stored >= 5 and pushes >= 1, "\n".join(lines)
        assert phones >= 1 and answers >= 1, "\n".join(lines)  # phones and a kiosk's factors
        assert me_is is not None
        values = httpx.get(me_is, auth=("gnahat", "demo")).json()["dataValues"]
        assert values and all(v["dataElement"].startswith("GNAHAT_") for v in values)
        assert any(v["dataElement"].startswith("GNAHAT_R") for v in values)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        feed = httpx.get(
            f"{base}/api/v1/feeds/events", headers={"Authorization": f"Bearer {token}"}
        )
        assert feed.status_code == 200 and feed.text.count("\n") >= 1
        assert httpx.get(f"{base}/metrics").status_code == 401
        metrics_line = next(line for line in lines if "/metrics" in line)
        tech = re.search(r"Bearer ([^']+)'", metrics_line).group(1)  # type: ignore[union-attr]
        metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {tech}"})
        assert "gnahat_events_stored_total" in metrics.text
        with httpx.Client(base_url=base) as web:  # the manager's dashboard, as printed
            csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/login").text)
            assert csrf and password
            form = {"username": "demo-manager", "password": password, "csrf": csrf.group(1)}
            assert web.post("/login", data=form).status_code == 303
            page = web.get("/dashboard").text
            assert "Տարածքային կենտրոն «Ավան»" in page and "Ծառայություններ" in page
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    lines.extend(rest.splitlines())
    assert proc.returncode == 0, "\n".join(lines[-30:])
    accounting = next(line for line in lines if line.startswith("accounting: acknowledged"))
    counted = int(re.search(r"counted in scores (\d+)", accounting).group(1))  # type: ignore[union-attr]
    assert counted > 0, accounting  # real scores, not a proof over zeros
    assert "stopped" in lines[-1]
    for pid in children:  # the broker and receiver it started are gone too
        assert _exits(pid, timeout=15), f"child {pid} still running after the demo stopped"


def _exits(pid: int, timeout: float) -> bool:
    """Wait (event-driven, via a pidfd) for process ``pid`` to end."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)

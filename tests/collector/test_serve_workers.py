"""`serve --workers N`: several HTTP processes beside one ingest, from the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from collector.db import migrate
from simulator.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_runs_several_http_workers_and_refuses_them_with_ingest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate(url)
    port = free_port()
    env_file = tmp_path / "collector.env"
    env_file.write_text(f"GNAHAT_DATABASE_URL={url}\nGNAHAT_HTTP_PORT={port}\n", encoding="utf-8")
    base = [sys.executable, "-m", "collector.cli", "--env-file", str(env_file), "serve"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    refused = subprocess.run(
        [*base, "--workers", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--no-ingest" in refused.stderr
    proc = subprocess.Popen(
        [*base, "--no-ingest", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        started, seen = 0, []
        for line in proc.stderr:  # each worker says when it is up
            seen.append(line)
            started += "Application startup complete" in line
            if started == 2:
                break
        assert started == 2, "".join(seen)
        answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answered.status_code == 200
        codes = {
            httpx.get(f"http://127.0.0.1:{port}/api/v1/open/centres", timeout=5).status_code
            for _ in range(10)
        }
        assert codes == {200}
        assert "server" not in answered.headers
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

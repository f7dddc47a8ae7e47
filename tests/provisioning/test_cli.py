"""gnahat-provision from the command line: a new centre in a few commands, no secret printed."""

from __future__ import annotations

import getpass
import subprocess
import sys
import tomllib
from pathlib import Path

from collector.db import migrate
from simulator.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_provision_a_centre_from_the_cli(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(db)
    subprocess.run(
        [sys.executable, "-m", "collector.cli", "registry", "import", "--demo"],
        env={"GNAHAT_DATABASE_URL": db, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    state = tmp_path / "state"
    base = [sys.executable, "-m", "provisioning.cli", "--state", str(state), "--database-url", db]

    def run(*args: str, ok: bool = True) -> str:
        r = subprocess.run([*base, *args], cwd=ROOT, capture_output=True, text=True)
        assert (r.returncode == 0) == ok, r.stderr
        return r.stdout + r.stderr

    run("ca", "init")
    assert "already exists" in run("ca", "init", ok=False)
    # No certificate given and none asked for: a clear error, nothing written anywhere.
    refused = run("broker", "config", "--broker-host", "mqtt.example.am", ok=False)
    assert "no server certificate" in refused and "--self-signed" in refused
    assert not (state / "broker" / "mosquitto.conf").exists()
    missing = run(
        "broker",
        "config",
        "--server-cert",
        str(tmp_path / "nope.pem"),
        "--server-key",
        str(tmp_path / "nope.key"),
        ok=False,
    )
    assert "does not exist" in missing and not (tmp_path / "nope.pem").exists()
    run(
        "broker",
        "config",
        "--broker-host",
        "mqtt.example.am",
        "--listen",
        "127.0.0.1",
        "--tls-port",
        str(free_port()),
        "--mtls-port",
        str(free_port()),
        "--server-cert",
        str(state / "s.pem"),
        "--server-key",
        str(state / "s.key"),
        "--user",
        getpass.getuser(),
        "--self-signed",
    )
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(
        "centre,desk,service,scale,cert\nLO-VANADZOR,21,EMPLOYMENT,4,no\n"
        "LO-VANADZOR,22,SOC_SECURITY,5,yes\n"
    )
    out = run("fleet", "import", str(fleet))
    assert "2 units provisioned" in out
    out += run("unit", "add", "--centre", "LO-VANADZOR", "--desk", "23")
    assert "already provisioned" in run(
        "unit", "add", "--centre", "LO-VANADZOR", "--desk", "23", ok=False
    )
    assert "no centre 'XX'" in run("unit", "add", "--centre", "XX", "--desk", "1", ok=False)
    listing = run("unit", "list")
    assert "am-lo-vanadzor-d22\tactive\tcertificate" in listing
    out += run("unit", "revoke", "am-lo-vanadzor-d21")
    assert "am-lo-vanadzor-d21\trevoked" in run("unit", "list")
    out += run("unit", "rotate", "am-lo-vanadzor-d23")
    secrets = [p.read_text() for p in state.glob("bundles/*/password")]
    secrets.append((state / "collector.password").read_text())
    assert secrets and not any(s in out + listing for s in secrets)
    acl = (state / "broker" / "acl").read_text()
    assert "user am-lo-vanadzor-d23" in acl and "user am-lo-vanadzor-d21" not in acl
    passwd = (state / "broker" / "passwd").read_text()
    assert "am-lo-vanadzor-d21:" not in passwd and "gnahat-collector:$7$" in passwd
    # A NATS cluster: the accounts file names the active units, hashes only; a unit
    # re-issued with a password after the cluster's other nodes were given gets them.
    nats = (state / "broker" / "nats-accounts.conf").read_text()
    assert '"unit-am-lo-vanadzor-d23"' in nats and '"unit-am-lo-vanadzor-d21"' not in nats
    assert "certificate identity only" in nats  # d22 has no password: no account
    assert not any(s in nats for s in secrets)
    bad = run("broker", "config", "--also", "node2:http", ok=False)
    assert "--also" in bad and "port" in bad
    run("broker", "config", "--also", "node2.example.am", "--also", "node3.example.am:8883")
    run("unit", "rotate", "am-lo-vanadzor-d22", "--password")
    unit = tomllib.loads((state / "bundles" / "am-lo-vanadzor-d22" / "unit.toml").read_text())
    assert unit["mqtt"]["brokers"] == ["node2.example.am", "node3.example.am:8883"]
    assert "password_file" in unit["mqtt"] and "cert_file" not in unit["mqtt"]
    nats = (state / "broker" / "nats-accounts.conf").read_text()
    assert '"unit-am-lo-vanadzor-d22"' in nats and "certificate identity only" not in nats

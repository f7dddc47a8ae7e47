"""Broker accounts and configuration: Mosquitto's own password hash format, one ACL
block per unit (write own event/status/health, read own ack/cmd), the collector's
account, TLS listeners, persistence and raised queue limits; reload with SIGHUP.

For a NATS cluster the same accounts are written as nats-server ``accounts``
(``nats-accounts.conf``): one NATS account per unit, so that a unit's MQTT session and
client id live in its own account and no other credential can take them over."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt

from device import protocol as p
from provisioning.ca import write_secret

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes for "$7$"
COLLECTOR_USER = "gnahat-collector"
NATS_BCRYPT_COST = 11  # nats-server compares passwords that start with "$2" as bcrypt
NATS_COLLECTOR_ACCOUNT = "gnahat-collector"
NATS_MQTT_STORE = "$MQTT.msgs."
"""The subject prefix of nats-server's per-account MQTT message stream (``$MQTT_msgs``;
server/mqtt.go ``mqttStreamSubjectPrefix``): a QoS 1 message is kept for a persistent
session only when it lands on it, so imports between accounts are mapped onto it."""
NATS_MQTT_DELIVERY = "$MQTT.sub.>"
"""Where nats-server delivers a QoS 1 subscription's stored messages to its client
(server/mqtt.go ``mqttSubPrefix``): a user with subscribe permissions needs it allowed.
Only the account's own sessions deliver there, and every unit has an account of its own."""


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """A Mosquitto 2 password-file hash: ``$7$iterations$salt$PBKDF2-SHA512``."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def nats_hash(password: str, *, cost: int = NATS_BCRYPT_COST) -> str:
    """A bcrypt hash, which nats-server accepts in place of a plain password."""
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


def new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class BrokerLayout:
    """Where the broker listens and keeps its files."""

    host: str = "0.0.0.0"
    tls_port: int = 8883
    mtls_port: int = 8884
    dev_port: int | None = None  # plain MQTT on loopback only, for development
    server_cert: str = ""  # unset: `broker config` needs --server-cert or --self-signed
    server_key: str = ""
    persistence_dir: str = "/var/lib/mosquitto/"
    run_as_user: str | None = "mosquitto"
    max_queued_messages: int = 1_000_000


class Accounts:
    """The provisioning state of broker accounts (``accounts.json`` in the state folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "accounts.json"
        self.data: dict[str, Any] = {"collector": None, "units": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))

    def save(self) -> None:
        write_secret(self.path, json.dumps(self.data, indent=2, sort_keys=True).encode())

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        units: dict[str, dict[str, Any]] = self.data["units"]
        return units

    def ensure_collector(self) -> str | None:
        """Create the collector's account once; returns the new password (else None)."""
        if self.data.get("collector"):
            return None
        password = new_password()
        self.data["collector"] = {
            "username": COLLECTOR_USER,
            "hash": mosquitto_hash(password),
            "nats_hash": nats_hash(password),
        }
        return password

    def set_unit(self, device: str, *, password: str | None, cert_serial: int | None) -> None:
        p.validate_device_id(device)
        now = datetime.now(UTC).isoformat()
        entry = self.units.get(device, {"created": now})
        entry.update(
            hash=mosquitto_hash(password) if password else None,
            nats_hash=nats_hash(password) if password else None,
            cert_serial=cert_serial,
            revoked=False,
            updated=now,
        )
        self.units[device] = entry

    def revoke(self, device: str) -> dict[str, Any]:
        entry = self.units.get(device)
        if entry is None:
            raise KeyError(f"no unit {device!r} was provisioned here")
        entry.update(revoked=True, revoked_at=datetime.now(UTC).isoformat())
        return entry

    def active_units(self) -> list[str]:
        return sorted(d for d, e in self.units.items() if not e.get("revoked"))

    def fill_nats_hashes(self, password_of: Any) -> bool:
        """Give accounts made before the cluster layout their bcrypt hash, from the
        password kept in the state folder (``password_of(name)``, None if unknown)."""
        changed = False
        entries: list[tuple[str, dict[str, Any]]] = [
            (d, e) for d, e in self.units.items() if e.get("hash") and not e.get("nats_hash")
        ]
        collector = self.data.get("collector")
        if collector and not collector.get("nats_hash"):
            entries.append((COLLECTOR_USER, collector))
        for name, entry in entries:
            password = password_of(name)
            if password:
                entry["nats_hash"] = nats_hash(password)
                changed = True
        return changed


def render_passwd(accounts: Accounts) -> str:
    lines = []
    collector = accounts.data.get("collector")
    if collector:
        lines.append(f"{collector['username']}:{collector['hash']}")
    for device in accounts.active_units():
        h = accounts.units[device].get("hash")
        if h:
            lines.append(f"{device}:{h}")
    return "\n".join(lines) + "\n"


def render_acl(accounts: Accounts) -> str:
    """Per-unit blocks: a unit speaks only for itself; revoked units have no block at all."""
    root = p.TOPIC_ROOT
    out = [
        "# Generated by gnahat-provision; edits are overwritten.",
        f"user {COLLECTOR_USER}",
        f"topic read {root}/dev/+/event",
        f"topic read {root}/dev/+/status",
        f"topic read {root}/dev/+/health",
        f"topic write {root}/dev/+/ack",
        f"topic write {root}/dev/+/cmd",
        "",
    ]
    for device in accounts.active_units():
        out += [
            f"user {device}",
            f"topic write {p.event_topic(device)}",
            f"topic write {p.status_topic(device)}",
            f"topic write {p.health_topic(device)}",
            f"topic read {p.ack_topic(device)}",
            f"topic read {p.cmd_topic(device)}",
            "",
        ]
    return "\n".join(out)


def nats_subject(topic: str) -> str:
    """The NATS subject nats-server gives an MQTT topic (levels joined by dots)."""
    return topic.replace("/", ".")


def nats_unit_account(device: str) -> str:
    return f"unit-{device}"


def _nats_list(items: list[str], indent: str) -> str:
    if not items:
        return "[]"
    inner = "\n".join(f"{indent}  {item}" for item in items)
    return f"[\n{inner}\n{indent}]"


def _q(value: str) -> str:
    return json.dumps(value)  # a double-quoted string nats-server's parser reads


def render_nats_accounts(accounts: Accounts) -> str:
    """nats-server ``accounts`` for the units and the collector.

    Every unit has an account of its own: nats-server keeps MQTT sessions per account
    (server/mqtt.go, one session manager per account), so a unit's client id and
    persistent session cannot be reached from another unit's credentials. Its user may
    publish only its own event/status/health and subscribe only its own ack/cmd.
    Messages cross between a unit's account and the collector's by stream export and
    import, mapped onto the importing account's MQTT store (``$MQTT.msgs.<subject>``) so
    that a persistent session that is away still receives them. Revoked units and units
    with a certificate identity only (nats-server has one MQTT listener per node; see
    docs/operations.md) have no account.
    """
    collector = accounts.data.get("collector") or {}
    units = [d for d in accounts.active_units() if accounts.units[d].get("nats_hash")]
    skipped = [d for d in accounts.active_units() if d not in units]
    ev, st, he, ack, cmd = (
        nats_subject(f"{p.TOPIC_ROOT}/dev/*/{k}")
        for k in ("event", "status", "health", "ack", "cmd")
    )
    out = [
        "# Generated by gnahat-provision; edits are overwritten.",
        "# Include it in every node's configuration; reload with `nats-server --signal reload`.",
    ]
    for device in skipped:
        out.append(f"# {device}: no password (certificate identity only), so no account here")
    out.append("accounts {")
    col_user = []
    if collector.get("nats_hash"):
        col_user.append(
            f"{{user: {_q(collector['username'])}, password: {_q(collector['nats_hash'])}, "
            f"permissions: {{publish: {{allow: [{_q(ack)}, {_q(cmd)}]}}, "
            f"subscribe: {{allow: [{_q(ev)}, {_q(st)}, {_q(he)}, {_q(NATS_MQTT_DELIVERY)}]}}}}}}"
        )
    col_exports: list[str] = []
    col_imports: list[str] = []
    for device in units:
        acc = _q(nats_unit_account(device))
        for kind in ("ack", "cmd"):
            col_exports.append(
                f"{{stream: {_q(nats_subject(p.topic(device, kind)))}, accounts: [{acc}]}}"
            )
        for kind in ("event", "status", "health"):
            subject = nats_subject(p.topic(device, kind))
            col_imports.append(
                f"{{stream: {{account: {acc}, subject: {_q(subject)}}}, "
                f"to: {_q(NATS_MQTT_STORE + subject)}}}"
            )
    out += [
        f"  {_q(NATS_COLLECTOR_ACCOUNT)}: {{",
        "    jetstream: enabled",
        f"    users: {_nats_list(col_user, '    ')}",
        f"    exports: {_nats_list(col_exports, '    ')}",
        f"    imports: {_nats_list(col_imports, '    ')}",
        "  }",
    ]
    for device in units:
        entry = accounts.units[device]
        own = {
            k: nats_subject(p.topic(device, k)) for k in ("event", "status", "health", "ack", "cmd")
        }
        user = (
            f"{{user: {_q(device)}, password: {_q(entry['nats_hash'])}, "
            f"permissions: {{publish: {{allow: [{_q(own['event'])}, {_q(own['status'])}, "
            f"{_q(own['health'])}]}}, "
            f"subscribe: {{allow: [{_q(own['ack'])}, {_q(own['cmd'])}, "
            f"{_q(NATS_MQTT_DELIVERY)}]}}}}}}"
        )
        col = _q(NATS_COLLECTOR_ACCOUNT)
        exports = [
            f"{{stream: {_q(own[k])}, accounts: [{col}]}}" for k in ("event", "status", "health")
        ]
        imports = [
            f"{{stream: {{account: {col}, subject: {_q(own[k])}}}, "
            f"to: {_q(NATS_MQTT_STORE + own[k])}}}"
            for k in ("ack", "cmd")
        ]
        out += [
            f"  {_q(nats_unit_account(device))}: {{",
            "    jetstream: enabled",
            f"    users: [{user}]",
            f"    exports: {_nats_list(exports, '    ')}",
            f"    imports: {_nats_list(imports, '    ')}",
            "  }",
        ]
    out.append("}")
    return "\n".join(out) + "\n"


def render_conf(layout: BrokerLayout, folder: Path, ca_file: Path, crl_file: Path) -> str:
    lines = [
        "# Generated by gnahat-provision. Reload with SIGHUP after unit changes.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {folder / 'passwd'}",
        f"acl_file {folder / 'acl'}",
        f"pid_file {folder / 'mosquitto.pid'}",
        "persistence true",
        f"persistence_location {layout.persistence_dir}",
        "autosave_interval 60",
        f"max_queued_messages {layout.max_queued_messages}",
        "max_queued_bytes 0",
        "persistent_client_expiration 14d",
        "# The largest packet the protocol allows (device/protocol/common.py MAX_PACKET_BYTES):",
        "# anything larger is refused here, before it costs the collector a byte.",
        f"max_packet_size {p.MAX_PACKET_BYTES}",
        "# A press is committed and acked within milliseconds: no Nagle delay on top.",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if layout.run_as_user:
        lines.append(f"user {layout.run_as_user}")
    lines += [
        "",
        "# Units and collector with passwords, over TLS (server certificate from the fleet CA).",
        f"listener {layout.tls_port} {layout.host}",
        f"cafile {ca_file}",
        f"certfile {layout.server_cert}",
        f"keyfile {layout.server_key}",
        "tls_version tlsv1.2",
        "# The client id is the authenticated username: no credential can take another",
        "# unit's or the collector's client id (and persistent session).",
        "use_username_as_clientid true",
        "",
        "# Units with client certificates from the fleet CA only; CN = device id = username.",
        f"listener {layout.mtls_port} {layout.host}",
        f"cafile {ca_file}",
        f"certfile {layout.server_cert}",
        f"keyfile {layout.server_key}",
        f"crlfile {crl_file}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
    ]
    if layout.dev_port:
        lines += [
            "",
            "# Development only: plain MQTT on loopback.",
            f"listener {layout.dev_port} 127.0.0.1",
            "use_username_as_clientid true",
        ]
    return "\n".join(lines) + "\n"


def write_broker_files(
    accounts: Accounts, layout: BrokerLayout, folder: Path, ca_file: Path, crl_file: Path
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_secret(folder / "passwd", render_passwd(accounts).encode())
    (folder / "acl").write_text(render_acl(accounts), encoding="utf-8")
    write_secret(folder / "nats-accounts.conf", render_nats_accounts(accounts).encode())
    conf = folder / "mosquitto.conf"
    conf.write_text(render_conf(layout, folder, ca_file, crl_file), encoding="utf-8")
    if layout.run_as_user:
        import pwd

        try:
            pw = pwd.getpwnam(layout.run_as_user)
            for name in ("passwd", "acl", "nats-accounts.conf"):
                os.chown(folder / name, pw.pw_uid, pw.pw_gid)
        except (KeyError, PermissionError):
            pass
    return conf


def reload_broker(folder: Path) -> bool:
    """SIGHUP the broker whose pid file is in ``folder`` (``mosquitto.pid``, or
    ``nats.pid`` for a nats-server node run from this folder): both re-read their
    accounts and permissions on it."""
    reloaded = False
    for name in ("mosquitto.pid", "nats.pid"):
        try:
            pid = int((folder / name).read_text().strip())
            os.kill(pid, signal.SIGHUP)
            reloaded = True
        except (OSError, ValueError):
            continue
    return reloaded

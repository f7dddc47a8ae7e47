"""Provision units: identity, credentials, registry entry, and the bundle a Pi boots with.

A bundle (``bundles/DEVICE/`` in the state folder) holds the unit's ``unit.toml``,
its password file or client key and certificate (0600), the fleet CA, and a
cloud-init ``user-data`` for the Pi's boot partition that installs them all.
Secrets are written to files only; nothing here prints or logs them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from device import protocol as p
from provisioning.broker import (
    COLLECTOR_USER,
    Accounts,
    BrokerLayout,
    new_password,
    reload_broker,
    write_broker_files,
)
from provisioning.ca import FleetCA, write_secret
from provisioning.probe import Answer, Credentials, ask, wait_for

ETC = "/etc/gnahat"


class ProvisioningError(ValueError):
    pass


def device_id_for(centre: str, desk: int) -> str:
    device = f"am-{centre.lower()}-d{desk:02d}"
    p.validate_device_id(device)
    return device


@dataclass
class Settings:
    broker_host: str = "broker.gnahat.local"
    layout: BrokerLayout = field(default_factory=BrokerLayout)
    verify: bool = True
    """After a change, ask the broker (at ``broker_host``) until it answers as intended;
    per invocation (``--no-verify``), never saved."""
    verify_timeout_s: float = 15.0
    brokers: list[str] = field(default_factory=list)
    """The other nodes of a broker cluster (``host:port``), written into every bundle's
    ``[mqtt] brokers`` after ``broker_host``: units fail over round the list."""


@dataclass
class Bundle:
    device: str
    folder: Path
    files: list[Path]
    confirmed: str = ""
    """What the broker answered when asked with the new credentials."""


class Provisioner:
    def __init__(
        self, state: Path, *, database_url: str | None = None, settings: Settings | None = None
    ) -> None:
        self.state = state
        self.database_url = database_url
        self.ca = FleetCA(state / "ca")
        self.accounts = Accounts(state)
        self.broker_dir = state / "broker"
        self.bundles = state / "bundles"
        self.settings_path = state / "settings.json"
        if settings is not None:
            self.settings = settings
        elif self.settings_path.exists():
            raw = json.loads(self.settings_path.read_text())
            self.settings = Settings(
                raw["broker_host"],
                BrokerLayout(**raw["layout"]),
                brokers=list(raw.get("brokers", [])),
            )
        else:
            self.settings = Settings()

    def save_settings(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.settings_path.write_text(
            json.dumps(
                {
                    "broker_host": self.settings.broker_host,
                    "layout": asdict(self.settings.layout),
                    "brokers": self.settings.brokers,
                },
                indent=2,
            )
        )

    # ------------------------------------------------------------ broker

    def broker_config(
        self, *, server_hosts: list[str] | None = None, self_signed: bool = False
    ) -> Path:
        """Write mosquitto.conf, passwd and acl.

        The broker's server certificate must exist where the layout says, or
        ``self_signed`` issues one from the fleet CA — at the given path, or into this
        state's ``broker/`` folder when none was given. Nothing is written elsewhere.
        """
        layout = self.settings.layout
        if not layout.server_cert:
            if not self_signed:
                raise ProvisioningError(
                    "no server certificate: give --server-cert and --server-key (an existing "
                    "certificate for the broker's name), or --self-signed to issue one from "
                    f"the fleet CA into {self.broker_dir}"
                )
            layout.server_cert = str(self.broker_dir / "server.pem")
            layout.server_key = str(self.broker_dir / "server.key")
        cert = Path(layout.server_cert)
        if not cert.exists() and not self_signed:
            raise ProvisioningError(
                f"the server certificate {cert} does not exist; give an existing one, or "
                "--self-signed to issue it there from the fleet CA"
            )
        if not layout.server_key:
            raise ProvisioningError("--server-key is needed with --server-cert")
        created = self.accounts.ensure_collector()
        if created is not None:
            write_secret(self.state / "collector.password", created.encode())
        self.accounts.fill_nats_hashes(self._kept_password)
        self.accounts.save()
        if not cert.exists():
            cert.parent.mkdir(parents=True, exist_ok=True)
            key_pem, cert_pem, _ = self.ca.issue(
                self.settings.broker_host,
                server=True,
                hosts=server_hosts or [self.settings.broker_host],
            )
            write_secret(Path(layout.server_key), key_pem)
            cert.write_bytes(cert_pem)
            if layout.run_as_user:  # the broker must read its own key
                import os
                import pwd

                try:
                    pw = pwd.getpwnam(layout.run_as_user)
                    os.chown(layout.server_key, pw.pw_uid, pw.pw_gid)
                except (KeyError, PermissionError):
                    pass
        conf = write_broker_files(
            self.accounts, layout, self.broker_dir, self.ca.cert_path, self.ca.crl_path
        )
        self.save_settings()
        return conf

    def _kept_password(self, name: str) -> str | None:
        """A password this state folder keeps: the collector's, or a unit's bundle's."""
        path = (
            self.state / "collector.password"
            if name == COLLECTOR_USER
            else self.bundles / name / "password"
        )
        return path.read_text().strip() if path.exists() else None

    def reload(self) -> bool:
        return reload_broker(self.broker_dir)

    def credentials(self, device: str) -> Credentials | None:
        """The unit's current credentials, from its bundle."""
        folder = self.bundles / device
        if (folder / "client.pem").exists():
            return Credentials(device, cert=(folder / "client.pem", folder / "client.key"))
        if (folder / "password").exists():
            return Credentials(device, password=(folder / "password").read_text())
        return None

    def confirm(self, creds: Credentials | None, want: Answer) -> str:
        """Ask the broker with ``creds`` until it answers ``want``; say what it answered.

        An unreachable broker (provisioning off-site, broker not started yet) is reported,
        not fatal; a broker that keeps answering otherwise is an error.
        """
        if not self.settings.verify or creds is None:
            return "not checked with the broker"
        layout = self.settings.layout
        port = layout.mtls_port if creds.cert else layout.tls_port
        host = self.settings.broker_host

        def probe() -> tuple[Answer, str]:
            return ask(host, port, self.ca.cert_path, creds)

        answer, detail = wait_for(want, probe, timeout=self.settings.verify_timeout_s)
        if answer is Answer.UNREACHABLE:
            return f"not checked: broker unreachable ({detail})"
        if answer is not want:
            verb = "accepts" if answer is Answer.ACCEPTED else "refuses"
            raise ProvisioningError(
                f"the broker at {host}:{port} still {verb} {creds.username} ({detail}); "
                f"is it running with {self.broker_dir / 'mosquitto.conf'}? "
                f"Reload it (SIGHUP) and check its log"
            )
        return f"broker at {host}:{port} {want.value} {creds.username}"

    # ------------------------------------------------------------ units

    def add_unit(
        self,
        centre: str,
        desk: int,
        *,
        cert: bool = False,
        service: str | None = None,
        employee: str | None = None,
        scale: int = 4,
        mode: str = "free",
        kiosk: bool = False,
        now: datetime | None = None,
    ) -> Bundle:
        device = device_id_for(centre, desk)
        existing = self.accounts.units.get(device)
        if existing and not existing.get("revoked"):
            raise ProvisioningError(
                f"{device} is already provisioned; use `unit rotate {device}` for new credentials"
            )
        self._register(
            device,
            centre,
            desk,
            service=service,
            employee=employee,
            scale=scale,
            kind="kiosk" if kiosk else "buttons",
            now=now,
        )
        return self._credentials(device, cert=cert, mode=mode, scale=scale, kiosk=kiosk)

    def _credentials(
        self,
        device: str,
        *,
        cert: bool,
        mode: str | None = None,
        scale: int | None = None,
        kiosk: bool | None = None,
    ) -> Bundle:
        """New credentials and bundle; unit settings not given are kept from the old one."""
        folder = self.bundles / device
        old_unit: dict[str, Any] = {}
        if (folder / "unit.toml").exists():
            old_unit = tomllib.loads((folder / "unit.toml").read_text(encoding="utf-8"))
        mode = mode or old_unit.get("unit", {}).get("mode", "free")
        scale = scale or old_unit.get("unit", {}).get("scale", 4)
        if kiosk is None:
            kiosk = bool(old_unit.get("kiosk", {}).get("enabled", False))
        old_creds = self.credentials(device) if folder.exists() else None
        if old_creds is not None and old_creds.cert is not None:
            keep = self.state / "retired-certs"  # to ask the broker that it refuses them
            keep.mkdir(exist_ok=True)
            old_creds = Credentials(
                device,
                cert=(
                    Path(shutil.copy(old_creds.cert[0], keep / f"{device}.pem")),
                    Path(shutil.copy(old_creds.cert[1], keep / f"{device}.key")),
                ),
            )
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        shutil.copy(self.ca.cert_path, folder / "ca.pem")
        layout = self.settings.layout
        mqtt: dict[str, Any] = {
            "host": self.settings.broker_host,
            "tls": True,
            **({"brokers": list(self.settings.brokers)} if self.settings.brokers else {}),
            "ca_file": f"{ETC}/ca.pem",
            "username": device,
        }
        serial = None
        if cert:
            key_pem, cert_pem, serial = self.ca.issue(device)
            write_secret(folder / "client.key", key_pem)
            write_secret(folder / "client.pem", cert_pem)
            mqtt.update(
                port=layout.mtls_port, cert_file=f"{ETC}/client.pem", key_file=f"{ETC}/client.key"
            )
            password = None
        else:
            password = new_password()
            write_secret(folder / "password", password.encode())
            mqtt.update(port=layout.tls_port, password_file=f"{ETC}/password")
        old = self.accounts.units.get(device, {}).get("cert_serial")
        if old:
            self.ca.revoke(int(old))
        self.accounts.set_unit(device, password=password, cert_serial=serial)
        self.accounts.save()
        config = {
            "unit": {"device_id": device, "mode": mode, "scale": scale},
            "mqtt": mqtt,
            "outbox": {"path": "/var/lib/gnahat/outbox.db"},
            "badge_reader": {"port": "/dev/serial0"},
        }
        if kiosk:
            config["kiosk"] = {"enabled": True, "language": "hy"}
        (folder / "unit.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
        write_secret(folder / "user-data", cloud_init(device, folder).encode())
        self.broker_config()
        self.reload()
        confirmed = self.confirm(self.credentials(device), Answer.ACCEPTED)
        if old_creds is not None:
            self.confirm(old_creds, Answer.REFUSED)
            if old_creds.cert is not None:
                for f in old_creds.cert:
                    f.unlink(missing_ok=True)
        return Bundle(device, folder, sorted(folder.iterdir()), confirmed)

    def rotate(self, device: str, *, cert: bool | None = None) -> Bundle:
        entry = self.accounts.units.get(device)
        if entry is None or entry.get("revoked"):
            raise ProvisioningError(f"{device} is not an active unit here")
        use_cert = bool(entry.get("cert_serial")) if cert is None else cert
        return self._credentials(device, cert=use_cert)

    def revoke(self, device: str, *, now: datetime | None = None) -> str:
        """Refuse the unit at the broker (and retire it in the registry); say what the
        broker answered when asked with the revoked credentials."""
        creds = self.credentials(device)
        try:
            entry = self.accounts.revoke(device)
        except KeyError as exc:
            raise ProvisioningError(str(exc)) from None
        if entry.get("cert_serial"):
            self.ca.revoke(int(entry["cert_serial"]))
        self.accounts.save()
        self.broker_config()
        self.reload()
        if self.database_url:
            from collector.db import make_engine, session_factory
            from collector.models import AuditLog, Device

            engine = make_engine(self.database_url)
            with session_factory(engine)() as s, s.begin():
                row = s.get(Device, device)
                if row is not None:
                    row.retired_at = now or datetime.now(UTC)
                    from collector.registry import bump_registry_version

                    bump_registry_version(s)
                    s.add(
                        AuditLog(
                            at=datetime.now(UTC),
                            actor="provisioning",
                            action="unit.revoke",
                            detail={"device": device},
                        )
                    )
            engine.dispose()
        return self.confirm(creds, Answer.REFUSED)

    def _register(
        self,
        device: str,
        centre: str,
        desk: int,
        *,
        service: str | None,
        employee: str | None,
        scale: int,
        kind: str = "buttons",
        now: datetime | None,
    ) -> None:
        if not self.database_url:
            return
        from collector.db import make_engine, session_factory
        from collector.registry import RegistryImportError, import_registry

        when = (now or datetime.now(UTC)).isoformat()
        devices = io.StringIO()
        csv.writer(devices, lineterminator="\n").writerows(
            [
                ["device", "kind", "scale", "created_at", "retired_at"],
                [device, kind, scale, when, ""],
            ]
        )
        assignments = io.StringIO()
        csv.writer(assignments, lineterminator="\n").writerows(
            [
                ["device", "centre", "desk", "default_employee", "service", "valid_from"],
                [device, centre, f"{desk:02d}", employee or "", service or "", when],
            ]
        )
        engine = make_engine(self.database_url)
        try:
            with session_factory(engine)() as s, s.begin():
                import_registry(
                    s,
                    {"devices": devices.getvalue(), "assignments": assignments.getvalue()},
                    actor="provisioning",
                )
        except RegistryImportError as exc:
            raise ProvisioningError(str(exc)) from None
        finally:
            engine.dispose()

    def fleet_import(self, path: Path, *, now: datetime | None = None) -> list[Bundle]:
        """Provision every row of a CSV (centre, desk[, service, employee, scale, cert, kiosk])."""
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()))
        problems = []
        for i, row in enumerate(rows, start=2):
            if not row.get("centre") or not (row.get("desk") or "").isdigit():
                problems.append(f"{path.name} line {i}: needs centre and a numeric desk")
        if problems:
            raise ProvisioningError("\n".join(problems))
        return [
            self.add_unit(
                row["centre"],
                int(row["desk"]),
                cert=row.get("cert") == "yes",
                service=row.get("service") or None,
                employee=row.get("employee") or None,
                scale=int(row.get("scale") or 4),
                kiosk=row.get("kiosk") == "yes",
                now=now,
            )
            for row in rows
        ]


def cloud_init(device: str, folder: Path) -> str:
    """cloud-init user-data (current Raspberry Pi OS) installing the bundle on first boot."""
    files = [
        ("unit.toml", "0644"),
        ("ca.pem", "0644"),
        ("password", "0600"),
        ("client.pem", "0644"),
        ("client.key", "0600"),
    ]
    out = [
        "#cloud-config",
        f"hostname: {device}",
        "users:",
        "  - name: gnahat",
        "    system: true",
        "    groups: [gpio, dialout, audio]",
        "write_files:",
    ]
    for name, mode in files:
        path = folder / name
        if not path.exists():
            continue
        out += [
            f"  - path: {ETC}/{name}",
            f"    permissions: '{mode}'",
            "    owner: gnahat:gnahat",
            "    defer: true",
            "    encoding: b64",
            f"    content: {base64.b64encode(path.read_bytes()).decode()}",
        ]
    out += [
        "runcmd:",
        "  - [mkdir, -p, /var/lib/gnahat]",
        "  - [chown, 'gnahat:gnahat', /var/lib/gnahat]",
        "  - [systemctl, enable, --now, gnahat-device.service]",
    ]
    return "\n".join(out) + "\n"

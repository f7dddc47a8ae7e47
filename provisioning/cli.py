"""``gnahat-provision``: the fleet CA, broker configuration, units and fleets.

Secrets go to files (mode 0600) in the state folder and the unit bundles; they are
never printed or logged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_STATE = "/var/lib/gnahat/provisioning"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnahat-provision", description="Provision Gnahat units and the broker."
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("GNAHAT_PROVISION_STATE", DEFAULT_STATE)),
        help="provisioning state folder (CA, accounts, bundles)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GNAHAT_DATABASE_URL"),
        help="collector database, to register units (GNAHAT_DATABASE_URL)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not ask the broker to confirm a unit change (it is unreachable from here)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ca = sub.add_parser("ca", help="the fleet's own device CA")
    ca_sub = ca.add_subparsers(dest="action", required=True, metavar="ACTION")
    ci = ca_sub.add_parser("init", help="create the device CA (once)")
    ci.add_argument("--name", default="Gnahat device CA")

    br = sub.add_parser("broker", help="Mosquitto (or NATS cluster) configuration")
    br_sub = br.add_subparsers(dest="action", required=True, metavar="ACTION")
    bc = br_sub.add_parser(
        "config", help="write mosquitto.conf, passwd, acl, nats-accounts.conf (and reload)"
    )
    bc.add_argument("--broker-host", help="name units use to reach the broker")
    bc.add_argument("--listen", help="address the TLS listeners bind (default 0.0.0.0)")
    bc.add_argument("--tls-port", type=int)
    bc.add_argument("--mtls-port", type=int)
    bc.add_argument("--dev-port", type=int, help="also plain MQTT on 127.0.0.1 (development)")
    bc.add_argument("--server-cert", help="the broker's TLS certificate (must exist)")
    bc.add_argument("--server-key", help="its key")
    bc.add_argument(
        "--self-signed",
        action="store_true",
        help="issue the server certificate from the fleet CA (at --server-cert, or into "
        "the state folder's broker/)",
    )
    bc.add_argument("--persistence-dir")
    bc.add_argument("--user", help="user the broker runs as (default mosquitto)")
    bc.add_argument("--reload", action="store_true", help="SIGHUP the running broker")
    bc.add_argument(
        "--also",
        action="append",
        metavar="HOST:PORT",
        help="another node of a broker cluster, for new bundles' [mqtt] brokers (repeat; "
        "--also none clears the list)",
    )

    unit = sub.add_parser("unit", help="one unit")
    u_sub = unit.add_subparsers(dest="action", required=True, metavar="ACTION")
    ua = u_sub.add_parser("add", help="mint identity and credentials, register, write bundle")
    ua.add_argument("--centre", required=True)
    ua.add_argument("--desk", type=int, required=True)
    ua.add_argument("--cert", action="store_true", help="client certificate instead of password")
    ua.add_argument("--service")
    ua.add_argument("--employee", help="default employee code at the desk")
    ua.add_argument("--scale", type=int, default=4, choices=[3, 4, 5])
    ua.add_argument("--mode", default="free", choices=["free", "armed"])
    ua.add_argument("--kiosk", action="store_true", help="a touch-screen unit (kiosk page on)")
    ur = u_sub.add_parser("revoke", help="refuse the unit at the broker and the collector")
    ur.add_argument("device")
    ut = u_sub.add_parser("rotate", help="new credentials; re-install the bundle on the unit")
    ut.add_argument("device")
    ut.add_argument("--cert", action="store_true", default=None)
    ut.add_argument(
        "--password",
        dest="cert",
        action="store_false",
        help="a password instead of a certificate (what a NATS cluster's listener takes)",
    )
    u_sub.add_parser("list", help="provisioned units and their state")

    cards = sub.add_parser(
        "cards", help="a printable A6 card with the online rating QR code for every desk"
    )
    cards.add_argument("--out", type=Path, required=True, help="folder for the SVG cards")
    cards.add_argument(
        "--env-file", help="the collector's settings (GNAHAT_SECRET_KEY, GNAHAT_PUBLIC_URL)"
    )
    cards.add_argument("--public-url", help="override GNAHAT_PUBLIC_URL")
    fl = sub.add_parser("fleet", help="many units")
    f_sub = fl.add_subparsers(dest="action", required=True, metavar="ACTION")
    fi = f_sub.add_parser("import", help="provision every row of a CSV")
    fi.add_argument("csv", type=Path)
    return parser


def _cards(args: argparse.Namespace) -> int:
    """Write a printable card per desk (collector settings: secret key, public URL)."""
    from datetime import UTC, datetime

    from collector.config import load_settings
    from collector.db import make_engine, session_factory
    from provisioning.cards import write_cards

    settings = load_settings(args.env_file)
    url = args.database_url or settings.database_url
    engine = make_engine(url)
    try:
        written = write_cards(
            session_factory(engine),
            settings.secret_key,
            args.public_url or settings.public_url,
            args.out,
            datetime.now(UTC),
        )
    finally:
        engine.dispose()
    for file in written:
        print(file)
    cards = sum(1 for f in written if f.suffix == ".svg")
    print(f"{cards} cards (A6, print at 100 %)")
    print("each desk's .kiosk.toml lets a unit with a screen show the desk code: merge it into")
    print("the unit's [kiosk] section (it holds the desk's key: keep it private)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "cards":
        return _cards(args)
    from provisioning.units import Provisioner, ProvisioningError

    prov = Provisioner(args.state, database_url=args.database_url)
    if args.no_verify:
        prov.settings.verify = False
    try:
        if args.command == "ca":
            prov.state.mkdir(parents=True, exist_ok=True)
            prov.ca.init(args.name)
            print(f"device CA created in {prov.ca.folder} (keep ca.key offline and backed up)")
        elif args.command == "broker":
            s, layout = prov.settings, prov.settings.layout
            s.broker_host = args.broker_host or s.broker_host
            if args.also:
                from device.endpoints import parse_endpoint

                also = [] if args.also == ["none"] else args.also
                try:
                    for item in also:
                        parse_endpoint(item, s.layout.tls_port)
                except ValueError as exc:
                    print(f"error: --also: {exc}", file=sys.stderr)
                    return 2
                s.brokers = also
            for attr, value in (
                ("host", args.listen),
                ("tls_port", args.tls_port),
                ("mtls_port", args.mtls_port),
                ("dev_port", args.dev_port),
                ("server_cert", args.server_cert),
                ("server_key", args.server_key),
                ("persistence_dir", args.persistence_dir),
                ("run_as_user", args.user),
            ):
                if value is not None:
                    setattr(layout, attr, value)
            try:
                conf = prov.broker_config(self_signed=args.self_signed)
            except ProvisioningError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(
                f"wrote {conf} (+ passwd, acl) and, for a NATS cluster, "
                f"{conf.parent / 'nats-accounts.conf'}; collector password in "
                f"{prov.state / 'collector.password'}"
            )
            if args.reload:
                print("broker reloaded" if prov.reload() else "no running broker to reload")
        elif args.command == "unit" and args.action == "add":
            b = prov.add_unit(
                args.centre,
                args.desk,
                cert=args.cert,
                service=args.service,
                employee=args.employee,
                scale=args.scale,
                mode=args.mode,
                kiosk=args.kiosk,
            )
            print(f"{b.device}: bundle in {b.folder} — copy user-data to the Pi's boot partition")
            print(f"  {b.confirmed}")
        elif args.command == "unit" and args.action == "revoke":
            confirmed = prov.revoke(args.device)
            print(
                f"{args.device} revoked at the broker"
                + (" and retired in the registry" if args.database_url else "")
            )
            print(f"  {confirmed}")
        elif args.command == "unit" and args.action == "rotate":
            b = prov.rotate(args.device, cert=args.cert)
            print(f"{b.device}: new credentials in {b.folder}; install them on the unit")
            print(f"  {b.confirmed}")
        elif args.command == "unit" and args.action == "list":
            for device, e in sorted(prov.accounts.units.items()):
                kind = "certificate" if e.get("cert_serial") else "password"
                state = "revoked" if e.get("revoked") else "active"
                print(f"{device}\t{state}\t{kind}\t{e.get('updated', '')}")
        elif args.command == "fleet":
            bundles = prov.fleet_import(args.csv)
            for b in bundles:
                print(f"{b.device}: {b.folder}")
            print(f"{len(bundles)} units provisioned")
    except (ProvisioningError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

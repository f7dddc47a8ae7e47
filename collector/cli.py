"""``gnahat-collector``: serve, ingest, migrate, registry, quarantine, token, gaps."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from collector.config import Settings, load_settings

log = logging.getLogger("gnahat.collector")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnahat-collector",
        description="Gnahat collector: ingest unit events over MQTT, store, serve feeds.",
    )
    parser.add_argument("--env-file", help="read GNAHAT_* settings from this file")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="HTTP API and MQTT ingest in one process")
    serve.add_argument("--no-ingest", action="store_true", help="HTTP only")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="HTTP worker processes (with --no-ingest; run `ingest` as its own service)",
    )
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    sub.add_parser("ingest", help="MQTT ingest only (run several with a shared subscription)")
    sub.add_parser("migrate", help="create or upgrade the database schema (alembic upgrade head)")

    reg = sub.add_parser("registry", help="registry CSV import/export")
    reg_sub = reg.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = reg_sub.add_parser("import", help="import CSV files from a folder (all or nothing)")
    imp.add_argument("folder", nargs="?", help="folder of CSV files (default: demo registry)")
    imp.add_argument("--demo", action="store_true", help="import the shipped demo registry")
    exp = reg_sub.add_parser("export", help="export the registry as CSV files into a folder")
    exp.add_argument("folder")

    qua = sub.add_parser("quarantine", help="list or re-process quarantined messages")
    qua_sub = qua.add_subparsers(dest="action", metavar="ACTION", required=True)
    ql = qua_sub.add_parser("list", help="list unresolved entries")
    ql.add_argument("--reason")
    ql.add_argument("--all", action="store_true", help="include resolved entries")
    qr = qua_sub.add_parser("replay", help="re-process entries after a registry fix")
    qr.add_argument("--reason")
    qr.add_argument("--id", type=int, action="append", dest="ids")

    tok = sub.add_parser("token", help="API tokens")
    tok_sub = tok.add_subparsers(dest="action", metavar="ACTION", required=True)
    tc = tok_sub.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--role", required=True, choices=["admin", "manager", "analyst", "technician"])
    tc.add_argument("--name", default="")
    tc.add_argument(
        "--centre", action="append", dest="centres", help="a manager's centre (repeatable)"
    )
    tok_sub.add_parser("list", help="list tokens (never their secrets)")
    tr = tok_sub.add_parser("revoke", help="revoke a token by id")
    tr.add_argument("id", type=int)

    gaps = sub.add_parser("gaps", help="missing seq ranges of a unit's streams")
    gaps.add_argument("device")
    sub.add_parser("rebuild-aggregates", help="recompute all daily aggregates from events")

    ret = sub.add_parser("retention", help="delete old raw events (aggregates stay)")
    ret_sub = ret.add_subparsers(dest="action", required=True, metavar="ACTION")
    ra = ret_sub.add_parser("apply", help="delete raw events older than the retention")
    ra.add_argument("--days", type=int, help="override GNAHAT_RETENTION_DAYS")
    ra.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")

    usr = sub.add_parser("user", help="dashboard users (argon2 passwords)")
    usr_sub = usr.add_subparsers(dest="action", required=True, metavar="ACTION")
    ua = usr_sub.add_parser("add", help="add a user; the password is read from stdin or asked")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=["admin", "manager", "analyst"])
    ua.add_argument("--centre", action="append", dest="centres", help="a manager's centre")
    ua.add_argument("--name", default="", help="display name")
    up = usr_sub.add_parser("passwd", help="set a new password (stdin or asked)")
    up.add_argument("username")
    ud = usr_sub.add_parser("disable", help="stop a user logging in (ends their sessions)")
    ud.add_argument("username")
    ur = usr_sub.add_parser("role", help="change a user's role and centres (ends their sessions)")
    ur.add_argument("username")
    ur.add_argument("--role", required=True, choices=["admin", "manager", "analyst"])
    ur.add_argument("--centre", action="append", dest="centres", help="a manager's centre")
    usr_sub.add_parser("list", help="users, roles and centres")
    usr_sub.add_parser("sessions", help="live dashboard sessions (id prefix, user, times)")
    usr_sub.add_parser("failures", help="failed logins in the window and the waits they impose")
    ue = usr_sub.add_parser("end-sessions", help="end sessions: all of a user's, or one by id")
    ue.add_argument("target", help="a username, or a session id prefix from `user sessions`")

    fwd = sub.add_parser("forward", help="forwarding of daily aggregates to the M&E IS")
    fwd_sub = fwd.add_subparsers(dest="action", required=True, metavar="ACTION")
    fwd_sub.add_parser(
        "status", help="batches by state; each centre/day not delivered, with the reason"
    )
    fwd_sub.add_parser("run", help="plan and push what is due, once, now")
    fr = fwd_sub.add_parser(
        "retry", help="re-queue parked or locked batches (after a fix, or a period reopened)"
    )
    fr.add_argument("keys", nargs="*", metavar="KEY", help="batch keys (CENTRE/yyyyMMdd)")
    fr.add_argument("--all", action="store_true", help="every parked or locked batch")
    fwd_sub.add_parser(
        "mapping", help="print the mapping in use (GNAHAT_FORWARD_MAPPING, or the registry's)"
    )
    fm = fwd_sub.add_parser(
        "metadata", help="print the DHIS2 metadata package that makes the mapping true"
    )
    fm.add_argument(
        "--org-units",
        action="store_true",
        help="also create the org units (a test instance; a ministry's has its own)",
    )
    fm.add_argument(
        "--org-unit-parent",
        metavar="UID",
        help="with --org-units: the parent of the centres (default: a root of their own)",
    )
    fwd_sub.add_parser(
        "org-units",
        help="find each centre's org unit on the M&E IS by code; print the mapping with "
        "their UIDs (1 when one is missing)",
    )
    fwd_sub.add_parser(
        "check", help="ask the M&E IS (read-only) whether everything mapped exists; 1 on a gap"
    )
    al = sub.add_parser("alert", help="alerts: rules, recipients, the alerts themselves")
    al_sub = al.add_subparsers(dest="action", required=True, metavar="ACTION")
    al_list = al_sub.add_parser("list", help="open and acknowledged alerts (--all: closed too)")
    al_list.add_argument("--all", action="store_true")
    al_list.add_argument("--lang", choices=["hy", "en"], default="en")
    aa = al_sub.add_parser("ack", help="acknowledge an alert with a comment")
    aa.add_argument("id", type=int)
    aa.add_argument("--comment", required=True)
    aa.add_argument("--by", default="cli")
    al_sub.add_parser("rules", help="every rule's parameters: defaults and overrides")
    ar = al_sub.add_parser("rule", help="set a rule's parameters (all centres, or one)")
    ar.add_argument("kind")
    ar.add_argument("params", nargs="+", metavar="KEY=VALUE")
    ar.add_argument("--centre", help="only this centre (an override)")
    arc = al_sub.add_parser("recipient", help="who hears of alerts")
    arc_sub = arc.add_subparsers(dest="recipient_action", required=True, metavar="ACTION")
    ra = arc_sub.add_parser("add", help="an email address or a webhook URL")
    ra.add_argument("channel", choices=["email", "webhook"])
    ra.add_argument("address")
    ra.add_argument("--name", default="")
    ra.add_argument("--lang", choices=["hy", "en"], default="hy")
    ra.add_argument("--centre", action="append", default=[], help="only this centre (repeat)")
    ra.add_argument("--min-severity", choices=["info", "warning", "critical"], default="warning")
    ra.add_argument(
        "--digest", choices=["daily", "weekly"], help="also a digest of the period (email)"
    )
    arc_sub.add_parser("list", help="recipients")
    rr = arc_sub.add_parser("remove", help="stop notifying a recipient")
    rr.add_argument("id", type=int)
    al_sub.add_parser("run", help="evaluate the rules and send notices, once, now")
    wh = sub.add_parser("webhook", help="webhooks: a push when a day's aggregates change")
    wh_sub = wh.add_subparsers(dest="action", required=True, metavar="ACTION")
    wa = wh_sub.add_parser("add", help="register a receiver; prints its signing secret once")
    wa.add_argument("url")
    wa.add_argument("--name", default="")
    wa.add_argument("--centre", action="append", default=[], help="only this centre (repeat)")
    wh_sub.add_parser("list", help="receivers, with their deliveries by state")
    wr = wh_sub.add_parser("remove", help="stop sending to a receiver")
    wr.add_argument("id", type=int)
    wh_sub.add_parser("status", help="deliveries not delivered, with the reason")
    wt = wh_sub.add_parser("retry", help="re-queue parked deliveries")
    wt.add_argument("ids", nargs="*", type=int, metavar="ID")
    wt.add_argument("--all", action="store_true")
    fd = fwd_sub.add_parser("dry-run", help="check a day's mapping with the M&E IS (dryRun)")
    fd.add_argument("--day", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    fd.add_argument("--centre", help="one centre code (default: all with ratings that day)")
    return parser


def _sessions(settings: Settings):  # type: ignore[no-untyped-def]
    from collector.db import make_engine, session_factory

    return session_factory(make_engine(settings.database_url))


def _check_schema(settings: Settings) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from collector.db import alembic_config, make_engine

    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    if current != head:
        raise SystemExit(
            f"database schema is at {current or 'nothing'}, code expects {head}: "
            "run `gnahat-collector migrate` first"
        )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from collector.db import migrate
    from collector.intake.ingest import client_settings
    from collector.intake.receiver import SettingsError, check_client_settings
    from collector.main import create_app

    if not args.no_ingest:
        try:
            check_client_settings(client_settings(settings))
        except SettingsError as exc:
            print(f"gnahat-collector: {exc}", file=sys.stderr)
            return 2

    if args.migrate:
        migrate(settings.database_url)
    _check_schema(settings)
    if args.workers > 1:
        if not args.no_ingest:
            print(
                "gnahat-collector: --workers needs --no-ingest: run `gnahat-collector ingest` "
                "as its own service (one ingest per client id)",
                file=sys.stderr,
            )
            return 2
        if args.env_file:  # each worker process reads the same settings
            os.environ["GNAHAT_ENV_FILE"] = str(Path(args.env_file).resolve())
        uvicorn.run(
            "collector.main:app_from_env",
            factory=True,
            workers=args.workers,
            host=settings.http_host,
            port=settings.http_port,
            log_level="info",
            server_header=False,
            proxy_headers=False,
        )
        return 0
    app = create_app(settings, ingest=not args.no_ingest)
    if app.state.gnahat.ingest is not None:
        _fault_drill(lambda: app.state.gnahat.ingest)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        server_header=False,  # no "server: uvicorn"
        proxy_headers=False,  # forwarded headers are read only from GNAHAT_TRUSTED_PROXIES
    )
    ingest = app.state.gnahat.ingest
    if ingest is not None and ingest.fatal:
        print(f"gnahat-collector: {ingest.fatal}", file=sys.stderr)
        return 3
    return 0


def _registry_codes(sessions: Any) -> tuple[set[str], set[str]]:
    """Centres with a desk now, and services, as the registry holds them."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from collector.models import Assignment, Centre, Service

    now = datetime.now(UTC)
    with sessions() as s:
        centres = set(
            s.scalars(
                select(Centre.code)
                .join(Assignment, Assignment.centre_id == Centre.id)
                .where(
                    Assignment.valid_from <= now,
                    (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
                )
            )
        )
        services = set(s.scalars(select(Service.code)))
    return centres, services


def _fault_drill(current: Any) -> None:
    """``kill -USR2 <pid>``: the ingest writer fails its next round, as a defect would,
    so an operator can check that supervision and monitoring answer (the batch is
    delivered again; nothing is lost)."""
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, lambda *_: current().fail_next_round())


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from collector.intake.ingest import Ingest
    from collector.intake.receiver import SettingsError
    from collector.intake.store import Store
    from collector.metrics import Metrics

    _check_schema(settings)
    store = Store(
        _sessions(settings),
        timezone=settings.timezone,
        burst_max_presses=settings.burst_max_presses,
        burst_window_s=settings.burst_window_s,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if settings.ingest_standby:
        return _ingest_with_lease(settings, store, done)
    ingest = Ingest(settings, store, Metrics(), on_fatal=lambda _why: done.set())
    _fault_drill(lambda: ingest)
    try:
        ingest.start()
    except SettingsError as exc:
        print(f"gnahat-collector: {exc}", file=sys.stderr)
        return 2
    log.info("ingesting from %s as %s", settings.mqtt_url, settings.mqtt_client_id)
    # What start-up built lives as long as the process: out of every later collection.
    gc.collect()
    gc.freeze()
    done.wait()
    log.info("stopping: committing what is queued")
    ingest.stop()
    if ingest.fatal:
        print(f"gnahat-collector: {ingest.fatal}", file=sys.stderr)
        return 3
    return 0


def _ingest_with_lease(settings: Settings, store: Any, done: threading.Event) -> int:
    """Active or standby: ingest only while holding the ``ingest`` lease.

    Every process of the group uses the same client id, so the one that takes over
    resumes the broker's persistent session (what arrived meanwhile is queued there).
    Two actives for a moment (a lease that ran out under a slow renewal) cost nothing
    but time: the broker hands the session to the newer connection, and the unique key
    on (device, stream, seq) stores each event once whoever commits it.
    """
    import socket

    from collector.intake.ingest import Ingest, utcnow
    from collector.intake.receiver import SettingsError
    from collector.metrics import Metrics
    from collector.outbound.outbox import Lease

    lease = Lease(
        store.sessions,
        "ingest_lease",
        owner=f"{socket.gethostname()}:{os.getpid()}",
        ttl_s=settings.ingest_lease_s,
        clock=utcnow,
    )
    beat = settings.ingest_lease_s / 3
    fatal: list[str] = []

    def holds() -> bool | None:
        try:
            return lease.hold()
        except Exception as exc:  # the database is away: nobody can take the lease either
            log.warning("could not renew the ingest lease (%s)", exc)
            return None

    log.info("standby ingest as %s: waiting for the lease", lease.owner)
    gc.collect()
    gc.freeze()
    while not done.is_set():
        if not holds():
            done.wait(beat)
            continue
        renewed = time.monotonic()
        store.fence = lease.check  # every commit: still ours, in this generation
        ingest = Ingest(settings, store, Metrics(), on_fatal=lambda why: fatal.append(why))
        _fault_drill(lambda: ingest)  # noqa: B023  (the current holder's, read at the signal)
        try:
            ingest.start()
        except SettingsError as exc:
            store.fence = None
            lease.release()
            print(f"gnahat-collector: {exc}", file=sys.stderr)
            return 2
        log.info("holding the ingest lease: ingesting from %s", settings.mqtt_url)
        why = ""
        while not done.wait(beat) and not fatal:
            held = holds()
            if held:
                renewed = time.monotonic()
            elif held is False:
                why = "another process holds the ingest lease"
            elif time.monotonic() - renewed >= settings.ingest_lease_s - beat:
                # Not renewed for most of its life: another process may take it soon.
                # Stop consuming before it can (no two actives knocking each other
                # off the broker with the shared client id).
                why = "the ingest lease could not be renewed in time"
            if ingest.fenced.is_set():
                why = "a commit was fenced off (the lease is another process's)"
            if why:
                break
        ingest.stop()
        store.fence = None
        if why:  # said once ingest has stopped: nothing is acked by this process after
            log.warning("%s: standing by", why)
        if fatal:
            lease.release()
            print(f"gnahat-collector: {fatal[0]}", file=sys.stderr)
            return 3
    with contextlib.suppress(Exception):
        lease.release()
    return 0


def cmd_registry(settings: Settings, args: argparse.Namespace) -> int:
    from collector.demo_data import SHIPPED
    from collector.registry import RegistryImportError, export_dir, import_dir

    sessions = _sessions(settings)
    if args.action == "import":
        folder = Path(args.folder) if args.folder and not args.demo else SHIPPED
        try:
            with sessions() as s, s.begin():
                counts = import_dir(s, folder)
        except RegistryImportError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(json.dumps({"imported": counts}, ensure_ascii=False))
    else:
        with sessions() as s:
            export_dir(s, Path(args.folder))
        print(f"exported to {args.folder}")
    return 0


def cmd_quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from collector.intake.store import Store
    from collector.models import Quarantine

    sessions = _sessions(settings)
    if args.action == "list":
        with sessions() as s:
            q = select(Quarantine).order_by(Quarantine.id)
            if not args.all:
                q = q.where(Quarantine.resolved_at.is_(None))
            if args.reason:
                q = q.where(Quarantine.reason == args.reason)
            for e in s.scalars(q):
                key = f"{e.device}/{e.stream}/{e.seq}" if e.device else "-"
                state = e.resolution or "open"
                print(f"{e.id}\t{e.reason}\t{state}\t{e.count}x\t{key}\t{e.topic}\t{e.detail}")
        return 0
    store = Store(sessions, timezone=settings.timezone)
    outcome = store.replay_quarantine(ids=args.ids, reason=args.reason)
    print(json.dumps(dict(outcome)))
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from collector.edge.auth import Role, TokenError, create_token, revoke_token
    from collector.models import ApiToken

    sessions = _sessions(settings)
    with sessions() as s, s.begin():
        if args.action == "create":
            try:
                row, plain = create_token(
                    s, name=args.name, role=Role(args.role), centres=args.centres
                )
            except TokenError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(plain)
            print(f"token {row.id} ({row.role}) created; it is shown only now", file=sys.stderr)
        elif args.action == "list":
            for t in s.scalars(select(ApiToken).order_by(ApiToken.id)):
                state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                scope = t.centres or ""
                print(f"{t.id}\t{t.role}\t{t.prefix}…\t{state}\t{t.name}\t{scope}")
        elif not revoke_token(s, args.id):
            print(f"no active token {args.id}", file=sys.stderr)
            return 1
    return 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from collector.intake.retention import apply_retention, cutoff_for

    now = datetime.now(UTC)
    try:
        cutoff = cutoff_for(
            args.days if args.days is not None else settings.retention_days,
            now,
            settings.timezone,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = apply_retention(_sessions(settings), cutoff, now=now, dry_run=args.dry_run)
    print(("would delete: " if args.dry_run else "") + str(report))
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from collector.edge import websessions
    from collector.edge.auth import Role
    from collector.edge.users import UserError, create_user, disable_user, set_password, set_role
    from collector.models import User

    now = datetime.now(UTC)
    try:
        with _sessions(settings)() as s, s.begin():
            if args.action == "add":
                create_user(
                    s,
                    args.username,
                    _read_password(),
                    role=Role(args.role),
                    centres=args.centres,
                    display_name=args.name,
                    now=now,
                )
                print(f"user {args.username} ({args.role}) added")
            elif args.action == "passwd":
                set_password(s, args.username, _read_password(), now=now)
                print(f"password of {args.username} changed")
            elif args.action == "disable":
                disable_user(s, args.username, now=now)
                print(f"{args.username} can no longer log in")
            elif args.action == "role":
                set_role(s, args.username, Role(args.role), centres=args.centres, now=now)
                print(f"{args.username} is now {args.role}; their sessions ended")
            elif args.action == "sessions":
                for row, name in websessions.live(s, now=now):
                    print(
                        f"{row.id[:12]}\t{name}\t{row.address}\t"
                        f"since {row.created_at:%Y-%m-%d %H:%M}\t"
                        f"last {row.last_seen_at:%Y-%m-%d %H:%M}\t"
                        f"until {row.expires_at:%Y-%m-%d %H:%M}"
                    )
            elif args.action == "failures":
                from collector.edge.users import failures_report

                for kind, who, n, wait in failures_report(s, now):
                    note = f"waits {wait:.0f} s" if wait > 0 else "no wait"
                    print(f"{kind}\t{who}\t{n} failures\t{note}")
            elif args.action == "end-sessions":
                user = s.scalars(select(User).where(User.username == args.target)).first()
                if user is not None:
                    n = websessions.end_all(s, user.id, why="ended by admin", now=now)
                else:
                    n = websessions.end_by_prefix(s, args.target, now=now)
                    if not n:
                        raise UserError(f"no user or single live session {args.target!r}")
                print(f"{n} session(s) ended")
            else:
                for u in s.scalars(select(User).order_by(User.username)):
                    state = "disabled" if u.disabled_at else "active"
                    print(f"{u.username}\t{u.role}\t{state}\t{u.centres or ''}\t{u.display_name}")
    except (UserError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    from collector.outbound import mapping as mapping_mod

    sessions = _sessions(settings)
    try:
        if settings.forward_mapping:
            mapping = mapping_mod.load(settings.forward_mapping)
        else:
            with sessions() as s:
                mapping = mapping_mod.derive_from_db(s)
    except (mapping_mod.MappingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "mapping":
        sys.stdout.write(mapping_mod.to_csv(mapping))
        return 0
    if args.action == "metadata":
        try:
            package = mapping_mod.metadata_package(
                mapping, org_units=args.org_units, org_unit_parent=args.org_unit_parent
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if mapping.user_group is None:
            print(
                "warning: no user_group in the mapping: the package shares data write with "
                "nobody, so only an account with ALL can push (see docs/operations.md)",
                file=sys.stderr,
            )
        print(json.dumps(package, ensure_ascii=False, indent=2))
        return 0
    if args.action == "status":
        return _forward_status(sessions)
    if not settings.forward_url:
        print("error: set GNAHAT_FORWARD_URL to the M&E IS", file=sys.stderr)
        return 2
    if args.action == "org-units":
        from collector.outbound.forward import make_http_client
        from collector.outbound.me_check import CheckFailed, resolve_org_units

        with make_http_client(settings) as http:
            try:
                findings = resolve_org_units(mapping, http, settings.forward_url)
            except CheckFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        for f in findings:
            print(f, file=sys.stderr)
        sys.stdout.write(mapping_mod.to_csv(mapping))
        return 1 if any(f.level == "error" for f in findings) else 0
    if args.action == "check":
        from collector.outbound.forward import make_http_client
        from collector.outbound.me_check import CheckFailed, check

        with make_http_client(settings) as http:
            try:
                findings = check(mapping, http, settings.forward_url, _registry_codes(sessions))
            except CheckFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        for f in findings:
            print(f)
        return 1 if any(f.level == "error" for f in findings) else 0
    from collector.outbound.forward import Forwarder

    forwarder = Forwarder(sessions, settings)
    try:
        if args.action == "run":
            print(forwarder.run_once())
        elif args.action == "retry":
            if not args.keys and not args.all:
                print("error: name batch keys or give --all", file=sys.stderr)
                return 2
            print(f"{forwarder.retry(None if args.all else args.keys)} batch(es) re-queued")
        elif args.action == "dry-run":
            results = forwarder.dry_run(args.day, args.centre)
            if not results:
                print(f"no ratings on {args.day}")
            bad = 0
            for code, outcome in results:
                ok = outcome.kind == "sent"
                bad += not ok
                label = "OK" if ok else outcome.kind.upper()
                print(f"{code}\t{label}\t{outcome.detail}".rstrip())
            return 1 if bad else 0
    finally:
        forwarder.stop()
    return 0


def cmd_webhook(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from collector.models import Webhook, WebhookDelivery
    from collector.outbound import webhooks

    sessions = _sessions(settings)
    if args.action == "add":
        try:
            with sessions() as s, s.begin():
                hook, secret = webhooks.add(s, args.url, name=args.name, centres=args.centre)
                hook_id = hook.id
        except webhooks.WebhookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"webhook {hook_id} -> {args.url}")
        print(f"signing secret (shown once; Standard Webhooks): {secret}")
        return 0
    if args.action == "list":
        with sessions() as s:
            states: dict[int, dict[str, int]] = {}
            for hook_id, state, n in s.execute(
                select(WebhookDelivery.webhook_id, WebhookDelivery.state, func.count()).group_by(
                    WebhookDelivery.webhook_id, WebhookDelivery.state
                )
            ):
                states.setdefault(hook_id, {})[state] = n
            for h in s.scalars(select(Webhook).order_by(Webhook.id)):
                counts = ", ".join(f"{n} {k}" for k, n in sorted(states.get(h.id, {}).items()))
                print(
                    f"{h.id}\t{'active' if h.active else 'removed'}\t{h.name}\t{h.url}\t"
                    f"{h.centres or 'all centres'}\t{counts or 'no deliveries yet'}"
                )
        return 0
    if args.action == "remove":
        with sessions() as s, s.begin():
            hook = s.get(Webhook, args.id)
            if hook is None:
                print(f"error: no webhook {args.id}", file=sys.stderr)
                return 2
            hook.active = False
        print(f"webhook {args.id} removed (its waiting deliveries are parked)")
        return 0
    if args.action == "status":
        with sessions() as s:
            rows = s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.state != "sent")
                .order_by(WebhookDelivery.id)
            ).all()
            for d in rows:
                when = d.next_attempt_at.isoformat() if d.next_attempt_at else "-"
                print(
                    f"{d.id}\t{d.batch_key}\t{d.state}\tv{d.version}\ttries {d.attempts}\t"
                    f"{when}\t{d.last_error or ''}".rstrip()
                )
            if not rows:
                print("every delivery delivered")
        return 0
    if not args.ids and not args.all:
        print("error: name delivery ids or give --all", file=sys.stderr)
        return 2
    sender = webhooks.WebhookSender(sessions, settings)
    try:
        print(f"{sender.retry(None if args.all else args.ids)} delivery(ies) re-queued")
    finally:
        sender.http.close()
    return 0


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: write KEY=VALUE")
    value: Any = raw
    for conv in (int, float):
        try:
            value = conv(raw)
            break
        except ValueError:
            continue
    if raw in ("true", "false"):
        value = raw == "true"
    return key, value


def cmd_alert(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from collector.models import AlertRecipient, AlertRule, Centre
    from collector.outbound import alerts

    sessions = _sessions(settings)
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            states = (*alerts.ACTIVE, alerts.CLOSED) if args.all else alerts.ACTIVE
            with sessions() as s:
                rows = alerts.listing(s, centres=None, states=states, lang=args.lang)
            for a in rows:
                print(
                    f"{a['id']}\t{a['state']}\t{a['severity']}\t{a['centre'] or '-'}\t"
                    f"{a['opened_at']:%Y-%m-%d %H:%M}\t{a['text']}"
                )
            if not rows:
                print("no alerts")
            return 0
        if args.action == "ack":
            with sessions() as s, s.begin():
                alerts.acknowledge(s, args.id, args.by, args.comment, now)
            print(f"alert {args.id} acknowledged")
            return 0
        if args.action == "rules":
            with sessions() as s:
                codes = dict(s.execute(select(Centre.id, Centre.code)).all())
                overrides = list(s.scalars(select(AlertRule).order_by(AlertRule.kind)))
            for kind, params in alerts.DEFAULTS.items():
                print(f"{kind}\tdefault\t{params}")
                for r in overrides:
                    if r.kind == kind:
                        where = codes.get(r.centre_id, "all centres") if r.centre_id else "all"
                        print(f"{kind}\t{where}\t{r.params}")
            return 0
        if args.action == "rule":
            params = dict(_param(p) for p in args.params)
            with sessions() as s, s.begin():
                centre_id = None
                if args.centre:
                    centre_id = s.scalar(select(Centre.id).where(Centre.code == args.centre))
                    if centre_id is None:
                        raise ValueError(f"no centre {args.centre}")
                alerts.set_rule(s, args.kind, params, centre_id, now)
            print(f"{args.kind} set for {args.centre or 'all centres'}: {params}")
            return 0
        if args.action == "recipient":
            if args.recipient_action == "add":
                with sessions() as s, s.begin():
                    r, secret = alerts.add_recipient(
                        s,
                        args.channel,
                        args.address,
                        name=args.name,
                        lang=args.lang,
                        centres=args.centre,
                        min_severity=args.min_severity,
                        digest=args.digest,
                        now=now,
                    )
                    rid = r.id
                print(f"recipient {rid}: {args.channel} {args.address}")
                if secret:
                    print(f"signing secret (shown once; Standard Webhooks): {secret}")
                return 0
            if args.recipient_action == "list":
                with sessions() as s:
                    for r in s.scalars(select(AlertRecipient).order_by(AlertRecipient.id)):
                        state = "active" if r.active else "removed"
                        print(
                            f"{r.id}\t{state}\t{r.channel}\t{r.address}\t{r.lang}\t"
                            f"{r.min_severity}+\t{r.centres or 'all centres'}\t"
                            f"{r.digest or 'no digest'}"
                        )
                return 0
            with sessions() as s, s.begin():
                rec = s.get(AlertRecipient, args.id)
                if rec is None:
                    raise ValueError(f"no recipient {args.id}")
                rec.active = False
            print(f"recipient {args.id} removed")
            return 0
        engine = alerts.AlertEngine(sessions, settings)
        try:
            print(engine.run_once() or "nothing to do")
        finally:
            engine.stop()
        return 0
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


PROBLEMS = {
    "link": "the M&E IS did not answer",
    "server": "the M&E IS failed (5xx or throttled)",
    "auth": "the M&E IS refused the account",
    "mapping": "values refused: a mapping or metadata gap",
    "not_open": "the period is not open yet in the M&E IS",
    "locked": "locked in the M&E IS",
    "unmapped": "the mapping does not cover it",
    "answer": "the M&E IS answered something unusable",
}


def _forward_status(sessions: Any) -> int:
    from sqlalchemy import select

    from collector.models import ForwardBatch

    with sessions() as s:
        batches = s.scalars(select(ForwardBatch).order_by(ForwardBatch.batch_key)).all()
    by_state: dict[str, int] = {}
    for b in batches:
        by_state[b.state] = by_state.get(b.state, 0) + 1
    print(", ".join(f"{n} {k}" for k, n in sorted(by_state.items())) or "no batches yet")
    for b in batches:
        if b.state == "sent":
            continue
        why = PROBLEMS.get(b.problem or "", "")
        when = b.next_attempt_at.isoformat() if b.next_attempt_at else "-"
        detail = " - ".join(x for x in (why, b.last_error or "") if x)
        print(f"{b.batch_key}\t{b.state}\tv{b.version}\ttries {b.attempts}\t{when}\t{detail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 0
    settings = load_settings(args.env_file)
    if args.command == "serve":
        return cmd_serve(settings, args)
    if args.command == "ingest":
        return cmd_ingest(settings, args)
    if args.command == "migrate":
        from collector.db import migrate

        migrate(settings.database_url)
        print("database is at the latest schema")
        return 0
    if args.command == "registry":
        return cmd_registry(settings, args)
    if args.command == "quarantine":
        return cmd_quarantine(settings, args)
    if args.command == "token":
        return cmd_token(settings, args)
    if args.command == "gaps":
        from collector.reading.gaps import stream_gaps

        with _sessions(settings)() as s:
            print(json.dumps(stream_gaps(s, args.device)))
        return 0
    if args.command == "forward":
        return cmd_forward(settings, args)
    if args.command == "webhook":
        return cmd_webhook(settings, args)
    if args.command == "alert":
        return cmd_alert(settings, args)
    if args.command == "user":
        return cmd_user(settings, args)
    if args.command == "retention":
        return cmd_retention(settings, args)
    if args.command == "rebuild-aggregates":
        from collector.intake.store import Store

        print(f"aggregates rebuilt: {Store(_sessions(settings)).rebuild_all_aggregates()}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

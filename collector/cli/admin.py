"""Administration: the registry, quarantine, API tokens, retention and dashboard users."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from collector.cli.common import _read_password, _sessions
from collector.config import Settings


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

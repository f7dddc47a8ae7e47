"""Dashboard users: argon2-hashed passwords, roles scoped like tokens, login throttling.

Throttling slows guessing without handing anyone a lockout. Failed logins within
``WINDOW`` are counted three ways, and each count past its free allowance makes the
next attempt wait, doubling from one second up to a cap (HTTP 429 with Retry-After):

- per (username, address): 3 free, then up to 15 minutes — one person guessing one
  account;
- per address, any usernames: 10 free, then up to 15 minutes — password spraying from
  one place, however many usernames it tries;
- per username, any addresses: 20 free, then up to 1 minute — a distributed attack on
  one account is slowed, yet a stranger's few requests never keep its owner out, and
  no count ever locks an account.

The wait runs from the last failure that counted. Every failure and every throttled
attempt is in the audit log; ``gnahat-collector user failures`` shows admins the
current counts and waits. Failures are kept in the database, so the limits hold across
processes and restarts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from collector.edge.auth import Role, centre_scope
from collector.edge.websessions import end_all
from collector.models import AuditLog, LoginFailure, User

WINDOW = timedelta(minutes=15)
#: (free failures, longest wait in seconds) per kind of count.
PAIR_LIMIT = (3, 15 * 60)
ADDRESS_LIMIT = (10, 15 * 60)
USER_LIMIT = (20, 60)
MIN_PASSWORD = 12
#: argon2id at argon2-cffi's defaults (RFC 9106's low-memory choice: 3 passes over
#: 64 MiB, about 0.2 CPU-s a hash here): what the collector uses.
DEFAULT_HASHER = PasswordHasher()
_hasher = DEFAULT_HASHER


def use_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Hash and verify with ``hasher`` from now on; returns the one it replaces. For the
    test suite only (argon2id with light parameters, so that hundreds of logins do not
    cost a CPU-minute); the collector never calls it, and a hash keeps its own
    parameters, so one made either way verifies with the other."""
    global _hasher
    previous, _hasher = _hasher, hasher
    return previous


class UserError(ValueError):
    pass


class LoginRefused(Exception):
    """Wrong username or password (deliberately not saying which)."""


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password has at least {MIN_PASSWORD} characters")


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    role: Role,
    now: datetime,
    centres: list[str] | None = None,
    display_name: str = "",
    actor: str = "cli",
) -> User:
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise UserError(f"user {username!r} exists")
    _check_password(password)
    user = User(
        username=username,
        display_name=display_name,
        role=Role(role).value,
        centres=centre_scope(session, Role(role), centres, UserError),
        password_hash=_hasher.hash(password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action="user.create",
            detail={"username": username, "role": user.role, "centres": user.centres},
        )
    )
    return user


def set_password(session: Session, username: str, password: str, *, now: datetime) -> None:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise UserError(f"no user {username!r}")
    _check_password(password)
    user.password_hash = _hasher.hash(password)
    session.add(AuditLog(at=now, actor="cli", action="user.passwd", detail={"username": username}))
    end_all(session, user.id, why="password changed", now=now)


def set_role(
    session: Session,
    username: str,
    role: Role,
    *,
    now: datetime,
    centres: list[str] | None = None,
) -> None:
    """Change a user's role (and a manager's centres); their sessions end at once."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise UserError(f"no user {username!r}")
    user.role = Role(role).value
    user.centres = centre_scope(session, Role(role), centres, UserError)
    session.add(
        AuditLog(
            at=now,
            actor="cli",
            action="user.role",
            detail={"username": username, "role": user.role, "centres": user.centres},
        )
    )
    end_all(session, user.id, why="role changed", now=now)


def disable_user(session: Session, username: str, *, now: datetime) -> None:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise UserError(f"no user {username!r}")
    user.disabled_at = now
    session.add(AuditLog(at=now, actor="cli", action="user.disable", detail={"username": username}))
    end_all(session, user.id, why="user disabled", now=now)


def _wait(count: int, last: datetime | None, limit: tuple[int, int], now: datetime) -> float:
    """Seconds still to wait after ``count`` failures, the last at ``last``."""
    free, cap = limit
    if count < free or last is None:
        return 0.0
    delay = min(2.0 ** (count - free), float(cap))
    return max(0.0, (last + timedelta(seconds=delay) - now).total_seconds())


def throttle(session: Session, username: str, address: str, now: datetime) -> tuple[float, str]:
    """The longest wait any count imposes on this attempt, and which count it is."""
    since = now - WINDOW
    recent = LoginFailure.at > since

    def counted(*where: Any) -> tuple[int, datetime | None]:
        n, last = session.execute(
            select(func.count(), func.max(LoginFailure.at)).where(recent, *where)
        ).one()
        return int(n or 0), last

    checks = [
        ("username and address", counted(LoginFailure.username == username,
                                         LoginFailure.address == address), PAIR_LIMIT),
        ("address", counted(LoginFailure.address == address), ADDRESS_LIMIT),
        ("username", counted(LoginFailure.username == username), USER_LIMIT),
    ]  # fmt: skip
    worst = (0.0, "")
    for name, (n, last), limit in checks:
        wait = _wait(n, last, limit, now)
        if wait > worst[0]:
            worst = (wait, name)
    return worst


def login(session: Session, username: str, password: str, *, address: str, now: datetime) -> User:
    """Check a login; raises :class:`RateLimited` or :class:`LoginRefused`. The caller
    commits (failures are recorded in the same transaction)."""
    username, address = username[:64], address[:64]
    wait, why = throttle(session, username, address, now)
    if wait > 0:
        session.add(
            AuditLog(
                at=now,
                actor=f"address:{address}",
                action="login.throttled",
                detail={"username": username, "by": why, "wait_s": round(wait, 1)},
            )
        )
        raise RateLimited(max(1, int(wait + 0.999)))
    user = session.scalars(select(User).where(User.username == username)).first()
    ok = False
    if user is not None and user.disabled_at is None:
        try:
            ok = _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        _hasher.hash(password)  # the same work whether or not the user exists
    if not ok or user is None:
        session.add(LoginFailure(username=username, address=address, at=now))
        session.add(
            AuditLog(
                at=now,
                actor=f"address:{address}",
                action="login.failed",
                detail={"username": username},
            )
        )
        session.execute(delete(LoginFailure).where(LoginFailure.at < now - 4 * WINDOW))
        raise LoginRefused()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    # The owner is in: their own pair's failures are forgiven (the address and username
    # counts stay, so a sprayer who guessed one password is not pardoned for the rest).
    session.execute(
        delete(LoginFailure).where(
            LoginFailure.username == username, LoginFailure.address == address
        )
    )
    user.last_login_at = now
    session.add(
        AuditLog(at=now, actor=f"user:{username}", action="login", detail={"address": address})
    )
    return user


def failures_report(session: Session, now: datetime) -> list[tuple[str, str, int, float]]:
    """For admins: (kind, who, failures in the window, seconds still to wait)."""
    since = now - WINDOW
    out: list[tuple[str, str, int, float]] = []
    for kind, col, limit in (
        ("address", LoginFailure.address, ADDRESS_LIMIT),
        ("username", LoginFailure.username, USER_LIMIT),
    ):
        rows = session.execute(
            select(col, func.count(), func.max(LoginFailure.at))
            .where(LoginFailure.at > since)
            .group_by(col)
            .order_by(func.count().desc())
        ).all()
        out += [(kind, str(who), int(n), _wait(int(n), last, limit, now)) for who, n, last in rows]
    return out

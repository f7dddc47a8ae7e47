"""Dashboard users: argon2-hashed passwords, roles scoped like tokens, a login rate limit.

A username that failed ``MAX_FAILURES_PER_USER`` times, or an address that failed
``MAX_FAILURES_PER_ADDRESS`` times, within ``WINDOW`` is refused until the window has
passed, whether the next password is right or not. Failures are kept in the database,
so the limit holds across processes and restarts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from collector.auth import Role, centre_scope
from collector.models import AuditLog, LoginFailure, User
from collector.websessions import end_all

WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
MIN_PASSWORD = 12
_hasher = PasswordHasher()


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


def login(session: Session, username: str, password: str, *, address: str, now: datetime) -> User:
    """Check a login; raises :class:`RateLimited` or :class:`LoginRefused`. The caller
    commits (failures are recorded in the same transaction)."""
    since = now - WINDOW
    by_user = session.scalars(
        select(func.min(LoginFailure.at)).where(
            LoginFailure.username == username, LoginFailure.at > since
        )
    ).one()
    n_user = session.scalar(
        select(func.count()).where(LoginFailure.username == username, LoginFailure.at > since)
    )
    n_addr = session.scalar(
        select(func.count()).where(LoginFailure.address == address, LoginFailure.at > since)
    )
    if (n_user or 0) >= MAX_FAILURES_PER_USER or (n_addr or 0) >= MAX_FAILURES_PER_ADDRESS:
        oldest = by_user or now
        raise RateLimited(max(1, int((oldest + WINDOW - now).total_seconds())))
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
        session.add(LoginFailure(username=username[:64], address=address[:64], at=now))
        session.execute(delete(LoginFailure).where(LoginFailure.at < now - 4 * WINDOW))
        raise LoginRefused()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
    user.last_login_at = now
    session.add(
        AuditLog(at=now, actor=f"user:{username}", action="login", detail={"address": address})
    )
    return user

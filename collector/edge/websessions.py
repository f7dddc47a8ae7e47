"""Dashboard sessions kept on the server, so they can be listed and ended.

The browser's cookie carries only a random id (signed by the session middleware);
the row is keyed by its SHA-256, so a database dump yields no usable cookie. A
session ends on logout, after ``GNAHAT_SESSION_IDLE_S`` without a request, after
``GNAHAT_SESSION_LIFETIME_S`` whatever happens, and — for every session of a user at
once — when that user's password, role or centres change or the user is disabled.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from collector.models import AuditLog, User, WebSession

#: Most seconds between two writes of a session's last use.
SEEN_EVERY_S = 30.0


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(
    session: Session, user: User, *, address: str, now: datetime, lifetime_s: float
) -> tuple[str, WebSession]:
    """A new session for ``user``; returns the cookie's token (shown only now)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=_key(token),
        user_id=user.id,
        csrf=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=lifetime_s),
        address=address[:64],
    )
    session.add(row)
    return token, row


def lookup(session: Session, token: str, *, now: datetime, idle_s: float) -> WebSession | None:
    """The live session of ``token`` (its last use moved to ``now``), or None."""
    row = session.get(WebSession, _key(token))
    if row is None or row.ended_at is not None:
        return None
    if now >= row.expires_at:
        row.ended_at, row.ended_why = now, "expired"
        return None
    if now - row.last_seen_at > timedelta(seconds=idle_s):
        row.ended_at, row.ended_why = now, "idle"
        return None
    # Its last use is written at most every few seconds (a page makes several requests,
    # and each write is a commit); the idle limit keeps its meaning to within that.
    if now - row.last_seen_at >= timedelta(seconds=min(SEEN_EVERY_S, idle_s / 20)):
        row.last_seen_at = now
    return row


def end(session: Session, row: WebSession, *, why: str, now: datetime) -> None:
    if row.ended_at is None:
        row.ended_at, row.ended_why = now, why


def end_all(session: Session, user_id: int, *, why: str, now: datetime, actor: str = "cli") -> int:
    """End every live session of a user at once; returns how many."""
    result = session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
        .values(ended_at=now, ended_why=why)
    )
    n = int(result.rowcount)  # type: ignore[attr-defined]
    if n:
        session.add(
            AuditLog(
                at=now,
                actor=actor,
                action="sessions.end",
                detail={"user_id": user_id, "why": why, "sessions": n},
            )
        )
    return n


def live(session: Session, *, now: datetime) -> list[tuple[WebSession, str]]:
    """Live sessions with their usernames, newest first (for admins)."""
    rows = session.execute(
        select(WebSession, User.username)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.ended_at.is_(None), WebSession.expires_at > now)
        .order_by(WebSession.created_at.desc())
    ).all()
    return [(r, name) for r, name in rows]


def end_by_prefix(session: Session, prefix: str, *, now: datetime, actor: str = "cli") -> int:
    """End the live session whose id starts with ``prefix`` (as `user sessions` lists it)."""
    if len(prefix) < 8:
        return 0
    rows = session.scalars(
        select(WebSession).where(WebSession.id.startswith(prefix), WebSession.ended_at.is_(None))
    ).all()
    if len(rows) != 1:
        return 0
    end(session, rows[0], why="ended by admin", now=now)
    session.add(AuditLog(at=now, actor=actor, action="sessions.end", detail={"session": prefix}))
    return 1

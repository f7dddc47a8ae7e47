"""API tokens: random bearer secrets, stored only as SHA-256 hashes, revocable.

Tokens carry 256 bits of entropy, so a fast hash is the right tool here (argon2
is for the low-entropy passwords of people).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import ApiToken, AuditLog

TOKEN_PREFIX = "gnh_"


class Role(enum.StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    ANALYST = "analyst"
    TECHNICIAN = "technician"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, *, name: str, role: Role, now: datetime | None = None, actor: str = "cli"
) -> tuple[ApiToken, str]:
    """Create a token; the plaintext is returned once and never stored."""
    now = now or datetime.now(UTC)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=Role(role).value,
        token_hash=hash_token(plain),
        prefix=plain[:12],
        created_at=now,
    )
    session.add(row)
    session.flush()
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action="token.create",
            detail={"id": row.id, "name": name, "role": row.role},
        )
    )
    return row, plain


def revoke_token(session: Session, token_id: int, *, actor: str = "cli") -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    session.add(
        AuditLog(at=row.revoked_at, actor=actor, action="token.revoke", detail={"id": token_id})
    )
    return True


def authenticate(session: Session, presented: str) -> ApiToken | None:
    if not presented.startswith(TOKEN_PREFIX):
        return None
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == hash_token(presented))
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row

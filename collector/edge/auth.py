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

from collector.models import ApiToken, AuditLog, Centre

TOKEN_PREFIX = "gnh_"


class Role(enum.StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    ANALYST = "analyst"
    TECHNICIAN = "technician"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenError(ValueError):
    pass


def create_token(
    session: Session,
    *,
    name: str,
    role: Role,
    now: datetime | None = None,
    actor: str = "cli",
    centres: list[str] | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; the plaintext is returned once and never stored.

    A manager's token is scoped to the centres named (codes from the registry).
    """
    now = now or datetime.now(UTC)
    scope = centre_scope(session, Role(role), centres, TokenError)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=Role(role).value,
        token_hash=hash_token(plain),
        prefix=plain[:12],
        centres=scope,
        created_at=now,
    )
    session.add(row)
    session.flush()
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action="token.create",
            detail={"id": row.id, "name": name, "role": row.role, "centres": row.centres},
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


def centre_scope(
    session: Session, role: Role, centres: list[str] | None, error: type[ValueError]
) -> str | None:
    """The stored scope of a manager (token or user): known centre codes, comma-separated;
    None for other roles, which see every centre. Problems raise ``error``."""
    if role is Role.MANAGER:
        if not centres:
            raise error("a manager needs --centre CODE (one or more)")
        known = set(session.scalars(select(Centre.code).where(Centre.code.in_(centres))))
        unknown = sorted(set(centres) - known)
        if unknown:
            raise error(f"unknown centre(s): {', '.join(unknown)}")
        return ",".join(sorted(set(centres)))
    if centres:
        raise error("only managers are scoped to centres")
    return None


def scoped_centres(role: str, scope: str | None) -> set[str] | None:
    """The centre codes a token or user may see; None means every centre."""
    if role == Role.MANAGER.value:
        return set((scope or "").split(",")) - {""}
    return None

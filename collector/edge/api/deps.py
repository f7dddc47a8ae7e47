"""Dependencies shared by the routes: the app state, a DB session, the caller's token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, authenticate
from collector.metrics import Metrics
from collector.models import ApiToken
from collector.reading.answers import KeptUnanswered

if TYPE_CHECKING:  # the edge reads ingest's health; it never writes through it
    from collector.intake.ingest import Ingest


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker[Session]
    metrics: Metrics
    ingest: Ingest | None = None
    forwarder: Any = None  # collector.outbound.forward.Forwarder when forwarding runs here
    webhooks: Any = None  # collector.outbound.webhooks.WebhookSender when webhooks are sent here
    alerts: Any = None  # collector.outbound.alert_engine.AlertEngine when alerts run here
    store: Any = None  # collector.intake.store.Store: what the online channel writes through
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    business_clock: Callable[[], datetime] | None = None
    """What "today" is for scores and the dashboard (the demo's simulated days); by
    default ``clock``."""

    unanswered: KeptUnanswered = field(init=False)
    """The ministry's list of unanswered low figures, kept a short while."""

    def __post_init__(self) -> None:
        self.unanswered = KeptUnanswered(lambda: self.clock())

    def today_now(self) -> datetime:
        return (self.business_clock or self.clock)()


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.gnahat
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False)
LAST_USED_EVERY = timedelta(minutes=1)


def current_token(
    session: SessionDep,
    state: StateDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "bearer token required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = authenticate(session, creds.credentials)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    now = state.clock()
    # "Last used" to the minute: one write a minute per token, not one per request.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        token.last_used_at = now
        session.commit()
    return token


CurrentToken = Annotated[ApiToken, Depends(current_token)]


def require(*roles: Role) -> Callable[[ApiToken], ApiToken]:
    allowed = {r.value for r in roles} | {Role.ADMIN.value}

    def check(token: CurrentToken) -> ApiToken:
        if token.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {token.role!r} may not do this (needs {', '.join(sorted(allowed))})",
            )
        return token

    return check

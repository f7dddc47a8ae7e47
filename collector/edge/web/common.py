"""What every dashboard page shares: templates, the language, CSRF tokens, the
logged-in user and the centres they may see."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from collector.edge import websessions
from collector.edge.auth import Role, scoped_centres
from collector.edge.web.public_texts import LANG_NAMES
from collector.edge.web.texts import TEXT
from collector.models import (
    User,
)
from collector.reading.names import names

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))


LANGS = ("hy", "en", "ru")
MAX_NOTE = 500


def _lang(request: Request, asked: str | None) -> str:
    if asked in LANGS:
        request.session["lang"] = asked
    lang = request.session.get("lang", "hy")
    return lang if lang in LANGS else "hy"


def _csrf(request: Request) -> str:
    """The form token: the server-side session's once logged in; before that, a token in
    the (signed) cookie that the login form must echo."""
    live = getattr(request.state, "web_session", None)
    if live is not None:
        return str(live.csrf)
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def _csrf_ok(request: Request, presented: str) -> bool:
    live = getattr(request.state, "web_session", None)
    expected = live.csrf if live is not None else request.session.get("csrf")
    return bool(expected) and secrets.compare_digest(str(expected), presented)


def _page(
    request: Request, name: str, lang: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "t": TEXT[lang],
            "lang": lang,
            "lang_names": LANG_NAMES,
            "csrf": _csrf(request),
            **context,
        },
        status_code=status_code,
    )


def _current_user(request: Request, session: Any, state: Any) -> User | None:
    """The user of this request's live server-side session, or None (then the cookie's
    stale id is dropped)."""
    token = request.session.get("sid")
    if not token:
        return None
    now = state.clock()
    live = websessions.lookup(session, str(token), now=now, idle_s=state.settings.session_idle_s)
    user: User | None = session.get(User, live.user_id) if live is not None else None
    if live is not None and (user is None or user.disabled_at is not None):
        websessions.end(session, live, why="user disabled", now=now)
        user = None
    session.commit()
    if user is None:
        request.session.pop("sid", None)
        return None
    request.state.web_session = live
    return user


def _visible_centres(session: Any, user: User) -> list[Any]:
    """The centres this user may see (plain rows, by code)."""
    allowed = scoped_centres(user.role, user.centres)
    every = names(session).centres
    return [c for c in every if allowed is None or c.code in allowed]


def _may_manage(user: User, centre: str | None) -> bool:
    """May ``user`` act for ``centre`` (add a note, answer visitors, acknowledge an
    alert): a manager of that centre, or an admin."""
    if centre is None or user.role not in (Role.ADMIN.value, Role.MANAGER.value):
        return False
    allowed = scoped_centres(user.role, user.centres)
    return allowed is None or centre in allowed


#: The paths of pages for people (the API and its docs answer in JSON).
PEOPLE_PATHS = ("/login", "/logout", "/dashboard", "/ministry")


def refused_input(request: Request) -> HTMLResponse:
    """A people's page whose input was refused before our code saw it (a date that is no
    date, an overlong field): a page saying so, with a way back, never JSON."""
    lang = _lang(request, None)
    return _page(request, "message.html", lang, 422, message=TEXT[lang]["bad_input"])

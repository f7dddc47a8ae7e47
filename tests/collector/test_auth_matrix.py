"""Every route × every identity has an expected status, generated from the app's route
table: a new route without an entry here fails this test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, create_token, revoke_token
from collector.edge.online import desk_token
from collector.edge.users import create_user
from collector.intake.store import Store
from collector.main import create_app
from tests.collector.helpers import DEV, T0, event, msg

PASSWORD = "correct horse battery"
A, B = "SH-GYUMRI1", "ER-AVAN"  # DEV's centre, and another
DESK_TOKEN = desk_token(Settings(database_url="sqlite://").secret_key, DEV)
TOKENS = ["t_admin", "t_analyst", "t_technician", "t_manager_a", "t_manager_b"]
SESSIONS = ["s_admin", "s_analyst", "s_manager_a", "s_manager_b"]
IDENTITIES = ["anonymous", "t_revoked", *TOKENS, *SESSIONS]


def routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route, through included routers and mounts."""

    def walk(items: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
        for r in items:
            if hasattr(r, "path"):
                for m in sorted(getattr(r, "methods", None) or {"MOUNT"}):
                    if m != "HEAD":
                        yield m, prefix + r.path
            else:
                yield from walk(r.original_router.routes, prefix + r.include_context.prefix)

    return set(walk(app.routes))


def expect(default: int, **overrides: int) -> dict[str, int]:
    out = dict.fromkeys(IDENTITIES, default)
    out.update(overrides)
    return out


PUBLIC = expect(200)
API_401 = {"anonymous": 401, "t_revoked": 401, **dict.fromkeys(SESSIONS, 401)}


def api(allowed: set[str]) -> dict[str, int]:
    return {**API_401, **{t: 200 if t in allowed else 403 for t in TOKENS}}


WEB_IN = {**dict.fromkeys(["anonymous", "t_revoked", *TOKENS], 303), **dict.fromkeys(SESSIONS, 200)}

#: (method, route path) -> (the request made, expected status per identity)
MATRIX: dict[tuple[str, str], tuple[str, dict[str, int]]] = {
    ("GET", "/openapi.json"): ("/openapi.json", PUBLIC),
    ("GET", "/docs"): ("/docs", PUBLIC),
    ("MOUNT", "/docs/assets"): ("/docs/assets/swagger-ui.css", PUBLIC),
    ("MOUNT", "/static"): ("/static/gnahat.css", PUBLIC),
    ("GET", "/healthz"): ("/healthz", PUBLIC),
    ("GET", "/metrics"): ("/metrics", api({"t_admin", "t_technician"})),
    ("GET", "/api/v1/feeds/events"): ("/api/v1/feeds/events", api({"t_admin", "t_analyst"})),
    ("GET", "/api/v1/feeds/aggregates"): (
        "/api/v1/feeds/aggregates",
        api({"t_admin", "t_analyst"}),
    ),
    ("GET", "/api/v1/devices"): ("/api/v1/devices", api({"t_admin", "t_technician"})),
    ("GET", "/api/v1/devices/{device}/gaps"): (
        "/api/v1/devices/am-sh-gyumri1-d01/gaps",
        api({"t_admin", "t_technician"}),
    ),
    ("GET", "/api/v1/quarantine"): ("/api/v1/quarantine", api({"t_admin", "t_technician"})),
    ("GET", "/api/v1/scores/centres"): (
        "/api/v1/scores/centres",
        api({"t_admin", "t_analyst", "t_manager_a", "t_manager_b"}),
    ),
    ("GET", "/api/v1/scores/centres/{code}/employees"): (
        f"/api/v1/scores/centres/{A}/employees",
        api({"t_admin", "t_manager_a"}),
    ),
    ("GET", "/api/v1/rankings/centres"): (
        "/api/v1/rankings/centres",
        api({"t_admin", "t_analyst", "t_manager_a", "t_manager_b"}),
    ),
    ("GET", "/api/v1/open/centres"): ("/api/v1/open/centres", PUBLIC),
    ("GET", "/api/v1/open/centres.csv"): ("/api/v1/open/centres.csv", PUBLIC),
    ("GET", "/api/v1/open/datapackage.json"): ("/api/v1/open/datapackage.json", PUBLIC),
    ("GET", "/api/v1/open/answers"): ("/api/v1/open/answers", PUBLIC),
    # Each centre's public page ("you said, we did"): no login.
    ("GET", "/centres"): ("/centres", PUBLIC),
    ("GET", "/centres/{code}"): (f"/centres/{A}", PUBLIC),
    ("GET", "/"): ("/", expect(303)),
    ("GET", "/api/v1/alerts"): (
        "/api/v1/alerts",
        api({"t_admin", "t_analyst", "t_technician", "t_manager_a", "t_manager_b"}),
    ),
    # A form post, not JSON: refused as such (422) once the caller may acknowledge.
    ("POST", "/api/v1/alerts/{alert_id}/ack"): (
        "/api/v1/alerts/1/ack",
        {
            **api({"t_admin", "t_manager_a", "t_manager_b"}),
            **dict.fromkeys(["t_admin", "t_manager_a", "t_manager_b"], 422),
        },
    ),
    # The visitors' phone page: public, by a desk's signed token; a post without a
    # visit token from that page is refused for everyone.
    ("GET", "/r/{token}"): (f"/r/{DESK_TOKEN}", PUBLIC),
    ("POST", "/r/{token}"): (f"/r/{DESK_TOKEN}", expect(403)),
    ("POST", "/api/v1/online/desks/{device}/arm"): (
        f"/api/v1/online/desks/{DEV}/arm",
        api({"t_admin", "t_technician", "t_manager_a"}),
    ),
    ("GET", "/login"): ("/login", PUBLIC),
    ("POST", "/login"): ("/login", expect(401)),  # wrong password, right CSRF token
    ("POST", "/logout"): ("/logout", expect(303)),
    ("GET", "/dashboard"): ("/dashboard", WEB_IN),
    ("GET", "/ministry"): ("/ministry", {**WEB_IN, "s_manager_a": 403, "s_manager_b": 403}),
    ("POST", "/dashboard/notes"): (
        "/dashboard/notes",
        {**WEB_IN, "s_admin": 303, "s_manager_a": 303, "s_analyst": 403, "s_manager_b": 403},
    ),
    ("POST", "/dashboard/answers"): (
        "/dashboard/answers",
        {**WEB_IN, "s_admin": 303, "s_manager_a": 303, "s_analyst": 403, "s_manager_b": 403},
    ),
    # No such alert: refused before anything is looked at, 403 for every session.
    ("POST", "/dashboard/alerts/{alert_id}/ack"): (
        "/dashboard/alerts/999/ack",
        {**WEB_IN, **dict.fromkeys(SESSIONS, 403)},
    ),
}
#: More than one request for a route where scope matters.
VARIANTS: list[tuple[str, str, dict[str, int]]] = [
    ("GET", f"/dashboard?centre={A}", {**WEB_IN, "s_manager_b": 403}),
    ("GET", f"/dashboard?centre={B}", {**WEB_IN, "s_manager_a": 403}),
    ("GET", f"/api/v1/scores/centres/{B}/employees", api({"t_admin", "t_manager_b"})),
]


@pytest.fixture
def world(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> Iterator[tuple[Any, dict[str, TestClient], dict[str, dict[str, str]]]]:
    store.process([msg(event(i)) for i in range(1, 4)])
    headers: dict[str, dict[str, str]] = {}
    with sessions() as s, s.begin():
        for name, role, centres in (
            ("t_admin", Role.ADMIN, None),
            ("t_analyst", Role.ANALYST, None),
            ("t_technician", Role.TECHNICIAN, None),
            ("t_manager_a", Role.MANAGER, [A]),
            ("t_manager_b", Role.MANAGER, [B]),
            ("t_revoked", Role.ANALYST, None),
        ):
            row, plain = create_token(s, name=name, role=role, centres=centres)
            headers[name] = {"Authorization": f"Bearer {plain}"}
            if name == "t_revoked":
                s.flush()
                revoke_token(s, row.id)
        for name, role, centres in (
            ("s_admin", Role.ADMIN, None),
            ("s_analyst", Role.ANALYST, None),
            ("s_manager_a", Role.MANAGER, [A]),
            ("s_manager_b", Role.MANAGER, [B]),
        ):
            create_user(s, name, PASSWORD, role=role, centres=centres, now=T0)
    # Every armer opens a window at the same desk in turn: no spacing between windows here.
    app = create_app(Settings(database_url=database_url, feed_settle_s=0, online_arm_interval_s=0))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    clients: dict[str, TestClient] = {}
    for i, ident in enumerate(IDENTITIES):
        # Each identity from its own address (the login throttle counts per address).
        c = TestClient(app, follow_redirects=False, client=(f"192.0.2.{i + 10}", 40000))
        c.__enter__()
        c.headers.update(headers.get(ident, {}))
        if ident in SESSIONS:
            token = csrf(c.get("/login").text)
            r = c.post("/login", data={"username": ident, "password": PASSWORD, "csrf": token})
            assert r.status_code == 303, (ident, r.text)
        clients[ident] = c
    yield app, clients, headers
    for c in clients.values():
        c.__exit__(None, None, None)


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def call(c: TestClient, method: str, url: str) -> int:
    if method in ("GET", "MOUNT"):
        return c.get(url).status_code
    # Each form with the token of the page that carries it: the login form's own, the
    # dashboard's (the session's) for the rest when logged in.
    page = c.get("/login" if url == "/login" else "/dashboard")
    token = csrf(page.text if page.status_code == 200 else c.get("/login").text)
    data = {"csrf": token}
    if url == "/login":
        data.update(username="s_admin", password="wrong password here")
    if url == "/dashboard/notes":
        data.update(centre=A, day="2026-11-24", text="matrix")
    if url == "/dashboard/answers":
        data.update(centre=A, month="2026-11", text="matrix")
    if url.startswith("/dashboard/alerts/"):
        data.update(comment="matrix")
    return c.post(url, data=data).status_code


def test_every_route_has_an_expected_status_for_every_identity(world: Any) -> None:
    app, clients, _ = world
    assert routes(app) == set(MATRIX), "a route without an entry in MATRIX (or a stale one)"
    seen: dict[tuple[str, str, str], tuple[int, int]] = {}
    cases = [(m, url, exp) for (m, _p), (url, exp) in MATRIX.items()] + VARIANTS
    for method, url, expected in cases:
        assert set(expected) == set(IDENTITIES), url
        for ident in IDENTITIES:
            if method == "POST" and url == "/logout":
                continue  # last: it ends the sessions the other rows use
            got = call(clients[ident], method, url)
            if got != expected[ident]:
                seen[(method, url, ident)] = (expected[ident], got)
    for ident in IDENTITIES:
        got = call(clients[ident], "POST", "/logout")
        if got != MATRIX[("POST", "/logout")][1][ident]:
            seen[("POST", "/logout", ident)] = (303, got)
    assert not seen, "\n".join(f"{k}: expected {e}, got {g}" for k, (e, g) in seen.items())

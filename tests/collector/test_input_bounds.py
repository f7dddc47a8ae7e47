"""Input at the edge: every refusal a 422 in one shape, never a 500 (real databases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, create_token
from collector.main import create_app
from tests.collector.helpers import T0


@pytest.fixture
def client(database_url: str, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, feed_settle_s=0))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(
    sessions: sessionmaker[Session], role: Role, centres: list[str] | None = None
) -> dict[str, str]:
    with sessions() as s, s.begin():
        token = create_token(s, name="t", role=role, centres=centres)[1]
    return {"Authorization": f"Bearer {token}"}


def assert_422(r: object, field: str) -> None:
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, list) and detail, detail
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
    assert any(field in d["loc"] for d in detail), detail


ROUTES: list[tuple[str, Role | None]] = [
    ("/api/v1/open/centres", None),
    ("/api/v1/scores/centres", Role.ANALYST),
    ("/api/v1/rankings/centres", Role.ANALYST),
    ("/api/v1/scores/centres/SH-GYUMRI1/employees", Role.MANAGER),
]
QUERIES: list[dict[str, str]] = [
    {"end": "0001-01-01"},  # once a 500: the default start fell below date.min
    {"end": "9999-12-31"},
    {"end": "0"},  # once read as 1970-01-01
    {"start": "2026-11-24", "end": "2026-11-01"},
    {"start": "2020-01-01", "end": "2026-11-01"},
    {"end": "2026-02-30"},
]


@pytest.mark.parametrize(
    ("path", "role", "query"),
    [
        (path, role, query)
        for path, role in ROUTES
        for query in QUERIES
        if not ("start" in query and "rankings" in path)  # rankings take no start
    ],
)
def test_periods_out_of_bounds_are_a_422_in_one_shape(
    client: TestClient,
    sessions: sessionmaker[Session],
    path: str,
    role: Role | None,
    query: dict[str, str],
) -> None:
    headers = (
        bearer(sessions, role, ["SH-GYUMRI1"] if role is Role.MANAGER else None) if role else {}
    )
    r = client.get(path, params=query, headers=headers)
    assert_422(r, "start" if "start" in query else "end")


def test_a_cursor_beyond_64_bits_is_a_422(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    headers = bearer(sessions, Role.ANALYST)
    r = client.get("/api/v1/feeds/events", params={"after": str(2**63)}, headers=headers)
    assert_422(r, "after")
    ok = client.get("/api/v1/feeds/events", params={"after": str(2**63 - 1)}, headers=headers)
    assert ok.status_code == 200 and ok.text == ""


def test_the_dashboard_page_refuses_bad_days_without_a_500(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    import re

    from collector.edge.users import create_user

    with sessions() as s, s.begin():
        create_user(
            s, "anna", "correct horse battery", role=Role.MANAGER, centres=["SH-GYUMRI1"], now=T0
        )
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    client.post(
        "/login",
        data={"username": "anna", "password": "correct horse battery", "csrf": csrf.group(1)},
    )
    for end in ("0001-01-01", "9999-12-31", "0"):
        assert client.get("/dashboard", params={"end": end}).status_code == 422
    page = client.get("/dashboard").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    for day, code in (("9999-12-31", 422), ("2027-01-01", 422), ("0", 422)):
        r = client.post(
            "/dashboard/notes",
            data={"centre": "SH-GYUMRI1", "day": day, "text": "x", "csrf": token.group(1)},
        )
        assert r.status_code == code, (day, r.status_code)

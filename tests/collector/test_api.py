"""HTTP API on a real database: tokens, roles, the feed, health, metrics, technicians' views."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, create_token, revoke_token
from collector.intake.store import Store
from collector.main import create_app
from collector.models import AuditLog
from tests.collector.helpers import DEV, T0, event, msg

OTHER = "am-sh-gyumri1-d02"


@pytest.fixture
def client(database_url: str, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, feed_settle_s=0))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with TestClient(app) as c:
        yield c


def token(sessions: sessionmaker[Session], role: Role) -> str:
    with sessions() as s, s.begin():
        return create_token(s, name="t", role=role)[1]


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_healthz_and_metrics(client: TestClient, sessions: sessionmaker[Session]) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["database"] == "ok"
    assert client.get("/metrics").status_code == 401  # not for anyone who reaches serve
    analyst = client.get("/metrics", headers=auth(token(sessions, Role.ANALYST)))
    assert analyst.status_code == 403
    m = client.get("/metrics", headers=auth(token(sessions, Role.TECHNICIAN)))
    assert m.status_code == 200
    assert "gnahat_events_received_total" in m.text and "gnahat_devices_online 0.0" in m.text


def test_feed_pages_with_cursor_in_ndjson_and_csv(
    client: TestClient, store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(i)) for i in range(1, 6)])
    tok = token(sessions, Role.ANALYST)
    r = client.get("/api/v1/feeds/events", params={"limit": 3}, headers=auth(tok))
    assert r.status_code == 200
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3]
    assert lines[0]["centre"] == "SH-GYUMRI1" and lines[0]["employee"] is None
    cursor = r.headers["X-Next-Cursor"]
    r2 = client.get(
        "/api/v1/feeds/events", params={"after": cursor, "format": "csv"}, headers=auth(tok)
    )
    rows = list(csv.DictReader(io.StringIO(r2.text)))
    assert [int(x["seq"]) for x in rows] == [4, 5] and rows[0]["device"] == DEV
    r3 = client.get(
        "/api/v1/feeds/events", params={"after": r2.headers["X-Next-Cursor"]}, headers=auth(tok)
    )
    assert r3.text == "" and r3.headers["X-Next-Cursor"] == r2.headers["X-Next-Cursor"]
    with sessions() as s:
        assert len(s.scalars(select(AuditLog).where(AuditLog.action == "feed.events")).all()) == 3


def test_feed_holds_back_fresh_events(
    database_url: str, store: Store, sessions: sessionmaker[Session]
) -> None:
    app = create_app(Settings(database_url=database_url, feed_settle_s=5))
    app.state.gnahat.clock = lambda: T0 + timedelta(hours=1, seconds=3)  # 3 s after receipt
    store.process([msg(event(1))])
    with TestClient(app) as c:
        r = c.get("/api/v1/feeds/events", headers=auth(token(sessions, Role.ANALYST)))
        assert r.text == ""


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic abc"}, 401)],
)
def test_feed_refuses_missing_or_bad_tokens(
    client: TestClient, headers: dict[str, str], code: int
) -> None:
    assert client.get("/api/v1/feeds/events", headers=headers).status_code == code


def test_roles_and_revocation(client: TestClient, sessions: sessionmaker[Session]) -> None:
    tech = token(sessions, Role.TECHNICIAN)
    assert client.get("/api/v1/feeds/events", headers=auth(tech)).status_code == 403
    assert client.get("/api/v1/devices", headers=auth(tech)).status_code == 200
    analyst = token(sessions, Role.ANALYST)
    assert client.get("/api/v1/devices", headers=auth(analyst)).status_code == 403
    with sessions() as s, s.begin():
        from collector.edge.auth import authenticate

        row = authenticate(s, analyst)
        assert row is not None
        assert revoke_token(s, row.id)
    assert client.get("/api/v1/feeds/events", headers=auth(analyst)).status_code == 401


def test_gaps_and_devices_for_technicians(
    client: TestClient, store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(i)) for i in (2, 3, 5, 9)])
    tech = auth(token(sessions, Role.TECHNICIAN))
    gaps = client.get(f"/api/v1/devices/{DEV}/gaps", headers=tech).json()
    assert gaps["streams"] == {"s1": [[1, 1], [4, 4], [6, 8]]}
    devs = {d["device"]: d for d in client.get("/api/v1/devices", headers=tech).json()}
    assert devs[DEV]["streams"] == [{"stream": "s1", "max_seq": 9, "stored": 4, "missing": 5}]
    assert client.get("/api/v1/devices/am-no-such/gaps", headers=tech).status_code == 404


def test_quarantine_listing(
    client: TestClient, store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(b"garbage")])
    tech = auth(token(sessions, Role.TECHNICIAN))
    items = client.get("/api/v1/quarantine", headers=tech).json()
    assert [(i["reason"], i["raw"]) for i in items] == [("not_json", "garbage")]


def test_feed_never_skips_an_event_a_second_worker_commits_late(
    database_url: str, client: TestClient, sessions: sessionmaker[Session]
) -> None:
    """Two ingest workers, two units: the one that drew lower ids commits after the other.

    Worker A holds an uncommitted batch (a staff login: no rating, so no aggregate
    work); worker B commits a rating batch meanwhile. Paging the feed in between must
    not move the cursor past A's events.
    """
    import threading

    from device import protocol as p
    from tests.collector.helpers import replace

    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time by construction")
    tok = token(sessions, Role.ANALYST)
    a, b = Store(sessions), Store(sessions)
    login = replace(
        event(1, stream="sa"), type=p.EventType.STAFF_LOGIN, staff="B-1", score=None, scale=None
    )
    held = sessions()
    tx = held.begin()
    a._process(held, [msg(login)])  # A drew its ids; not committed yet
    worker_b = threading.Thread(
        target=b.process, args=([msg(event(i, device=OTHER), device=OTHER) for i in (1, 2)],)
    )
    worker_b.start()
    worker_b.join(2.0)
    seen: list[int] = []
    cursor = "0"
    r = client.get("/api/v1/feeds/events", params={"after": cursor}, headers=auth(tok))
    seen += [json.loads(x)["id"] for x in r.text.splitlines()]
    cursor = r.headers["X-Next-Cursor"]
    tx.commit()
    held.close()
    worker_b.join(30)
    assert not worker_b.is_alive()
    r = client.get("/api/v1/feeds/events", params={"after": cursor}, headers=auth(tok))
    seen += [json.loads(x)["id"] for x in r.text.splitlines()]
    with sessions() as s:
        from collector.models import Event

        all_ids = sorted(s.scalars(select(Event.id)))
    assert len(all_ids) == 3
    assert sorted(seen) == all_ids  # every event served, none skipped


def test_feed_times_are_iso_8601_in_both_formats(
    client: TestClient, store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(1))])
    tok = token(sessions, Role.ANALYST)
    line = json.loads(client.get("/api/v1/feeds/events", headers=auth(tok)).text)
    assert line["pressed_at"] == (T0 + timedelta(minutes=1)).isoformat()
    assert line["day"] == "2026-11-24" and line["received_at"].endswith("+00:00")
    csv_text = client.get("/api/v1/feeds/events", params={"format": "csv"}, headers=auth(tok)).text
    row = next(csv.DictReader(io.StringIO(csv_text)))
    assert row["pressed_at"] == line["pressed_at"] and row["day"] == line["day"]


def test_a_token_s_last_use_is_written_once_a_minute_not_per_request(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    from collector.models import ApiToken

    tok = token(sessions, Role.ANALYST)
    clock = client.app.state.gnahat  # type: ignore[attr-defined]
    start = T0 + timedelta(days=1)
    clock.clock = lambda: start
    for _ in range(3):
        assert client.get("/api/v1/scores/centres", headers=auth(tok)).status_code == 200
    with sessions() as s:
        assert s.scalars(select(ApiToken.last_used_at)).one() == start
    clock.clock = lambda: start + timedelta(seconds=30)
    client.get("/api/v1/scores/centres", headers=auth(tok))
    with sessions() as s:
        assert s.scalars(select(ApiToken.last_used_at)).one() == start  # not yet
    clock.clock = lambda: start + timedelta(seconds=61)
    client.get("/api/v1/scores/centres", headers=auth(tok))
    with sessions() as s:
        assert s.scalars(select(ApiToken.last_used_at)).one() == start + timedelta(seconds=61)

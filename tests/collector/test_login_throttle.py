"""Login throttling and client addresses: spraying is slowed and audited, nobody is
locked out by a stranger, and forwarded headers count only from trusted proxies."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.clientaddr import client_address
from collector.config import Settings
from collector.edge.auth import Role
from collector.edge.users import create_user
from collector.main import create_app
from collector.models import AuditLog
from tests.collector.helpers import T0

PASSWORD = "correct horse battery"
NOW = [T0]


@pytest.fixture
def make_client(
    database_url: str, sessions: sessionmaker[Session]
) -> Iterator[Callable[..., TestClient]]:
    with sessions() as s, s.begin():
        create_user(s, "anna", PASSWORD, role=Role.MANAGER, centres=["SH-GYUMRI1"], now=T0)
    NOW[0] = T0
    made: list[TestClient] = []

    def make(peer: str = "198.51.100.7", trusted: str = "") -> TestClient:
        app = create_app(Settings(database_url=database_url, trusted_proxies=trusted))
        app.state.gnahat.clock = lambda: NOW[0]
        c = TestClient(app, client=(peer, 40000))
        c.__enter__()
        made.append(c)
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def log_in(c: TestClient, username: str, password: str, **headers: str) -> int:
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert csrf
    r = c.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf.group(1)},
        headers=headers,
        follow_redirects=False,
    )
    return r.status_code


def actions(sessions: sessionmaker[Session], action: str) -> list[AuditLog]:
    with sessions() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_spraying_many_usernames_from_one_address_is_slowed_and_audited(
    make_client: Callable[..., TestClient], sessions: sessionmaker[Session]
) -> None:
    sprayer = make_client(peer="203.0.113.9")
    codes = [log_in(sprayer, f"user{i:03d}", "Summer2026!Summer") for i in range(100)]
    assert codes[:10] == [401] * 10  # the free allowance of an address
    assert codes.count(429) >= 85  # then every try must wait, longer and longer
    assert len(actions(sessions, "login.failed")) == codes.count(401)
    throttled = actions(sessions, "login.throttled")
    assert throttled and all(a.detail["by"] == "address" for a in throttled)
    # Waiting does not reset the count: the waits grow (1, 2, 4, ... s).
    NOW[0] += timedelta(seconds=1)
    assert log_in(sprayer, "user500", "x" * 12) == 401
    assert log_in(sprayer, "user501", "x" * 12) == 429
    # Someone else, elsewhere, is not affected.
    assert log_in(make_client(peer="198.51.100.20"), "anna", PASSWORD) == 303


def test_a_named_manager_cannot_be_locked_out_by_someone_elses_requests(
    make_client: Callable[..., TestClient],
) -> None:
    stranger = make_client(peer="203.0.113.50")
    for _ in range(5):
        stranger_code = log_in(stranger, "anna", "not her password")
    assert stranger_code == 429  # the stranger's own pair is slowed down
    anna = make_client(peer="198.51.100.7")
    assert log_in(anna, "anna", PASSWORD) == 303  # she is not


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    make_client: Callable[..., TestClient], sessions: sessionmaker[Session]
) -> None:
    # Not behind a trusted proxy: rotating X-Forwarded-For buys nothing.
    direct = make_client(peer="203.0.113.9")
    codes = [
        log_in(direct, "anna", "wrong wrong wrong", **{"X-Forwarded-For": f"10.9.8.{i}"})
        for i in range(6)
    ]
    assert codes[:3] == [401] * 3 and 429 in codes
    with sessions() as s:
        addresses = set(s.scalars(select(AuditLog.actor).where(AuditLog.action == "login.failed")))
    assert addresses == {"address:203.0.113.9"}
    # Behind our proxy (127.0.0.1): the client it names is the address that counts.
    proxied = make_client(peer="127.0.0.1", trusted="127.0.0.1")
    assert log_in(proxied, "anna", PASSWORD, **{"X-Forwarded-For": "192.0.2.44"}) == 303
    with sessions() as s:
        login = s.scalars(select(AuditLog).where(AuditLog.action == "login")).one()
    assert login.detail["address"] == "192.0.2.44"


def test_client_address_reads_forwarded_hops_from_the_right() -> None:
    trusted = "127.0.0.1, 10.0.0.0/8"
    assert client_address("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"  # untrusted peer
    assert client_address("127.0.0.1", "1.2.3.4", trusted) == "1.2.3.4"
    # The client wrote the left part itself: the right-most untrusted hop counts.
    assert client_address("127.0.0.1", "6.6.6.6, 192.0.2.1, 10.1.2.3", trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", "not-an-ip", trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", "1.2.3.4", "") == "127.0.0.1"  # default: trust none
    with pytest.raises(ValueError, match="GNAHAT_TRUSTED_PROXIES"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.example")

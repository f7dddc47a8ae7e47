"""Every line of the phone channel's threat model (docs/threat-model.md), replayed as an
attack against a live collector (uvicorn on a loopback port, both databases, behind a
trusted proxy that names each phone's address): the score stays unchanged, or the
ratings are flagged and left out, and genuine visitors are unaffected."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge import online
from collector.edge.auth import Role, create_token
from collector.intake.store import Received, Store
from collector.main import create_app
from collector.models import (
    Alert,
    AuditLog,
    Centre,
    DailyAggregate,
    DeviceState,
    Employee,
    Event,
    Flag,
    Quarantine,
)
from collector.outbound.alert_engine import AlertEngine
from collector.reading import fleet, scores
from device import protocol as p
from tests.collector.helpers import DEV, T0, event, msg, replace, served

SECRET = "attack-test-secret-0123456789abcdef"
NOON = T0 + timedelta(hours=2)  # Tuesday 12:00 in Yerevan: the centre is open
SUNDAY_NIGHT = datetime.fromisoformat("2026-11-29T21:00:00+04:00")
COMMON_HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff"}


@dataclass
class Live:
    base: str
    now: list[datetime]
    sessions: sessionmaker[Session]
    app: Any
    phones: list[httpx.Client] = field(default_factory=list)

    def phone(self, address: str = "198.51.100.7") -> Phone:
        """A phone (its own cookie jar) whose requests reach us from ``address``."""
        client = httpx.Client(base_url=self.base, headers={"X-Forwarded-For": address}, timeout=10)
        self.phones.append(client)
        return Phone(self, client)

    def code(self, device: str = DEV) -> str:
        """The code the desk's screen shows now."""
        return online.desk_code(SECRET, device, self.now[0])

    def ratings(self, channel: str = "online") -> list[Event]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(Event)
                    .where(Event.type == "rating", Event.channel == channel)
                    .order_by(Event.id)
                )
            )

    def counted(self) -> int:
        """Ratings in the scores (the daily cells' n)."""
        with self.sessions() as s:
            return int(s.scalar(select(func.sum(DailyAggregate.n))) or 0)


@dataclass
class Phone:
    live: Live
    client: httpx.Client

    def path(self, device: str = DEV) -> str:
        return f"/r/{online.desk_token(SECRET, device)}"

    def page(self, code: str | None = None, device: str = DEV) -> tuple[int, str | None, str]:
        params = {"lang": "en", **({"c": code} if code else {})}
        r = self.client.get(self.path(device), params=params)
        visit = re.search(r'name="visit" value="([^"]+)"', r.text)
        return r.status_code, visit.group(1) if visit else None, r.text

    def rate(
        self, score: int = 4, code: str | None = None, typed: str = "", **answers: str
    ) -> tuple[int, str]:
        """Open the page (with ``code`` as the screen's QR gives it) and send the form
        (``typed``: a code typed into the form instead)."""
        status, visit, text = self.page(code)
        if visit is None:
            return status, text
        form = {"visit": visit, "score": str(score), "lang": "en", "code": typed, **answers}
        r = self.client.post(self.path(), data=form)
        return r.status_code, r.text

    def forget(self) -> None:
        """Clear the cookie, as an attacker resetting the per-browser count would."""
        self.client.cookies.clear()


def make_live(database_url: str, sessions: sessionmaker[Session], **settings: Any) -> Live:
    app = create_app(
        Settings(
            database_url=database_url,
            secret_key=SECRET,
            trusted_proxies="127.0.0.1",
            alerts_enabled=False,
            **settings,
        )
    )
    now = [NOON]
    app.state.gnahat.clock = lambda: now[0]
    return Live("", now, sessions, app)


@pytest.fixture
def live_factory(database_url: str, sessions: sessionmaker[Session]) -> Iterator[Any]:
    made: list[tuple[Live, Any]] = []

    def make(**settings: Any) -> Live:
        live = make_live(database_url, sessions, **settings)
        cm = served(live.app)
        live.base = cm.__enter__()
        made.append((live, cm))
        return live

    yield make
    for live, cm in made:
        for c in live.phones:
            c.close()
        cm.__exit__(None, None, None)


def test_a_photographed_card_outside_opening_hours_and_inside_them_moves_no_score(
    live_factory: Any,
) -> None:
    """The reported attack: a photo of one desk's card, a laptop, Sunday 21:00, the
    cookie cleared before each of 80 ratings, 25 addresses of one IPv6 /64."""
    live = live_factory()
    attacker = live.phone()
    live.now[0] = SUNDAY_NIGHT
    status, text = attacker.rate(score=4)
    assert status == 409 and "closed now" in text
    live.now[0] = NOON  # in opening hours: the card alone is no visit
    for i in range(80):
        attacker.forget()
        attacker.client.headers["X-Forwarded-For"] = f"2001:db8:5:7::{i % 25 + 1:x}"
        live.now[0] += timedelta(seconds=3)
        status, text = attacker.rate(score=4 if i % 2 else 1)
        assert status == 409 and "counts with a visit code" in text, (i, status)
    assert live.ratings() == [] and live.counted() == 0
    # A genuine visitor, served at the desk, scans the code its screen shows.
    visitor = live.phone("203.0.113.20")
    assert visitor.rate(score=3, code=live.code())[0] == 200
    assert live.counted() == 1


def test_in_open_mode_the_card_alone_is_kept_flagged_and_never_in_a_score(
    live_factory: Any,
) -> None:
    live = live_factory(online_proof="open")
    attacker = live.phone()
    live.now[0] = SUNDAY_NIGHT
    assert attacker.rate(score=4)[0] == 409  # outside opening hours, even so
    live.now[0] = NOON
    statuses = []
    for i in range(30):
        attacker.forget()
        attacker.client.headers["X-Forwarded-For"] = f"2001:db8:5:7::{i % 25 + 1:x}"
        live.now[0] += timedelta(seconds=3)
        statuses.append(attacker.rate(score=1)[0])
    assert statuses == [200] * 30  # kept (the visitor's voice), never refused
    ratings = live.ratings()
    assert len(ratings) == 30
    assert all(r.flags & Flag.ONLINE_UNVERIFIED for r in ratings)
    # The /64 is one address: past the hourly limit the rest are suspect as well.
    assert sum(bool(r.flags & Flag.ONLINE_SUSPECT) for r in ratings) == 10
    assert live.counted() == 0
    genuine = live.phone("203.0.113.21")
    assert genuine.rate(score=4, code=live.code())[0] == 200
    assert live.counted() == 1


def test_guessing_codes_is_cut_off_for_that_address_only(live_factory: Any) -> None:
    live = live_factory()
    guesser = live.phone("2001:db8:9:1::1")
    right = live.code()
    wrong = (f"{n:06d}" for n in itertools.count(123456) if f"{n:06d}" != right)
    for i in range(10):
        guesser.client.headers["X-Forwarded-For"] = f"2001:db8:9:1::{i + 1:x}"
        status, _visit, text = guesser.page(next(wrong))
        assert status == 403 and "does not match" in text
    status, _visit, text = guesser.page(right)  # even the right code, from that /64: no more
    assert status == 429 and "Too many wrong codes" in text
    visitor = live.phone("203.0.113.22")  # everyone else is unaffected
    assert visitor.rate(score=4, code=right)[0] == 200


def test_a_phone_flood_leaves_the_desks_real_presses_counted(live_factory: Any) -> None:
    live = live_factory(online_proof="open")
    at = NOON + timedelta(minutes=5)
    presses = [event(i, score=4, at=at - timedelta(minutes=i) + timedelta(seconds=4 * i))
               for i in (1, 2, 3)]  # fmt: skip
    Store(live.sessions).process([msg(presses)])  # three real presses within 12 s
    live.now[0] = at
    flooder = live.phone()
    for _ in range(9):
        flooder.forget()
        live.now[0] += timedelta(seconds=1)
        assert flooder.rate(score=1)[0] == 200
    counter = live.ratings("counter")
    assert [r.flags & Flag.BURST for r in counter] == [0, 0, 0]
    assert live.counted() == 3  # the desk's three presses, nothing of the flood
    assert all(r.flags & Flag.BURST for r in live.ratings())  # the flood is a burst itself


def test_a_phone_rating_neither_closes_a_silent_units_alert_nor_shows_it_heard(
    live_factory: Any,
) -> None:
    live = live_factory()
    heard = T0 - timedelta(hours=1)  # 09:00: the unit's last word
    status = p.encode_status(p.Presence.ONLINE, firmware="1.0")
    Store(live.sessions).process([Received(p.status_topic(DEV), status, heard)])
    settings = Settings(database_url="sqlite://", alerts_enabled=True)
    engine = AlertEngine(live.sessions, settings, clock=lambda: live.now[0])
    engine.run_once()

    def silent_open() -> bool:
        with live.sessions() as s:
            return bool(
                s.scalar(
                    select(func.count()).where(
                        Alert.kind == "unit_silent", Alert.subject == f"unit:{DEV}",
                        Alert.closed_at.is_(None),
                    )
                )
            )  # fmt: skip

    assert silent_open()
    visitor = live.phone()
    assert visitor.rate(score=4, code=live.code())[0] == 200
    live.now[0] += timedelta(minutes=1)
    engine.run_once()
    assert silent_open()  # still silent: a phone rating says nothing about the unit
    with live.sessions() as s:
        assert s.get(DeviceState, DEV).last_seen == heard  # type: ignore[union-attr]
        centre = s.scalars(select(Centre).where(Centre.code == "SH-GYUMRI1")).one()
        [unit] = [u for u in fleet.centre_units(s, centre.id, live.now[0]) if u["device"] == DEV]
    assert unit["last_seen"] == heard and unit["last_event"] is None


def test_a_phone_rating_goes_to_the_employee_logged_in_at_the_desk(live_factory: Any) -> None:
    live = live_factory()
    login = replace(
        event(1, type=p.EventType.STAFF_LOGIN, staff="ED22BAA14A", score=None, scale=None),
        at=(NOON - timedelta(hours=1)).isoformat(),
    )
    Store(live.sessions).process([msg(login)])
    visitor = live.phone()
    assert visitor.rate(score=2, code=live.code())[0] == 200
    logout = replace(login, seq=2, type=p.EventType.STAFF_LOGOUT,
                     at=(NOON + timedelta(seconds=30)).isoformat())  # fmt: skip
    Store(live.sessions).process([msg(logout)])
    live.now[0] += timedelta(minutes=1)
    assert live.phone("203.0.113.30").rate(score=3, code=live.code())[0] == 200
    with live.sessions() as s:
        by_code = dict(s.execute(select(Employee.id, Employee.code)).all())
    assert [by_code[r.employee_id] for r in live.ratings()] == [
        "SH-GYUMRI1-E05",  # badge-logged in at the desk (not its default employee)
        "SH-GYUMRI1-E03",  # after the logout: the desk's default employee
    ]


def test_a_rating_the_store_fails_on_can_be_sent_again(
    live_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = live_factory()
    store = live.app.state.gnahat.store
    real = store.process_in
    calls = {"n": 0}

    def fails_once(session: Session, messages: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(session, messages)

    monkeypatch.setattr(store, "process_in", fails_once)
    visitor = live.phone()
    _status, visit, _ = visitor.page(live.code())
    form = {"visit": visit, "score": "4", "lang": "en"}
    first = visitor.client.post(visitor.path(), data=form)
    assert first.status_code == 503 and "busy" in first.text
    assert {k: first.headers.get(k) for k in COMMON_HEADERS} == COMMON_HEADERS
    again = visitor.client.post(visitor.path(), data=form)  # the same form, sent again
    assert again.status_code == 200 and "received" in again.text
    assert len(live.ratings()) == 1 and live.counted() == 1
    third = visitor.client.post(visitor.path(), data=form)
    assert third.status_code == 409 and "already sent" in third.text


@pytest.mark.parametrize("odd", ["²", "³", "¹", "④", "٣", "３", "-1", "0", "99", "4.0"])
def test_odd_input_gets_a_clear_4xx_and_nothing_is_stored(live_factory: Any, odd: str) -> None:
    live = live_factory()
    visitor = live.phone()
    for name in ("score", "procedure", "conduct", "competence", "solved", "code"):
        live.now[0] += timedelta(minutes=1)  # a fresh code for each try
        _status, visit, _ = visitor.page(live.code() if name != "code" else None)
        form = {"visit": visit, "score": "3", "lang": "en", name: odd}
        r = visitor.client.post(visitor.path(), data=form)
        assert 400 <= r.status_code < 500, (name, r.status_code)
        assert {k: r.headers.get(k) for k in COMMON_HEADERS} == COMMON_HEADERS
        assert r.headers["content-type"].startswith("text/html"), (name, r.text)
    assert live.ratings() == []


def test_a_centres_guest_wifi_is_never_shut_out(live_factory: Any) -> None:
    """Thirty visitors in an hour behind the centre's one guest Wi-Fi address, each
    with the code of their own visit: all counted, none flagged, none refused."""
    live = live_factory()
    for i in range(30):
        live.now[0] += timedelta(minutes=1)
        visitor = live.phone("192.0.2.50")
        assert visitor.rate(score=1 + i % 4, code=live.code())[0] == 200, i
    ratings = live.ratings()
    assert len(ratings) == 30 and not any(r.flags for r in ratings)
    assert live.counted() == 30


def test_one_browser_rating_again_and_again_is_flagged_then_refused(live_factory: Any) -> None:
    live = live_factory()
    insider = live.phone()
    statuses = []
    for _ in range(16):
        live.now[0] += timedelta(minutes=1)
        statuses.append(insider.rate(score=4, code=live.code())[0])
    assert statuses == [200] * 15 + [429]
    flagged = [bool(r.flags & Flag.ONLINE_SUSPECT) for r in live.ratings()]
    assert flagged == [False] * 3 + [True] * 12
    assert live.counted() == 3


def test_a_manager_cannot_re_arm_before_every_rating(live_factory: Any) -> None:
    live = live_factory(online_arms_per_hour=5)
    with live.sessions() as s, s.begin():
        manager = create_token(s, name="boss", role=Role.MANAGER, centres=["SH-GYUMRI1"])[1]
    arm = f"{live.base}/api/v1/online/desks/{DEV}/arm"
    auth = {"Authorization": f"Bearer {manager}"}
    codes = []
    with httpx.Client(headers=auth) as api:
        first = api.post(arm)
        assert first.status_code == 200
        codes.append(first.json()["code"])
        live.now[0] += timedelta(seconds=20)
        assert api.post(arm).status_code == 429  # re-armed at once: refused
        for _ in range(4):
            live.now[0] += timedelta(seconds=61)
            r = api.post(arm)
            assert r.status_code == 200
            codes.append(r.json()["code"])
        live.now[0] += timedelta(seconds=61)
        assert api.post(arm).status_code == 429  # past the hourly allowance
        live.now[0] = SUNDAY_NIGHT
        assert api.post(arm).status_code == 409  # the centre is closed
    live.now[0] = NOON + timedelta(minutes=6)
    for code in codes:  # each window gives one rating, however it is used
        assert live.phone().rate(score=4, typed=code)[0] == 200
        assert live.phone().rate(score=4, typed=code)[0] == 409
    with live.sessions() as s:
        audited = s.execute(
            select(AuditLog.action, func.count()).where(AuditLog.actor == "token:boss")
            .group_by(AuditLog.action)
        ).all()  # fmt: skip
    assert dict(audited) == {"online.arm": 5, "online.arm_refused": 3}
    assert live.counted() == 5


def test_the_ministry_sees_each_centres_phone_share(live_factory: Any) -> None:
    live = live_factory(online_proof="open")
    Store(live.sessions).process([msg([event(i, score=4) for i in range(1, 31)])])
    for i in range(10):
        live.now[0] += timedelta(minutes=2)
        assert live.phone(f"203.0.113.{i}").rate(score=4, code=live.code())[0] == 200
    assert live.phone("203.0.113.99").rate(score=1)[0] == 200  # unverified: left out
    with live.sessions() as s:
        centre = s.scalars(select(Centre).where(Centre.code == "SH-GYUMRI1")).one()
        share = online.phone_shares(s, NOON.date(), NOON.date())[centre.id]
        # The page gives the centres' totals it already has: only the phone's cells are read.
        cells = scores.centre_service_counts(s, NOON.date(), NOON.date())
        totals = {centre.id: sum(c.n for (cid, _s, _k), c in cells.items() if cid == centre.id)}
        given = online.phone_shares(s, NOON.date(), NOON.date(), totals)[centre.id]
    assert share == given == {"n": 40, "online": 10, "online_excluded": 1}
    with live.sessions() as s, s.begin():
        from collector.edge.users import create_user

        create_user(s, "analyst", "analyst password 123", role=Role.ANALYST, now=T0)
    with httpx.Client(base_url=live.base, follow_redirects=False) as web:
        login = web.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert token
        r = web.post("/login", data={"username": "analyst", "password": "analyst password 123",
                                     "csrf": token.group(1)})  # fmt: skip
        assert r.status_code == 303
        page = web.get("/ministry", params={"lang": "en", "start": "2026-11-24",
                                            "end": "2026-11-24"}).text  # fmt: skip
    assert "By phone (left out)" in page
    assert re.search(r"25\s*%\s*\(1\)", page), "the phone share beside the centre's score"
    with live.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 0


def test_a_defect_answers_a_plain_500_with_every_security_header(
    live_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = live_factory()

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a defect of ours")

    monkeypatch.setattr(online, "desk_of", broken)
    r = live.phone().client.get(f"/r/{online.desk_token(SECRET, DEV)}")
    assert r.status_code == 500 and r.text == "Internal Server Error"
    assert {k: r.headers.get(k) for k in COMMON_HEADERS} == COMMON_HEADERS
    assert "content-security-policy" in r.headers

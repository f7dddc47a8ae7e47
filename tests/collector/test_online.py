"""The online channel over real HTTP and a real database: a desk's QR token opens the
phone page, a rating and its factors are stored once through the same store as a
unit's, and abuse is refused or flagged (never deleted)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge import online
from collector.edge.auth import Role, create_token
from collector.main import create_app
from collector.models import (
    ChannelAggregate,
    DailyAggregate,
    Event,
    FactorAggregate,
    Flag,
    OnlineSubmission,
)
from tests.collector.helpers import DEV, T0

SECRET = "online-test-secret-0123456789abcdef"


@dataclass
class Site:
    client: TestClient
    now: list[datetime]
    sessions: sessionmaker[Session]

    def page(self, device: str = DEV, code: str | None = "desk", **params: str) -> tuple[str, str]:
        """GET the desk's page as its screen's QR opens it (``code="desk"``: the code the
        desk shows now; None: the printed card alone): (its path, the visit token)."""
        path = f"/r/{online.desk_token(SECRET, device)}"
        if code == "desk":
            code = online.desk_code(SECRET, device, self.now[0])
        r = self.client.get(path, params={**params, **({"c": code} if code else {})})
        assert r.status_code == 200, r.text
        visit = re.search(r'name="visit" value="([^"]+)"', r.text)
        assert visit
        return path, visit.group(1)

    def rate(self, score: int = 4, code: str | None = "desk", **answers: str) -> tuple[int, str]:
        path, visit = self.page(code=code)
        form = {"visit": visit, "score": str(score), "lang": "en", **answers}
        r = self.client.post(path, data=form)
        return r.status_code, r.text

    def events(self) -> list[Event]:
        with self.sessions() as s:
            return list(s.scalars(select(Event).order_by(Event.seq)))


def make_site(database_url: str, sessions: sessionmaker[Session], **settings: object) -> Site:
    app = create_app(
        Settings(database_url=database_url, secret_key=SECRET, **settings)  # type: ignore[arg-type]
    )
    now = [T0 + timedelta(hours=2)]
    app.state.gnahat.clock = lambda: now[0]
    return Site(TestClient(app), now, sessions)


@pytest.fixture
def site(database_url: str, sessions: sessionmaker[Session]) -> Iterator[Site]:
    s = make_site(database_url, sessions)
    with s.client:
        yield s


def test_a_visitor_rates_with_factors_once_and_it_counts_in_every_figure(site: Site) -> None:
    path, visit = site.page(lang="en")
    form = {"visit": visit, "score": "2", "procedure": "1", "solved": "partly",
            "conduct": "4", "service": "EMPLOYMENT", "lang": "en"}  # fmt: skip
    r = site.client.post(path, data=form)
    assert r.status_code == 200 and "Your rating was received." in r.text
    rating, factors = site.events()
    assert (rating.type, rating.stream, rating.seq, rating.channel, rating.score) == (
        "rating", "web", 1, "online", 2,
    )  # fmt: skip
    assert factors.type == "factors" and factors.rating_seq == 1
    assert factors.answers == {"procedure": 1, "solved": "partly", "conduct": 4}
    assert rating.chosen_service == "EMPLOYMENT" and rating.device == DEV
    again = site.client.post(path, data=form)  # the same form sent twice: a replay
    assert again.status_code == 409 and "already sent" in again.text
    assert len(site.events()) == 2
    with site.sessions() as s:
        assert s.scalar(select(func.sum(DailyAggregate.n))) == 1  # counted together
        online_cells = s.scalars(select(ChannelAggregate)).all()
        assert [(c.channel, c.n2, c.n) for c in online_cells] == [("online", 1, 1)]
        factor_cells = {(f.factor, f.level): f.n for f in s.scalars(select(FactorAggregate))}
        assert factor_cells == {("procedure", 1): 1, ("solved", 2): 1, ("conduct", 4): 1}


def test_forged_expired_and_wrong_desk_tokens_are_refused_with_a_clear_message(
    site: Site,
) -> None:
    forged = site.client.get("/r/not-a-real-token", params={"lang": "en"})
    assert forged.status_code == 403 and "This code is not valid" in forged.text
    other_secret = online.desk_token("another-collector-secret-0123456789", DEV)
    assert site.client.get(f"/r/{other_secret}").status_code == 403
    path, visit = site.page(lang="en")
    tampered = visit[:-4] + ("AAAA" if not visit.endswith("AAAA") else "BBBB")
    r = site.client.post(path, data={"visit": tampered, "score": "3", "lang": "en"})
    assert r.status_code == 403 and "not valid" in r.text
    # A visit token of one desk does not rate another.
    other = f"/r/{online.desk_token(SECRET, 'am-sh-gyumri1-d02')}"
    assert site.client.post(other, data={"visit": visit, "score": "3"}).status_code == 403
    site.now[0] += timedelta(hours=1)  # the page left open past GNAHAT_ONLINE_VISIT_TTL_S
    late = site.client.post(path, data={"visit": visit, "score": "3", "lang": "en"})
    assert late.status_code == 410 and "scan the code again" in late.text
    assert site.events() == []
    missing = site.rate(score=9)
    assert missing[0] == 422  # no valid score: the form again, saying so
    assert site.events() == []


def test_a_browser_that_keeps_no_cookie_rates_once_and_a_strange_cookie_is_refused(
    site: Site,
) -> None:
    """A browser that keeps no cookie can never send one back: its form is bound to the
    page view it came from, one rating per visit and per code as for everyone. A browser
    that sends a cookie must send the one its page was given."""
    from collector.edge.web.online import COOKIE

    path, visit = site.page(lang="en")
    site.client.cookies.clear()  # the page set one; this browser did not keep it
    form = {"visit": visit, "score": "4", "lang": "en"}
    r = site.client.post(path, data=form)
    assert r.status_code == 200 and "Your rating was received." in r.text
    site.client.cookies.clear()
    again = site.client.post(path, data=form)
    assert again.status_code == 409 and "already sent" in again.text
    site.now[0] += timedelta(minutes=1)  # the next visitor's code
    path, visit = site.page(lang="en")
    site.client.cookies.set(COOKIE, "0" * 32)  # another browser's id
    stolen = site.client.post(path, data={"visit": visit, "score": "1", "lang": "en"})
    assert stolen.status_code == 403 and "not valid" in stolen.text
    assert [e.score for e in site.events() if e.type == "rating"] == [4]


def test_a_burst_from_one_browser_is_flagged_and_left_out_of_scores_nothing_deleted(
    site: Site,
) -> None:
    for i in range(6):
        site.now[0] += timedelta(minutes=1)
        status, _ = site.rate(score=4, solved="yes")
        assert status == 200, i
    events = [e for e in site.events() if e.type == "rating"]
    assert len(events) == 6  # every one kept
    flagged = [e.seq for e in events if e.flags & Flag.ONLINE_SUSPECT]
    assert len(flagged) == 3  # beyond three a day from one browser
    with site.sessions() as s:
        cell = s.scalars(select(ChannelAggregate)).one()
        assert (cell.n, cell.excluded) == (3, 3)
        assert s.scalar(select(func.sum(DailyAggregate.n))) == 3
        solved = s.scalars(select(FactorAggregate)).one()
        assert (solved.n, solved.excluded) == (3, 3)
        assert s.scalar(select(func.count()).select_from(OnlineSubmission)) == 6


def test_a_flood_is_refused_before_anything_is_stored(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    site = make_site(database_url, sessions, online_per_browser_day=1)
    with site.client:
        codes = []
        for _ in range(7):
            site.now[0] += timedelta(minutes=1)  # a new code on the desk's screen
            codes.append(site.rate()[0])
    assert codes == [200] * 5 + [429, 429]  # 5 = the limit times the flood factor
    assert len(site.events()) == 5


def test_a_queue_systems_visit_window_gives_one_rating_its_code(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    site = make_site(database_url, sessions)
    with sessions() as s, s.begin():
        queue = create_token(s, name="queue", role=Role.TECHNICIAN)[1]
        other = create_token(s, name="m", role=Role.MANAGER, centres=["ER-AVAN"])[1]
    with site.client:
        status, text = site.rate(code=None)
        assert status == 409 and "counts with a visit code" in text  # the card alone
        arm = f"/api/v1/online/desks/{DEV}/arm"
        refused = site.client.post(arm, headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 403  # a manager of another centre
        r = site.client.post(arm, headers={"Authorization": f"Bearer {queue}"})
        assert r.status_code == 200
        window = r.json()
        assert window["url"].endswith(f"?c={window['code']}")
        assert site.rate(code=window["code"])[0] == 200
        site.now[0] += timedelta(minutes=1)
        assert site.rate(code=window["code"])[0] == 409  # one rating a visit: replayed
        site.now[0] += timedelta(minutes=30)  # the window closed
        path, visit = site.page(code=None)
        late = site.client.post(path, data={"visit": visit, "score": "3", "lang": "en",
                                            "code": window["code"]})  # fmt: skip
        assert late.status_code == 403 and "does not match" in late.text
    ratings = [e for e in site.events() if e.type == "rating"]
    assert [bool(e.flags & Flag.ONLINE_SUSPECT) for e in ratings] == [False]


def test_the_analyst_feed_counts_the_channels_apart_and_together(site: Site) -> None:
    import csv
    import io

    from collector.edge.auth import create_token
    from collector.intake.store import Store
    from tests.collector.helpers import event, msg

    Store(site.sessions).process([msg([event(i, score=4) for i in (1, 2, 3)])])
    assert site.rate(score=1)[0] == 200
    with site.sessions() as s, s.begin():
        analyst = create_token(s, name="a", role=Role.ANALYST)[1]
    auth = {"Authorization": f"Bearer {analyst}"}
    params = {"start": "2026-11-24", "end": "2026-11-24", "format": "csv"}
    apart = site.client.get("/api/v1/feeds/aggregates", params={**params, "by": "channel"},
                            headers=auth)  # fmt: skip
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO(apart.text))}
    assert (rows["counter"]["n"], rows["online"]["n"], rows["online"]["n1"]) == ("3", "1", "1")
    together = site.client.get(
        "/api/v1/feeds/aggregates", params={**params, "by": "national"}, headers=auth
    )
    [row] = list(csv.DictReader(io.StringIO(together.text)))
    assert row["n"] == "4"
    sdmx = site.client.get(
        "/api/v1/feeds/aggregates",
        params={**params, "by": "channel", "format": "sdmx-csv"},
        headers=auth,
    ).text
    assert ",AM,_T,ONLINE,4,N,2026-11-24,1" in sdmx


def test_the_phone_scale_shows_the_same_drawn_faces_as_the_units_screen(site: Site) -> None:
    """A visitor who reads little finds on the phone the faces of the unit's screen:
    the same picture beside each level, drawn (no emoji font), hidden from screen
    readers (the level's number and word say it)."""
    from device.faces import face
    from device.kiosk import render_page

    path = f"/r/{online.desk_token(SECRET, DEV)}"
    code = online.desk_code(SECRET, DEV, site.now[0])
    page = site.client.get(path, params={"c": code, "lang": "hy"}).text
    kiosk = render_page(4, "hy")
    for level in range(1, 5):
        drawn = face(level, 4)
        assert drawn in page and drawn in kiosk and 'aria-hidden="true"' in drawn
    assert len({face(level, 4) for level in range(1, 5)}) == 4  # four different faces
    assert not re.search("[\U0001f600-\U0001f64f\u2639\u263a]", page + kiosk)  # no emoji

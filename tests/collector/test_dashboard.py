"""The centre dashboard over HTTP: login (argon2, rate limit), CSRF, scoping, notes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role
from collector.edge.users import UserError, create_user
from collector.intake.store import ORIGIN_ONLINE, Store
from collector.main import create_app
from collector.models import AuditLog, DayNote, User
from tests.collector.helpers import T0, event, msg

PASSWORD = "correct horse battery"
NOW = [T0 + timedelta(days=1)]


def add_user(
    sessions: sessionmaker[Session], name: str, role: Role, centres: list[str] | None = None
) -> None:
    with sessions() as s, s.begin():
        create_user(s, name, PASSWORD, role=role, centres=centres, now=NOW[0])


@pytest.fixture
def client(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    for device, n in (("am-sh-gyumri1-d01", 7), ("am-sh-gyumri1-d02", 3), ("am-er-avan-d01", 4)):
        store.process([msg(event(i, device=device), device=device) for i in range(1, n + 1)])
    add_user(sessions, "anna", Role.MANAGER, ["SH-GYUMRI1"])
    add_user(sessions, "aram", Role.ANALYST)
    NOW[0] = T0 + timedelta(days=1)
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: NOW[0]
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> object:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": token},
        follow_redirects=False,
    )


def test_login_page_speaks_armenian_first(client: TestClient) -> None:
    r = client.get("/login")
    assert r.status_code == 200 and '<html lang="hy">' in r.text
    assert "Մուտք" in r.text and 'for="username"' in r.text and 'for="password"' in r.text
    assert "Log in" in client.get("/login?lang=en").text
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/login"


def test_a_manager_logs_in_and_sees_their_centre(client: TestClient) -> None:
    r = log_in(client, "anna")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"  # type: ignore[attr-defined]
    cookie = r.headers["set-cookie"].lower()  # type: ignore[attr-defined]
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/dashboard").text
    assert "Տարածքային կենտրոն «Գյումրի 1»" in page
    assert "Սոցիալական ապահովություն" in page  # the service, in Armenian
    assert "Աշխատակից 01" in page  # 7 ratings: a figure
    row = re.search(r"Աշխատակից 02.*?</tr>", page, re.S)
    assert row and "Բավարար գնահատականներ չկան" in row.group(0)  # 3 ratings: held back
    assert "Ավան" not in page  # another centre is not even offered
    assert client.get("/dashboard?centre=ER-AVAN").status_code == 403
    en = client.get("/dashboard?lang=en").text
    assert "Gyumri 1 territorial centre" in en and "Not enough ratings" in en


def test_analysts_see_every_centre_but_no_staff(client: TestClient) -> None:
    assert log_in(client, "aram").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?centre=ER-AVAN").text
    assert "Տարածքային կենտրոն «Ավան»" in page
    assert "Աշխատակից 01" not in page and 'id="add-note"' not in page


def test_wrong_passwords_then_the_limit(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    for _ in range(3):
        r = log_in(client, "anna", "wrong password!")
        assert r.status_code == 401 and "Սխալ օգտանուն կամ գաղտնաբառ" in r.text  # type: ignore[attr-defined]
    r = log_in(client, "anna")  # right password, but this pair must wait a moment
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
    assert "վայրկյանից" in r.text  # type: ignore[attr-defined]
    assert log_in(client, "nobody", "whatever password").status_code == 401  # type: ignore[attr-defined]
    NOW[0] += timedelta(seconds=2)  # the wait is over: progressive, never a lock
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    with sessions() as s:
        assert "login" in set(s.scalars(select(AuditLog.action)))


def test_forms_need_the_csrf_token(client: TestClient) -> None:
    r = client.post(
        "/login", data={"username": "anna", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 403
    log_in(client, "anna")
    r = client.post(
        "/dashboard/notes",
        data={"centre": "SH-GYUMRI1", "day": "2026-11-24", "text": "x", "csrf": "forged"},
    )
    assert r.status_code == 403
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403


def test_a_manager_annotates_a_day(client: TestClient, sessions: sessionmaker[Session]) -> None:
    log_in(client, "anna")
    token = csrf_of(client.get("/dashboard").text)
    note = "Համակարգի խափանում 11:00–12:00"
    r = client.post(
        "/dashboard/notes",
        data={"centre": "SH-GYUMRI1", "day": "2026-11-24", "text": note, "csrf": token},
    )
    assert r.status_code == 200 and note in r.text and "Նշումը պահպանված է" in r.text
    r = client.post(
        "/dashboard/notes",
        data={"centre": "ER-AVAN", "day": "2026-11-24", "text": "no", "csrf": token},
    )
    assert r.status_code == 403  # not their centre
    r = client.post(
        "/dashboard/notes",
        data={"centre": "SH-GYUMRI1", "day": "2026-11-23", "text": "<script>x()</script>",
              "csrf": token},
    )  # fmt: skip
    assert "&lt;script&gt;x()&lt;/script&gt;" in r.text and "<script>x()" not in r.text
    with sessions() as s:
        assert [n.text for n in s.scalars(select(DayNote).order_by(DayNote.id))] == [
            note,
            "<script>x()</script>",
        ]


def test_analysts_cannot_annotate(client: TestClient) -> None:
    log_in(client, "aram")
    token = csrf_of(client.get("/dashboard").text)
    r = client.post(
        "/dashboard/notes",
        data={"centre": "SH-GYUMRI1", "day": "2026-11-24", "text": "x", "csrf": token},
    )
    assert r.status_code == 403


def test_logout_and_disabled_users(client: TestClient, sessions: sessionmaker[Session]) -> None:
    log_in(client, "anna")
    token = csrf_of(client.get("/dashboard").text)
    r = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    log_in(client, "anna")
    with sessions() as s, s.begin():
        user = s.scalars(select(User).where(User.username == "anna")).one()
        user.disabled_at = datetime.now(UTC)
    assert client.get("/dashboard", follow_redirects=False).status_code == 303  # out
    assert log_in(client, "anna").status_code == 401  # type: ignore[attr-defined]


def test_users_need_good_passwords_and_known_centres(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        with pytest.raises(UserError, match="at least 12"):
            create_user(s, "x", "short", role=Role.ANALYST, now=NOW[0])
        with pytest.raises(UserError, match="needs --centre"):
            create_user(s, "m", PASSWORD, role=Role.MANAGER, now=NOW[0])
        with pytest.raises(UserError, match="unknown centre"):
            create_user(s, "m", PASSWORD, role=Role.MANAGER, centres=["XX"], now=NOW[0])
        create_user(s, "ok", PASSWORD, role=Role.ADMIN, now=NOW[0])
        with pytest.raises(UserError, match="exists"):
            create_user(s, "ok", PASSWORD, role=Role.ADMIN, now=NOW[0])
        stored = s.scalars(select(User.password_hash).where(User.username == "ok")).one()
        assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_the_collector_hashes_with_argon2id_at_its_defaults(
    sessions: sessionmaker[Session],
) -> None:
    """The suite hashes with light parameters (tests/conftest.py); the collector with
    argon2-cffi's defaults. A hash made with lighter parameters than the collector's
    still logs in, and is made again at the collector's on that login."""
    from argon2 import Type

    from collector.edge import users

    shipped = users.DEFAULT_HASHER
    assert shipped.type is Type.ID and shipped.time_cost >= 3 and shipped.memory_cost >= 65536
    with sessions() as s, s.begin():
        create_user(s, "light", PASSWORD, role=Role.ADMIN, now=NOW[0])
    light = users.use_hasher(shipped)
    try:
        with sessions() as s, s.begin():
            before = s.scalars(select(User.password_hash).where(User.username == "light")).one()
            assert before.startswith("$argon2id$") and "m=1024,t=1" in before
            users.login(s, "light", PASSWORD, address="127.0.0.1", now=NOW[0])
        with sessions() as s:
            after = s.scalars(select(User.password_hash).where(User.username == "light")).one()
        assert after.startswith("$argon2id$") and "m=65536,t=3" in after
        assert shipped.verify(after, PASSWORD)
    finally:
        users.use_hasher(light)


def test_user_cli(
    database_url: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from collector.cli import main

    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    argv = ["user", "add", "lilit", "--role", "manager", "--centre", "SH-GYUMRI1"]
    assert main(argv) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "passwd", "lilit"]) == 2
    assert "at least 12" in capsys.readouterr().err
    assert main(["user", "disable", "lilit"]) == 0
    assert main(["user", "list"]) == 0
    assert "lilit\tmanager\tdisabled\tSH-GYUMRI1" in capsys.readouterr().out
    assert PASSWORD not in capsys.readouterr().out


def test_a_day_with_presses_dated_by_estimate_says_so(client: TestClient, store: Store) -> None:
    """A clockless unit's press with no lower bound counts on its estimate's day, and
    the day's row says how many such presses it holds, in both languages."""
    from datetime import UTC, datetime

    device = "am-sh-gyumri1-d01"
    lone = event(
        100,
        device=device,
        stream="clockless",
        at=datetime(1970, 1, 1, tzinfo=UTC),
        clock_synced=False,
        boot="cold-b7",  # a boot nothing else of this unit was heard from
        sent_mono_ms=1,
        sent_boot="cold-b8",
    )
    store.process([msg(lone, device=device, at=T0 + timedelta(hours=2))])
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard").text
    row = re.search(r"2026-11-24</th>.*?</tr>", page, re.S)
    assert row and "1 գնահատական թվագրված է մոտավորապես" in row.group(0)
    en = client.get("/dashboard?lang=en").text
    assert "1 ratings dated by estimate" in en


def _copy_cookie(client: TestClient) -> str:
    values = [c.value for c in client.cookies.jar if c.name == "gnahat_session"]
    assert len(values) == 1 and values[0]
    return str(values[0])


def _with_cookie(client: TestClient, value: str) -> int:
    """Open the dashboard with a copied cookie (a thief's browser)."""
    client.cookies.clear()
    client.cookies.set("gnahat_session", value)
    return client.get("/dashboard", follow_redirects=False).status_code


def test_a_cookie_copied_before_logout_or_a_password_change_is_refused(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    import base64

    from collector.edge.users import set_password, set_role

    log_in(client, "anna")
    stolen = _copy_cookie(client)
    # The cookie holds a random session id and the language only: no user id, no CSRF.
    payload = base64.b64decode(stolen.split(".")[0] + "==").decode()
    assert "sid" in payload and "uid" not in payload and "csrf" not in payload
    token = csrf_of(client.get("/dashboard").text)
    assert token not in payload
    client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert _with_cookie(client, stolen) == 303  # the copy died with the logout

    client.cookies.clear()
    log_in(client, "anna")
    stolen = _copy_cookie(client)
    with sessions() as s, s.begin():
        set_password(s, "anna", "another long password", now=NOW[0])
    assert _with_cookie(client, stolen) == 303  # every session of anna ended at once

    client.cookies.clear()
    assert log_in(client, "anna", "another long password").status_code == 303  # type: ignore[attr-defined]
    stolen = _copy_cookie(client)
    with sessions() as s, s.begin():
        set_role(s, "anna", Role.ANALYST, now=NOW[0])
    assert _with_cookie(client, stolen) == 303


def test_sessions_end_when_idle_and_at_their_lifetime(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    log_in(client, "anna")
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    NOW[0] += timedelta(minutes=29)
    assert client.get("/dashboard", follow_redirects=False).status_code == 200  # still in use
    NOW[0] += timedelta(minutes=31)  # idle past GNAHAT_SESSION_IDLE_S (30 min)
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    log_in(client, "anna")
    for _ in range(17):  # busy all day: the lifetime (8 h) ends it anyway
        NOW[0] += timedelta(minutes=29)
        code = client.get("/dashboard", follow_redirects=False).status_code
    assert code == 303


def test_admins_list_and_end_sessions_from_the_cli(
    client: TestClient,
    sessions: sessionmaker[Session],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from collector.cli import main

    NOW[0] = datetime.now(UTC)  # the CLI judges sessions by the real clock
    log_in(client, "anna")
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    assert main(["user", "sessions"]) == 0
    listing = capsys.readouterr().out
    assert "\tanna\t" in listing
    prefix = listing.split("\t")[0]
    assert main(["user", "end-sessions", prefix]) == 0
    assert "1 session(s) ended" in capsys.readouterr().out
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    with sessions() as s:
        actions = s.scalars(select(AuditLog.action)).all()
    assert "sessions.end" in actions


def test_days_not_delivered_to_the_me_is_are_shown_with_the_reason(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> None:
    from collector.models import Centre, ForwardBatch

    store.process([msg(event(i), device="am-sh-gyumri1-d01") for i in range(1, 4)])
    add_user(sessions, "anna", Role.MANAGER, ["SH-GYUMRI1"])
    with sessions() as s, s.begin():
        centre = s.scalar(select(Centre.id).where(Centre.code == "SH-GYUMRI1"))
        for day, state, problem in (
            (T0.date() - timedelta(days=2), "locked", "locked"),
            (T0.date() - timedelta(days=1), "pending", "mapping"),
            (T0.date(), "sent", None),
        ):
            s.add(
                ForwardBatch(
                    batch_key=f"SH-GYUMRI1/{day:%Y%m%d}",
                    day=day,
                    centre_id=centre,
                    version=1,
                    send_key="k",
                    payload={},
                    payload_hash="h",
                    state=state,
                    problem=problem,
                    attempts=1,
                    created_at=T0,
                    updated_at=T0,
                )
            )
    settings = Settings(
        database_url=database_url, forward_url="http://127.0.0.1:9", forward_enabled=False
    )
    app = create_app(settings)
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with TestClient(app, base_url="http://testserver") as client:
        assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
        en = client.get("/dashboard?lang=en").text
        section = en[en.index('id="me-is"') :]
        assert re.search(r"2026-11-22</th><td[^>]*>locked in the M&amp;E IS</td>\s*<td[^>]*>"
                         r"the period is closed in the M&amp;E IS", section)  # fmt: skip
        assert re.search(
            r"2026-11-23</th><td[^>]*>waiting</td>\s*<td[^>]*>a mapping or metadata gap", section
        )
        assert "2026-11-24</th>" not in section  # delivered
        hy = client.get("/dashboard?lang=hy").text
        assert "փակված է ՄԳՏՀ-ում" in hy and "տվյալների համապատասխանեցման բաց" in hy


def test_a_manager_acknowledges_an_alert_with_a_comment(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    from collector.models import Alert, Centre

    with sessions() as s, s.begin():
        gy = s.scalar(select(Centre.id).where(Centre.code == "SH-GYUMRI1"))
        s.add(
            Alert(
                kind="unit_clock",
                subject="unit:am-sh-gyumri1-d01",
                centre_id=gy,
                severity="warning",
                state="open",
                detail={"device": "am-sh-gyumri1-d01", "centre": "SH-GYUMRI1", "desk": "01"},
                opened_at=T0,
                seen_at=T0,
                notices=1,
            )
        )
    assert log_in(client, "aram").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?centre=SH-GYUMRI1&lang=en").text
    assert "reports that its clock is not synchronised" in page
    assert "/dashboard/alerts/1/ack" not in page  # analysts see, managers act
    denied = client.post("/dashboard/alerts/1/ack", data={"comment": "x", "csrf": csrf_of(page)})
    assert denied.status_code == 403
    client.post("/logout", data={"csrf": csrf_of(page)})
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?lang=hy").text
    assert "սարքի ժամացույցը ճշգրտված չէ" in page and "զգուշացում" in page
    r = client.post(
        "/dashboard/alerts/1/ack",
        data={"comment": "NTP fixed by the technician", "csrf": csrf_of(page)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].endswith("acked=1#alerts")
    page = client.get("/dashboard?acked=1&lang=en").text
    assert "The alert is acknowledged." in page
    assert "Acknowledged by user:anna: NTP fixed by the technician" in page
    with sessions() as s:
        alert = s.get(Alert, 1)
        assert alert is not None and alert.state == "acknowledged"
        assert s.scalar(select(AuditLog.actor).where(AuditLog.action == "alert.acknowledged")) == (
            "user:anna"
        )


def test_the_units_of_a_centre_with_their_link_queue_clock_and_gaps(
    client: TestClient, store: Store
) -> None:
    from device import protocol as p

    device = "am-sh-gyumri1-d01"
    health = p.Health(
        device=device,
        at=T0.isoformat(),
        queue_depth=12,
        oldest_unacked_s=300.0,
        uptime_s=60.0,
        firmware="1.0",
        clock_synced=False,
    )
    store.process([msg(p.encode_health(health), device=device, kind="health", at=T0)])
    store.process([msg(event(20, device=device), device=device)])  # seqs 8..19 never came
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?lang=en").text
    units = page[page.index('id="units"') : page.index('id="services"')]
    row = re.search(rf"<th scope=\"row\">01</th><td[^>]*>{device}</td>.*?</tr>", units, re.S)
    assert row, units
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "|", row.group(0)))
    assert "offline" in cells and "12 (5 min)" in cells and "not synchronised" in cells
    assert cells.rstrip("|").endswith("|12")  # 12 missing: seqs 8..19
    assert "never" in units  # desks whose units were never heard


def test_pictures_with_text_alternatives_periods_and_a_comparison(
    client: TestClient, store: Store
) -> None:
    device = "am-sh-gyumri1-d01"
    # The week before: all content; this period (the 24th): 7 content from the fixture
    # plus 3 unhappy, at 10:00 and 11:00 on a Tuesday.
    store.process([msg(event(100 + i, device=device, score=4, at=T0 - timedelta(days=8)),
                       device=device) for i in range(5)])  # fmt: skip
    store.process([msg(event(200 + i, device=device, score=1, at=T0 + timedelta(hours=1)),
                       device=device) for i in range(3)])  # fmt: skip
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?lang=en&start=2026-11-18&end=2026-11-24").text
    for ident in ("trend", "levels", "services-chart", "heatmap"):
        assert f'aria-labelledby="{ident}-t {ident}-d"' in page, ident
    assert '<title id="trend-t">Satisfaction by day</title>' in page
    assert "Previous period (2026-11-11 to 2026-11-17): 100 % (5)" in page
    assert "Satisfaction 77 % (13 ratings)" in page and "Change: -23 percentage points" in page
    heat = page[page.index('id="heatmap-t"') :]
    assert ">10<" in heat  # 10 ratings on Tuesday at 10:00, written in the cell
    table = page[page.index("Ratings by hour and weekday</figcaption>") :]
    assert re.search(r'<th scope="row">10</th><td class="num">0</td><td class="num">10</td>', table)
    assert 'aria-current="page">Today' not in page  # a custom period
    hy = client.get("/dashboard?lang=hy").text
    assert "Գոհունակությունն ըստ օրերի" in hy and "Վերջին 30 օր" in hy


def test_the_ministry_sees_every_centre_managers_do_not(client: TestClient, store: Store) -> None:
    # Gyumri 1: 40 more ratings (enough to judge); Avan keeps its 4 (too few).
    store.process([msg(event(300 + i, device="am-sh-gyumri1-d03", score=1 + i % 4),
                       device="am-sh-gyumri1-d03") for i in range(40)])  # fmt: skip
    assert log_in(client, "aram").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/ministry?lang=en&start=2026-11-01&end=2026-11-24").text
    marz = page[page.index('id="marzes"') : page.index('id="rankings"')]
    assert "Shirak</a> <span" in marz and "Yerevan</a> <span" in marz
    ranks = page[page.index('id="rankings"') : page.index('id="too-few"')]
    assert "Gyumri 1 territorial centre</a>" in ranks and "Avan territorial centre" not in ranks
    assert 'aria-labelledby="rankings-t rankings-d"' in ranks
    few = page[page.index('id="too-few"') :]
    assert "Avan territorial centre</a>: 4" in few and "Ashtarak territorial centre</a>: 0" in few
    assert 'aria-labelledby="national-t national-d"' in page
    assert '<title id="services-chart-t">Services side by side</title>' in page
    shirak = client.get("/ministry?lang=en&marz=AM-SH&start=2026-11-01&end=2026-11-24").text
    assert '<title id="national-t">Satisfaction by day, Shirak</title>' in shirak
    assert client.get("/ministry?marz=XX").status_code == 422
    hy = client.get("/ministry?lang=hy").text
    assert "Շիրակ" in hy and "Դատելու համար քիչ գնահատականներ" in hy
    client.post("/logout", data={"csrf": csrf_of(page)})
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    assert client.get("/ministry").status_code == 403
    assert 'href="/ministry"' not in client.get("/dashboard").text


def test_the_ministrys_trend_over_a_long_period_is_drawn_by_month(
    client: TestClient, store: Store
) -> None:
    """Over more than three months a point a day is unreadable: one point a month, whole
    months from the monthly cells and the partial ones at the edges from the daily."""
    device = "am-sh-gyumri1-d03"
    sept, octo = T0 - timedelta(days=75), T0 - timedelta(days=50)  # 10 Sep, 5 Oct
    store.process([msg(event(400 + i, device=device, score=4, at=sept), device=device)
                   for i in range(3)])  # fmt: skip
    store.process([msg(event(500 + i, device=device, score=1, at=octo), device=device)
                   for i in range(2)])  # fmt: skip
    assert log_in(client, "aram").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/ministry?lang=en&start=2026-06-15&end=2026-11-24").text
    assert '<title id="national-t">Satisfaction by month, the whole country</title>' in page
    trend = page[
        page.index('id="national-t"') : page.index("</svg>", page.index('id="national-t"'))
    ]
    assert re.search(r"<title>2026-09: 100 % \([^)]*\), n = 3</title>", trend)
    assert re.search(r"<title>2026-10: 0 % \([^)]*\), n = 2</title>", trend)
    assert "<title>2026-11: " in trend and "2026-10-05" not in trend
    shirak = client.get("/ministry?lang=hy&marz=AM-SH&start=2026-06-15&end=2026-11-24").text
    assert "Գոհունակությունն ըստ ամիսների, Շիրակ" in shirak
    month = client.get("/ministry?lang=en&start=2026-09-01&end=2026-11-24").text  # 85 days
    assert '<title id="national-t">Satisfaction by day, the whole country</title>' in month
    assert "<title>2026-10-05: 0 % (" in month


def test_the_factor_picture_and_the_channels_on_the_dashboard(
    client: TestClient, store: Store
) -> None:
    """Where visitors are lost: the factors' favourable shares with n, and the ratings
    at the desk and by phone counted apart."""
    from dataclasses import replace

    from device import protocol as p

    dev = "am-sh-gyumri1-d01"
    factors = [
        replace(event(100 + i, device=dev), type=p.EventType.FACTORS, score=None,
                rating_seq=i, answers={"procedure": 1 if i < 4 else 4, "solved": "yes"})
        for i in range(1, 6)
    ]  # fmt: skip
    online = [replace(event(i, device=dev, stream="web"), channel="online") for i in (1, 2)]
    store.process([msg(factors, device=dev)])
    store.process([replace(msg(online, device=dev), origin=ORIGIN_ONLINE)])  # the phone page's
    assert log_in(client, "anna").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?lang=en").text
    assert 'id="factors-chart-t"' in page and "Where we lose visitors" in page
    table = re.search(r"Where we lose visitors.*?</table>", page, re.S)
    assert table is not None
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th><td class="num">([^<]+)<', table[0]))
    assert rows["How were the procedure and the waiting time?"].startswith("40")  # 2 of 5
    assert rows["Was your issue solved?"].startswith("100")
    assert "How was the employee&#39;s conduct?" not in page  # nobody answered it
    assert re.search(r"Channels: at the desk 10 · by phone 2", page)


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "/dashboard?lang=" + "x" * 20, None),
        ("get", "/dashboard?start=garbage", None),
        ("get", "/ministry?start=2026-13-01", None),
        ("post", "/dashboard/alerts/abc/ack", {"comment": "x"}),
        ("post", "/dashboard/notes", {"day": "not a day", "note": "x"}),
        ("post", "/login", {"username": "u" * 500, "password": "p"}),
    ],
)  # fmt: skip
def test_people_get_a_page_with_a_way_back_never_json(
    client: TestClient, method: str, path: str, data: dict[str, str] | None
) -> None:
    """Input refused before our code sees it, on a page meant for people: an HTML page in
    their language that says so and links back; the API keeps its JSON errors."""
    log_in(client, "anna")
    r = client.get(path) if method == "get" else client.post(path, data=data)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "Հարցումը չհասկացանք" in r.text and 'href="/dashboard"' in r.text
    api = client.get("/api/v1/scores/centres?start=garbage")
    assert api.status_code in (401, 422) and api.headers["content-type"] == "application/json"

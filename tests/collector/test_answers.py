"""You said, we did, over HTTP on both databases: a low month waits for its centre's
answer and the ministry lists it once it is overdue; a manager answers it; the public
page and the open data show the answer beside the figures that prompted it, with the
open data's suppression; every refusal is a page with a way back."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role
from collector.edge.users import create_user
from collector.intake.store import Store
from collector.main import create_app
from collector.models import Answer, AuditLog
from device import protocol as p
from tests.collector.helpers import T0, event, msg
from tests.collector.test_dashboard import PASSWORD, csrf_of

GYUMRI = "am-sh-gyumri1-d01"
AVAN = "am-er-avan-d01"
OCTOBER = datetime(2026, 10, 15, 7, 0, tzinfo=UTC)
NOW = [T0 + timedelta(days=1)]  # 25 November: October's answer is 11 days overdue
WORDS = "Երկրորդ հերթագրման սարքը տեղադրվեց, և սպասումը կրճատվեց։"


@pytest.fixture
def client(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    # October at Gyumri 1: half satisfied (low), the procedure judged harshly; November
    # all satisfied. Avan: 5 ratings in October, too few to show.
    october = [
        event(i, device=GYUMRI, at=OCTOBER + timedelta(days=i), score=4 if i % 2 else 1)
        for i in range(1, 13)
    ]
    factors = [
        replace(event(100 + i, device=GYUMRI, at=OCTOBER + timedelta(days=i)),
                type=p.EventType.FACTORS, score=None, rating_seq=i,
                answers={"procedure": 1, "conduct": 4})
        for i in range(1, 13)
    ]  # fmt: skip
    november = [event(200 + i, device=GYUMRI, at=T0 - timedelta(days=i)) for i in range(12)]
    store.process([msg(october + factors + november, device=GYUMRI, at=T0)])
    avan = [event(i, device=AVAN, at=OCTOBER, score=1) for i in range(1, 6)]
    store.process([msg(avan, device=AVAN, at=T0)])
    with sessions() as s, s.begin():
        for name, role, centres in (("anna", Role.MANAGER, ["SH-GYUMRI1"]),
                                    ("vard", Role.MANAGER, ["ER-AVAN"]),
                                    ("aram", Role.ANALYST, None)):  # fmt: skip
            create_user(s, name, PASSWORD, role=role, centres=centres, now=NOW[0])
    NOW[0] = T0 + timedelta(days=1)
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: NOW[0]
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def log_in(client: TestClient, who: str) -> None:
    token = csrf_of(client.get("/login").text)
    got = client.post("/login", data={"username": who, "password": PASSWORD, "csrf": token},
                      follow_redirects=False)  # fmt: skip
    assert got.status_code == 303, got.text


def answer(client: TestClient, **form: str) -> object:
    token = csrf_of(client.get("/dashboard?centre=SH-GYUMRI1&lang=en").text)
    data = {"centre": "SH-GYUMRI1", "month": "2026-10", "factor": "", "text": WORDS,
            "written_in": "hy", "csrf": token, **form}  # fmt: skip
    return client.post("/dashboard/answers", data=data, follow_redirects=False)


def unanswered_rows(client: TestClient) -> list[tuple[str, ...]]:
    page = client.get("/ministry?lang=en").text
    table = re.search(r'id="unanswered".*?(</table>|<p>Every low score)', page, re.S)
    assert table is not None, page
    return re.findall(
        r'<a href="/dashboard\?centre=([A-Z0-9-]+)#answers">[^<]*</a></th>\s*'
        r'<td data-label="Month">([^<]+)</td>\s*<td data-label="About">([^<]+)</td>\s*'
        r'<td class="num" data-label="Share">([^<]+)</td>',
        table[0],
    )


def test_a_low_month_is_listed_until_its_manager_answers_and_the_public_sees_it(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    log_in(client, "aram")
    rows = unanswered_rows(client)
    assert ("SH-GYUMRI1", "October 2026", "The score itself", "50 %") in rows
    assert ("SH-GYUMRI1", "October 2026", "Procedure and waiting", "0 %") in rows
    assert not any(r[0] == "ER-AVAN" for r in rows)  # 5 ratings: not shown, never judged
    assert not any(r[1] == "November 2026" for r in rows)  # not due yet, and not low
    client.post("/logout", data={"csrf": csrf_of(client.get("/dashboard").text)})

    log_in(client, "anna")
    page = client.get("/dashboard?centre=SH-GYUMRI1&lang=en").text
    waiting = re.search(r'id="waiting".*?</table>', page, re.S)
    assert waiting is not None and "October 2026" in waiting[0] and "50 %" in waiting[0]
    got = answer(client)
    assert got.status_code == 303  # type: ignore[attr-defined]
    assert got.headers["location"].endswith("answered=1#answers")  # type: ignore[attr-defined]
    page = client.get("/dashboard?centre=SH-GYUMRI1&lang=hy&answered=1").text
    assert "Պատասխանը հրապարակված է" in page and WORDS in page
    assert 'id="waiting"' not in page  # an answer about the score covers its factors too

    with sessions() as s:
        saved = s.scalars(select(Answer)).one()
        assert (saved.period_start.isoformat(), saved.period_end.isoformat()) == (
            "2026-10-01", "2026-10-31")  # fmt: skip
        assert saved.text == WORDS and saved.factor is None and saved.author == "anna"
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "answer.add")).one()
        assert audit.detail == {"centre": "SH-GYUMRI1", "month": "2026-10", "factor": None}

    public = TestClient(client.app, base_url="http://testserver")  # no login, no cookie
    for lang, month, said in (("hy", "Հոկտեմբեր 2026", "Դուք ասացիք, մենք արեցինք"),
                              ("en", "October 2026", "You said, we did"),
                              ("ru", "Октябрь 2026", "Вы сказали — мы сделали")):  # fmt: skip
        got = public.get(f"/centres/SH-GYUMRI1?lang={lang}")
        assert got.status_code == 200 and f'<html lang="{lang}">' in got.text
        october = re.search(rf'<h2 id="m-2026-10">{month}</h2>.*?</section>', got.text, re.S)
        assert october is not None, got.text
        assert said in october[0] and WORDS in october[0] and "50 %" in october[0]
        if lang != "hy":
            assert f'<p lang="hy">{WORDS}</p>' in october[0]  # said in its own language
        assert "anna" not in got.text  # who wrote it stays on the dashboard
        assert "set-cookie" not in got.headers

    data = public.get("/api/v1/open/answers").json()["answers"]
    assert data == [{"centre": "SH-GYUMRI1", "start": "2026-10-01", "end": "2026-10-31",
                     "factor": "", "text": WORDS, "lang": "hy",
                     "published": data[0]["published"]}]  # fmt: skip
    table = list(csv.DictReader(io.StringIO(public.get("/api/v1/open/answers?format=csv").text)))
    assert table[0]["text"] == WORDS and "author" not in table[0]

    client.post("/logout", data={"csrf": csrf_of(client.get("/dashboard").text)})
    log_in(client, "aram")
    assert not any(r[0] == "SH-GYUMRI1" and r[1] == "October 2026" for r in unanswered_rows(client))


def test_a_factor_answer_covers_its_factor_only(client: TestClient) -> None:
    log_in(client, "anna")
    assert answer(client, factor="procedure").status_code == 303  # type: ignore[attr-defined]
    page = client.get("/dashboard?centre=SH-GYUMRI1&lang=en").text
    waiting = re.search(r'id="waiting".*?</table>', page, re.S)
    assert waiting is not None
    assert "The score itself" in waiting[0] and "Procedure and waiting" not in waiting[0]
    public = client.get("/centres/SH-GYUMRI1?lang=en").text
    october = re.search(r'id="m-2026-10".*?</section>', public, re.S)
    assert october is not None
    assert "About: Procedure and waiting · 0 %" in october[0]
    assert "About the score: No answer yet." in october[0]


def test_the_public_page_shows_no_figure_from_too_few_ratings(client: TestClient) -> None:
    page = client.get("/centres/ER-AVAN?lang=en").text
    october = re.search(r'id="m-2026-10".*?</section>', page, re.S)
    assert october is not None
    assert "Not shown (fewer than 10)" in october[0] and "%" not in october[0]
    assert ">5<" not in october[0] and "&lt; 10" in october[0]  # not even its n
    assert "No answer yet" not in october[0]  # nothing shown, so nothing is low
    index = client.get("/centres?lang=ru").text
    assert 'href="/centres/ER-AVAN?lang=ru"' in index and "Ширак" in index


def test_refusals_are_pages_with_a_way_back(client: TestClient) -> None:
    public = client.get("/centres/NOWHERE?lang=en")
    assert public.status_code == 404 and 'href="/centres?lang=en"' in public.text
    long = client.get("/centres/" + "X" * 40 + "?lang=ru")
    assert long.status_code == 422 and long.headers["content-type"].startswith("text/html")
    assert 'href="/centres?lang=ru"' in long.text
    log_in(client, "anna")
    for form, status in (({"month": "2026-13"}, 422), ({"month": "2026-12"}, 422),
                         ({"month": "2025-01"}, 422), ({"factor": "mood"}, 422),
                         ({"written_in": "fr"}, 422),
                         ({"text": "   "}, 422), ({"centre": "ER-AVAN"}, 403),
                         ({"csrf": "forged"}, 403)):  # fmt: skip
        got = answer(client, **form)
        assert got.status_code == status, (form, got.text)  # type: ignore[attr-defined]
        assert 'href="/dashboard' in got.text, form  # type: ignore[attr-defined]
    too_long = answer(client, text="x" * 1001)
    assert too_long.status_code == 422 and "<html" in too_long.text  # type: ignore[attr-defined]
    for _ in range(20):
        assert answer(client).status_code == 303  # type: ignore[attr-defined]
    assert answer(client).status_code == 429  # type: ignore[attr-defined]
    NOW[0] += timedelta(days=1, minutes=1)
    assert answer(client).status_code == 303  # type: ignore[attr-defined]


def test_analysts_read_answers_but_cannot_write_them(client: TestClient) -> None:
    log_in(client, "aram")
    page = client.get("/dashboard?centre=SH-GYUMRI1&lang=en").text
    assert 'action="/dashboard/answers"' not in page and 'id="waiting"' in page
    token = csrf_of(page)
    got = client.post("/dashboard/answers", follow_redirects=False,
                      data={"centre": "SH-GYUMRI1", "month": "2026-10", "text": "x",
                            "csrf": token})  # fmt: skip
    assert got.status_code == 403


def test_the_ministrys_list_is_kept_a_minute_and_an_answer_forgets_it(
    client: TestClient, store: Store
) -> None:
    """The list reads only closed months, so each ministry page need not read their cells
    again: it is kept for a minute. An answer published here shows at once (above); a
    late press into a closed month shows within the minute."""
    log_in(client, "aram")
    assert not any(r[0] == "ER-AVAN" for r in unanswered_rows(client))  # 5 ratings: too few
    # Five more October ratings at Avan arrive late, from a unit back after weeks away:
    # ten now, all unhappy.
    late = [event(10 + i, device=AVAN, at=OCTOBER, score=1) for i in range(5)]
    store.process([msg(late, device=AVAN, at=NOW[0])])
    assert not any(r[0] == "ER-AVAN" for r in unanswered_rows(client))  # kept
    NOW[0] += timedelta(seconds=59)
    assert not any(r[0] == "ER-AVAN" for r in unanswered_rows(client))
    NOW[0] += timedelta(seconds=2)
    assert ("ER-AVAN", "October 2026", "The score itself", "0 %") in unanswered_rows(client)
    NOW[0] -= timedelta(hours=1)  # a clock set back: what was kept is not trusted
    store.process([msg(event(20, device=AVAN, at=OCTOBER, score=4), device=AVAN, at=NOW[0])])
    assert ("ER-AVAN", "October 2026", "The score itself", "9 %") in unanswered_rows(client)

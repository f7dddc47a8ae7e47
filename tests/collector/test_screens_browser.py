"""The dashboard and the ministry view as people see them, at 320 px (a phone) and
1280 px (a desk), in Armenian, English and Russian: no text overlaps another or is cut by its
chart or box, nothing scrolls sideways, no text under 12 px (see tests/screens.py;
screenshots under screenshots/). A month of presses in several centres, so every chart
has its labels; a real browser over both databases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role
from collector.edge.users import create_user
from collector.intake.store import Store
from collector.main import create_app
from tests.collector.helpers import T0, event, msg, served
from tests.screens import look, problems

PASSWORD = "correct horse battery"
DESKS = ("am-sh-gyumri1-d01", "am-sh-gyumri1-d02", "am-sh-gyumri1-d03", "am-er-avan-d01",
         "am-lo-vanadzor-d03", "am-gr-gavar-d01")  # fmt: skip


@pytest.fixture
def site(database_url: str, sessions: sessionmaker[Session], store: Store) -> Iterator[str]:
    for d, device in enumerate(DESKS):
        seq = 0
        batch = []
        for day in range(30):
            for k in range(1 + (day + d) % 5):
                seq += 1
                at = T0 - timedelta(days=day) + timedelta(minutes=7 * k)
                score = 1 + (day * 3 + k + d) % 4
                pressed = event(seq, device=device, at=at - timedelta(minutes=seq), score=score)
                batch.append(msg(pressed, device=device))
        store.process(batch)
    with sessions() as s, s.begin():
        create_user(s, "anna", PASSWORD, role=Role.MANAGER, centres=["SH-GYUMRI1"], now=T0,
                    display_name="Աննա Հովհաննիսյան")  # fmt: skip
        create_user(s, "aram", PASSWORD, role=Role.ANALYST, now=T0)
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with served(app) as url:
        yield url


def log_in(page: Any, url: str, who: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label(re.compile("Օգտանուն|Username")).fill(who)
    page.get_by_label(re.compile("Գաղտնաբառ|Password")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Մուտք|Log in")).click()
    page.wait_for_url(re.compile("/dashboard"))


@pytest.mark.parametrize("width", [320, 1280])
def test_the_dashboard_and_the_ministry_view_read_at_their_sizes(
    site: str, browser: Any, width: int
) -> None:
    found = {}
    for who, path in (("anna", "/dashboard"), ("aram", "/ministry")):
        ctx = browser.new_context(viewport={"width": width, "height": 800})
        page = ctx.new_page()
        try:
            log_in(page, site, who)
            for lang in ("hy", "en", "ru"):
                page.goto(f"{site}{path}?lang={lang}&start=2026-10-26&end=2026-11-24")
                name = f"{path.strip('/')}-{width}-{lang}"
                found[name] = problems(look(page, name))
        finally:
            ctx.close()
    bad = {k: v for k, v in found.items() if v}
    assert bad == {}, bad


def test_a_manager_answers_a_month_and_the_public_page_shows_it(site: str, browser: Any) -> None:
    """You said, we did, in a browser at 320 px: the manager sees the low month waiting,
    answers it by keyboard and mouse, and the centre's public page shows the answer
    beside the month's figures in Armenian, English and Russian, axe-clean and sound
    by geometry; the ministry no longer lists it."""
    from tests.collector.test_web_security_browser import CSP_PROBE, audit

    words = "Սպասասրահում ավելացվեց երկրորդ հերթագրման սարք, սպասումը կրճատվեց։"
    ctx = browser.new_context(viewport={"width": 320, "height": 800})
    ctx.add_init_script(CSP_PROBE)
    page = ctx.new_page()
    try:
        log_in(page, site, "anna")
        page.goto(f"{site}/dashboard?lang=en")
        waiting = page.locator("#waiting + .table-wrap table")
        assert "October 2026" in waiting.inner_text()
        assert problems(look(page, "dashboard-answers-320-en")) == {}
        page.get_by_label("Month").select_option("2026-10")
        page.get_by_label("About").select_option("")  # the score itself
        page.get_by_label("What was done").fill(words)
        page.get_by_label("Written in").select_option("hy")
        page.get_by_role("button", name="Publish").click()
        page.wait_for_url(re.compile("answered=1"))
        assert page.get_by_role("status").inner_text() == "The answer is published."
        assert words in page.locator("article.answer").first.inner_text()
        for lang, month in (("hy", "Հոկտեմբեր 2026"), ("en", "October 2026"),
                            ("ru", "Октябрь 2026")):  # fmt: skip
            public = ctx.new_page()  # the same browser; the page needs no login
            public.goto(f"{site}/centres/SH-GYUMRI1?lang={lang}")
            section = public.locator("section.month", has=public.get_by_role(
                "heading", name=month, exact=True))  # fmt: skip
            text = section.inner_text()
            assert words in text and "%" in text, (lang, text)
            audit(public, f"public {lang}")
            assert problems(look(public, f"public-centre-320-{lang}")) == {}
            public.goto(f"{site}/centres?lang={lang}")
            audit(public, f"public index {lang}")
            assert problems(look(public, f"public-index-320-{lang}")) == {}
            public.close()
    finally:
        ctx.close()

"""The visitors' phone page in headless Chromium at phone size: a rating by QR with its
factors, stored once, counted in the factor cells and received by the fake M&E IS; the
page works by keyboard alone, under its strict CSP, and axe-core finds no serious or
critical WCAG 2.2 AA violation in any of its states, in Armenian, English and Russian."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge import online
from collector.main import create_app
from collector.models import Event, FactorAggregate
from collector.outbound.forward import Forwarder
from simulator.me_is import FakeMeIs
from simulator.me_is_server import FakeMeIsServer, serve_registry
from tests.collector.helpers import DEV, T0, served
from tests.collector.test_web_security_browser import CSP_PROBE, audit, check_headers

SECRET = "phone-test-secret-0123456789abcdef"
#: Post a form again from the page itself (as the browser's Back and Send would).
RESEND = """([action, visit, lang]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  for (const [name, value] of [["visit", visit], ["score", "1"], ["lang", lang]]) {
    const input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    form.append(input);
  }
  document.body.append(form);
  form.submit();
}"""
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}


@pytest.fixture
def site(database_url: str, sessions: sessionmaker[Session]) -> Iterator[str]:
    app = create_app(Settings(database_url=database_url, secret_key=SECRET))
    app.state.gnahat.clock = lambda: T0 + timedelta(hours=2)
    with served(app) as url:
        yield url


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(**PHONE)
    ctx.add_init_script(CSP_PROBE)
    yield ctx
    ctx.close()


def card_url(site: str) -> str:
    """What the desk's printed QR code holds."""
    return f"{site}/r/{online.desk_token(SECRET, DEV)}"


def screen_url(site: str, lang: str) -> str:
    """What the QR on the desk's screen holds at the end of the visit: the card's address
    with the desk's current visit code."""
    code = online.desk_code(SECRET, DEV, T0 + timedelta(hours=2))
    return f"{card_url(site)}?c={code}&lang={lang}"


def test_a_visitor_rates_by_qr_on_a_phone_and_it_reaches_the_me_is(
    site: str, phone: Any, sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    page = phone.new_page()
    r = page.goto(screen_url(site, "en"))
    check_headers(r.headers, page=True)
    assert page.get_by_role("heading", level=1).inner_text() == "Rate the service"

    def tap(question: str, answer: str) -> None:
        group = page.get_by_role("group", name=question)
        group.get_by_role("radio", name=answer, exact=True).tap()

    tap("How would you rate the service you received today?", "Good")
    tap("Was your issue solved?", "Yes")
    tap("How was the employee's conduct?", "Very good")
    page.get_by_label("Which service did you come for?").select_option("EMPLOYMENT")
    visit = page.locator("input[name=visit]").get_attribute("value")
    page.get_by_role("button", name="Send").tap()
    page.wait_for_load_state("load")
    assert page.get_by_role("status").inner_text() == "Your rating was received."
    # The same form sent again (a replay of its visit token): refused, nothing doubled.
    replay = page.request.post(card_url(site), form={"visit": visit, "score": "3", "lang": "en"})
    assert replay.status == 409 and "already sent" in replay.text()
    with sessions() as s:
        events = s.scalars(select(Event).order_by(Event.seq)).all()
        assert [(e.type, e.channel, e.stream) for e in events] == [
            ("rating", "online", "web"), ("factors", "online", "web"),
        ]  # fmt: skip
        cells = {(f.factor, f.level): f.n for f in s.scalars(select(FactorAggregate))}
    assert cells == {("solved", 3): 1, ("conduct", 4): 1}
    fake = FakeMeIs(username="gnahat", password="pw")
    serve_registry(fake, sessions, tmp_path / "mapping.csv")
    with FakeMeIsServer(fake) as me_is:
        settings = Settings(
            database_url=database_url, forward_url=me_is.url, forward_username="gnahat",
            forward_password="pw", forward_mapping=tmp_path / "mapping.csv", forward_today=True,
        )  # fmt: skip
        fwd = Forwarder(sessions, settings, clock=lambda: T0 + timedelta(hours=3))
        assert fwd.run_once().outcomes == {"sent": 1}
        fwd.http.close()
    held = {k[0]: v for k, v in fake.held().items() if v != "0"}
    assert held == {
        "GNAHAT_R4_3": "1", "GNAHAT_ONLINE_R4_3": "1",
        "GNAHAT_F_SOLVED_3_3": "1", "GNAHAT_F_CONDUCT_4_4": "1",
    }  # fmt: skip


def test_the_phone_page_works_by_keyboard_alone(site: str, phone: Any) -> None:
    page = phone.new_page()
    page.goto(screen_url(site, "hy"))
    # Tab into the score group; arrows move within a radio group; Space chooses.
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "score":
            break
    assert page.evaluate("document.activeElement.name") == "score"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    checked = page.evaluate("document.querySelector('input[name=score]:checked').value")
    assert checked == "2"
    while page.evaluate("document.activeElement.tagName") != "BUTTON":
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_load_state("load")
    assert page.get_by_role("status").inner_text() == "Ձեր գնահատականը ստացվել է։"


@pytest.mark.parametrize("lang", ["hy", "en", "ru"])
def test_phone_page_states_pass_axe_at_phone_size(site: str, phone: Any, lang: str) -> None:
    page = phone.new_page()
    page.goto(card_url(site) + f"?lang={lang}")  # the printed card alone: asks for the code
    assert page.locator("input[name=code]").count() == 1
    audit(page, f"phone form asking for the visit code {lang}")
    page.goto(screen_url(site, lang))
    assert page.locator("input[name=code]").count() == 0
    audit(page, f"phone form {lang}")
    page.locator("button[type=submit]").click()  # no score: the browser's own check
    page.evaluate("document.querySelector('form').noValidate = true")
    page.locator("button[type=submit]").click()  # the server's: the form again, said
    page.wait_for_load_state("load")
    assert page.get_by_role("alert").count() == 1
    audit(page, f"phone form with an error {lang}")
    page.locator("input[name=score]").first.check()
    page.locator("button[type=submit]").click()
    page.wait_for_load_state("load")
    assert page.get_by_role("status").count() == 1
    audit(page, f"phone thanks {lang}")
    refused = page.goto(f"{site}/r/forged?lang={lang}")
    assert refused.status == 403 and page.get_by_role("alert").count() == 1
    audit(page, f"phone refusal {lang}")


@pytest.mark.parametrize("width", [320, 360])
def test_every_phone_page_state_reads_at_phone_widths(site: str, browser: Any, width: int) -> None:
    """Geometry, not only axe: every state of the phone page at 320 and 360 px in hy,
    en and ru — no overlap, no cut text, no sideways scroll, no text under 12 px, and
    the form's Send button reachable (see tests/screens.py; screenshots kept)."""
    from tests.screens import look, problems

    ctx = browser.new_context(viewport={"width": width, "height": 640}, is_mobile=True,
                              has_touch=True)  # fmt: skip
    page = ctx.new_page()
    found = {}
    try:
        for lang in ("hy", "en", "ru"):
            name = f"phone-{width}-{lang}"
            page.goto(card_url(site) + f"?lang={lang}")
            found[f"{name} card"] = problems(look(page, f"{name}-card"))
            page.goto(screen_url(site, lang))
            found[f"{name} form"] = problems(look(page, f"{name}-form"))
            page.evaluate("document.querySelector('form').noValidate = true")
            page.locator("button[type=submit]").click()
            page.wait_for_load_state("load")
            found[f"{name} error"] = problems(look(page, f"{name}-error"))
            page.locator("input[name=score]").first.check()
            visit = page.locator("input[name=visit]").get_attribute("value")
            page.locator("button[type=submit]").click()
            page.wait_for_load_state("load")
            found[f"{name} thanks"] = problems(look(page, f"{name}-thanks"))
            # The same form sent again: refused, with a way back to the desk's page.
            with page.expect_navigation():
                page.evaluate(RESEND, [card_url(site), visit, lang])
            assert page.get_by_role("alert").count() == 1
            found[f"{name} replayed"] = problems(look(page, f"{name}-replayed"))
            page.locator(".back a").click()
            page.wait_for_load_state("load")
            assert page.locator("form").count() == 1
            page.goto(f"{site}/r/forged?lang={lang}")
            found[f"{name} refused"] = problems(look(page, f"{name}-refused"))
            # No desk page to go back to: the way out is the centres' public pages.
            page.locator(".back a").click()
            page.wait_for_url(re.compile(rf"/centres\?lang={lang}$"))
            assert page.locator("h1").count() == 1
    finally:
        ctx.close()
    bad = {k: v for k, v in found.items() if v}
    assert bad == {}, bad

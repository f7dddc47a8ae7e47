"""The dashboard in a real browser (headless Chromium driven by Playwright), served by
uvicorn on a loopback port over a real database."""

from __future__ import annotations

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
from tests.collector.helpers import T0, event, msg
from tests.collector.helpers import served as serving

PASSWORD = "correct horse battery"


@pytest.fixture
def served(database_url: str, sessions: sessionmaker[Session], store: Store) -> Iterator[str]:
    for device, n in (("am-sh-gyumri1-d01", 7), ("am-sh-gyumri1-d02", 3)):
        store.process([msg(event(i, device=device), device=device) for i in range(1, n + 1)])
    with sessions() as s, s.begin():
        create_user(
            s, "anna", PASSWORD, role=Role.MANAGER, centres=["SH-GYUMRI1"], now=T0,
            display_name="Աննա Հովհաննիսյան",
        )  # fmt: skip
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with serving(app) as url:
        yield url


@pytest.fixture
def page(served: str, browser: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=served)
    yield context.new_page()
    context.close()


def test_a_manager_logs_in_reads_scores_notes_a_day_and_logs_out(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/dashboard")
    expect(page).to_have_url("/login")  # not logged in yet
    assert page.locator("html").get_attribute("lang") == "hy"
    page.get_by_label("Օգտանուն").fill("anna")  # inputs are reachable by their labels
    page.get_by_label("Գաղտնաբառ").fill(PASSWORD)
    page.get_by_role("button", name="Մուտք").click()
    expect(page).to_have_url("/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Տարածքային կենտրոն «Գյումրի 1»")
    services = page.get_by_role("table", name="Ծառայություններ")
    expect(services.get_by_role("row", name="Սոցիալական ապահովություն")).to_contain_text("7")
    staff = page.get_by_role("table", name="Աշխատակիցներ")
    expect(staff.get_by_role("row", name="Աշխատակից 02")).to_contain_text(
        "Բավարար գնահատականներ չկան"
    )
    page.get_by_label("Օր", exact=True).fill("2026-11-24")
    page.get_by_label("Նշում").fill("Հերթի գերծանրաբեռնվածություն")
    page.get_by_role("button", name="Պահպանել").click()
    expect(page.get_by_role("status")).to_have_text("Նշումը պահպանված է։")
    days = page.get_by_role("table", name="Օրեր")
    expect(days.get_by_role("row", name="2026-11-24")).to_contain_text(
        "Հերթի գերծանրաբեռնվածություն"
    )
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Gyumri 1 territorial centre")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url("/login")
    page.goto("/dashboard")
    expect(page).to_have_url("/login")


def test_a_wrong_password_is_announced(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/login?lang=en")
    page.get_by_label("Username").fill("anna")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

"""Every page in headless Chromium: the security headers, the pages working under their
strict CSP (no violation reported), axe-core finding no serious or critical WCAG 2.2 AA
violation, and nothing scrolling sideways at 320 CSS px, in Armenian and English —
the dashboard, the login page, the API docs, an API answer and the unit's kiosk."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role
from collector.edge.users import create_user
from collector.intake.store import Store
from collector.main import create_app
from collector.models import Alert, Centre
from tests.collector.helpers import T0, event, msg, served

PASSWORD = "correct horse battery"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
COMMON = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# Records what the browser refuses under the page's CSP (runs before any page script).
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture
def collector_url(
    sessions: sessionmaker[Session], store: Store, database_url: str
) -> Iterator[str]:

    for device, n in (("am-sh-gyumri1-d01", 9), ("am-sh-gyumri1-d02", 6)):
        store.process([msg(event(i, device=device), device=device) for i in range(1, n + 1)])
    with sessions() as s, s.begin():
        create_user(
            s, "anna", PASSWORD, role=Role.MANAGER, centres=["SH-GYUMRI1"], now=T0,
            display_name="Աննա Հովհաննիսյան",
        )  # fmt: skip
        create_user(s, "aram", PASSWORD, role=Role.ANALYST, now=T0)
        gyumri = s.scalar(select(Centre.id).where(Centre.code == "SH-GYUMRI1"))
        s.add(
            Alert(
                kind="unit_silent",
                subject="unit:am-sh-gyumri1-d03",
                centre_id=gyumri,
                severity="critical",
                state="open",
                detail={"device": "am-sh-gyumri1-d03", "centre": "SH-GYUMRI1", "desk": "03",
                        "minutes": 25, "last_seen": "2026-11-24 10:00"},
                opened_at=T0,
                seen_at=T0,
                notices=1,
            )
        )  # fmt: skip
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with served(app) as url:
        yield url


@pytest.fixture
def kiosk_url(mock_factory: Any, tmp_path: Path) -> Iterator[str]:
    from device.config import KioskConfig
    from device.kiosk import KioskServer
    from tests.device.helpers import clock, config, make_unit

    cfg = replace(config(tmp_path, cooldown_s=3), kiosk=KioskConfig(enabled=True, port=0))
    unit, _outbox, _fb = make_unit(cfg, mock_factory, clock())
    server = KioskServer(unit, cfg.kiosk).start()
    yield server.url.rstrip("/")
    server.stop()


def check_headers(headers: dict[str, str], *, page: bool) -> None:
    h = {k.lower(): v for k, v in headers.items()}
    for name, value in COMMON.items():
        assert h.get(name) == value, (name, h)
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "server" not in h, h.get("server", "")
    if page:
        assert h.get("cache-control") == "no-store"


def audit(page: Any, label: str) -> None:
    """No CSP violation, no serious/critical axe finding, no sideways scroll at 320 px."""
    from axe_playwright_python.sync_playwright import Axe

    page.wait_for_load_state("load")
    violations_csp = page.evaluate("window.__csp")
    assert violations_csp == [], (label, violations_csp)
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], (label, bad)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    wide = page.evaluate(
        """Array.from(document.querySelectorAll('body *'))
          .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
          .slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' '
            + Math.round(e.getBoundingClientRect().right))"""
    )
    assert width[0] <= width[1], (label, "scrolls sideways", width, wide)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 320, "height": 700})
    ctx.add_init_script(CSP_PROBE)
    yield ctx
    ctx.close()


@pytest.mark.parametrize("lang", ["hy", "en"])
def test_collector_pages_headers_csp_axe_and_reflow(
    collector_url: str, context: Any, lang: str
) -> None:
    page = context.new_page()
    r = page.goto(f"{collector_url}/login?lang={lang}")
    check_headers(r.headers, page=True)
    audit(page, f"login {lang}")
    page.get_by_label(re.compile("Օգտանուն|Username")).fill("anna")
    page.get_by_label(re.compile("Գաղտնաբառ|Password")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Մուտք|Log in")).click()
    page.wait_for_url(re.compile("/dashboard"))
    r = page.goto(f"{collector_url}/dashboard?lang={lang}")
    check_headers(r.headers, page=True)
    assert "Աշխատակից 01" in page.content()  # staff names are as registered
    audit(page, f"dashboard {lang}")
    # The API and its docs, served locally, under the same policy.
    api = context.request.get(f"{collector_url}/healthz")
    assert api.status == 200
    check_headers(api.headers, page=True)
    open_data = context.request.get(f"{collector_url}/api/v1/open/centres")
    check_headers(open_data.headers, page=False)  # public, cacheable: no personal data
    assert open_data.headers["cache-control"] == "public, max-age=60"
    r = page.goto(f"{collector_url}/docs")
    check_headers(r.headers, page=True)
    page.wait_for_selector(".swagger-ui .info", timeout=15000)  # Swagger UI ran
    assert page.evaluate("window.__csp") == []
    static = context.request.get(f"{collector_url}/static/gnahat.css")
    assert static.status == 200 and "no-store" not in static.headers.get("cache-control", "")


@pytest.mark.parametrize("lang", ["hy", "en", "ru"])
def test_kiosk_page_headers_csp_axe_and_reflow(kiosk_url: str, context: Any, lang: str) -> None:
    page = context.new_page()
    r = page.goto(f"{kiosk_url}/?lang={lang}")
    check_headers(r.headers, page=True)
    assert page.locator("main").count() == 1  # a main landmark
    page.wait_for_selector("#prompt:not(:empty)")  # no eval: the kiosk's CSP forbids it
    audit(page, f"kiosk {lang}")
    page.locator("#buttons button").last.click()  # counted: the factor questions follow
    page.wait_for_selector("#more:not([hidden])")
    page.locator(".choices button").first.click()
    audit(page, f"kiosk follow-up questions {lang}")


def log_in(page: Any, url: str, who: str, lang: str) -> None:
    page.goto(f"{url}/login?lang={lang}")
    page.get_by_label(re.compile("Օգտանուն|Username")).fill(who)
    page.get_by_label(re.compile("Գաղտնաբառ|Password")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Մուտք|Log in")).click()
    page.wait_for_url(re.compile("/dashboard"))


@pytest.mark.parametrize("lang", ["hy", "en"])
def test_manager_pictures_alert_and_the_ministry_view_in_the_browser(
    collector_url: str, context: Any, lang: str
) -> None:
    """A manager sees the pictures, switches period and language, acknowledges an alert
    with a comment; the ministry's analyst sees every centre; every page passes axe."""
    page = context.new_page()
    log_in(page, collector_url, "anna", lang)
    page.goto(f"{collector_url}/dashboard?lang={lang}&start=2026-11-18&end=2026-11-24")
    assert page.locator("svg.chart[role=img]").count() >= 3
    assert page.locator("#trend-t").count() == 1
    audit(page, f"dashboard with pictures and an alert {lang}")
    quick = re.compile("Վերջին 30 օր|Last 30 days")
    page.get_by_role("link", name=quick).click()
    page.wait_for_url(re.compile("start="))
    assert page.get_by_role("link", name=quick).get_attribute("aria-current") == "page"
    other = "English" if lang == "hy" else "Հայերեն"
    page.get_by_role("link", name=other).click()
    page.wait_for_load_state("load")
    switched = "en" if lang == "hy" else "hy"
    assert page.evaluate("document.documentElement.lang") == switched
    comment = page.get_by_label(re.compile("Մեկնաբանություն|Comment"))
    comment.fill("Տեխնիկը ճանապարհին է")
    page.get_by_role("button", name=re.compile("Հաստատել|Acknowledge")).click()
    page.wait_for_url(re.compile("acked=1"))
    assert page.get_by_role("status").count() == 1
    assert "Տեխնիկը ճանապարհին է" in page.content()
    audit(page, f"dashboard after the acknowledgement {switched}")
    page.get_by_role("button", name=re.compile("Ելք|Log out")).click()
    log_in(page, collector_url, "aram", lang)
    page.get_by_role("link", name=re.compile("Բոլոր կենտրոնները|All centres")).click()
    page.wait_for_url(re.compile("/ministry"))
    assert page.locator("#rankings").count() == 1 and page.locator("#too-few").count() == 1
    audit(page, f"ministry {lang}")

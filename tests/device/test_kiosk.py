"""The kiosk page on the unit: over HTTP, and touched in a real browser (headless Chromium)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from device.config import KioskConfig, parse_config
from device.kiosk import HEADER, KioskServer
from device.unit import Unit
from tests.device.helpers import DEV, clock, config, make_unit

RATE = {HEADER: "1"}


@pytest.fixture
def kiosk(mock_factory: Any, tmp_path: Path) -> Iterator[tuple[KioskServer, Unit, Any, Any]]:
    clk = clock()
    cfg = replace(config(tmp_path, cooldown_s=3), kiosk=KioskConfig(enabled=True, port=0))
    unit, outbox, _fb = make_unit(cfg, mock_factory, clk)
    server = KioskServer(unit, cfg.kiosk).start()
    yield server, unit, outbox, clk
    server.stop()


def test_a_touch_counts_like_a_button(kiosk: tuple[KioskServer, Unit, Any, Any]) -> None:
    server, unit, outbox, clk = kiosk
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/")
        assert page.status_code == 200 and '<html lang="hy">' in page.text
        assert page.text.count('data-score="') == 4 and "Շատ լավ" in page.text
        assert "Very good" in c.get("/?lang=en").text
        r = c.post("/press", json={"score": 4}, headers=RATE)
        assert r.json() == {"outcome": "counted"}
        assert outbox.depth == 1 and json.loads(outbox.pending(limit=1)[0][1])["score"] == 4
        assert c.post("/press", json={"score": 4}, headers=RATE).json() == {"outcome": "cooldown"}
        clk.advance(3000)
        assert c.post("/press", json={"score": 1}, headers=RATE).json() == {"outcome": "counted"}
        assert unit.acknowledged == 2 and unit.suppressed == 1
        assert c.get("/state").json() == {
            "mode": "free", "armed": False, "scale": 4, "phone_code": None,
        }  # fmt: skip


def test_only_the_kiosk_page_may_rate(kiosk: tuple[KioskServer, Unit, Any, Any]) -> None:
    server, _unit, outbox, _clk = kiosk
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/press", json={"score": 4}).status_code == 403  # no header: not our page
        evil = {**RATE, "Host": "evil.example:80"}  # a rebinding name for 127.0.0.1
        assert c.post("/press", json={"score": 4}, headers=evil).status_code == 403
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 403
        for bad in ({"score": 9}, {"score": "4"}, {"score": True}, {}, [4]):
            assert c.post("/press", json=bad, headers=RATE).status_code == 400
        assert c.post("/press", content=b"not json", headers=RATE).status_code == 400
        assert c.get("/nothing").status_code == 404
    assert outbox.depth == 0


def test_armed_mode_through_the_kiosk(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    cfg = replace(config(tmp_path, mode="armed"), kiosk=KioskConfig(enabled=True, port=0))
    unit, outbox, _fb = make_unit(cfg, mock_factory, clk)
    server = KioskServer(unit, cfg.kiosk).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            assert c.post("/press", json={"score": 3}, headers=RATE).json() == {
                "outcome": "not_armed"
            }
            unit.arm("queue")
            assert c.get("/state").json()["armed"] is True
            assert c.post("/press", json={"score": 3}, headers=RATE).json() == {
                "outcome": "counted"
            }
    finally:
        server.stop()
    assert outbox.depth == 1


def test_the_screen_shows_the_desk_code_the_collector_takes(
    mock_factory: Any, tmp_path: Path
) -> None:
    """The unit computes the desk code from its provisioned key: it is the code the
    collector expects at that minute, shown (and as a QR of the desk's phone page)
    only while the unit asks for a rating."""
    import segno

    from collector.edge import online

    secret = "kiosk-test-secret-0123456789abcdef"
    phone_url = f"https://gnahat.example/r/{online.desk_token(secret, DEV)}"
    desk = KioskConfig(enabled=True, port=0, phone_url=phone_url,
                       visit_key=online.visit_key(secret, DEV))  # fmt: skip
    clk = clock()
    unit, _outbox, _fb = make_unit(replace(config(tmp_path, mode="armed"), kiosk=desk),
                                   mock_factory, clk)  # fmt: skip
    server = KioskServer(unit, desk).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/state").json()["phone_code"] is None  # nobody served yet
            assert c.get("/phone.svg").status_code == 404
            assert 'id="phone" hidden' in c.get("/").text
            unit.arm("queue")
            for _ in range(2):
                expected = online.desk_code(secret, DEV, clk.now())
                assert c.get("/state").json()["phone_code"] == f"{expected[:3]} {expected[3:]}"
                svg = c.get("/phone.svg?c=000000")  # the current code's QR, whatever is asked
                assert svg.headers["content-type"] == "image/svg+xml"
                want = segno.make(f"{phone_url}?c={expected}", error="m")
                assert svg.content == _svg(want)
                clk.advance(60_000)  # a minute on: the next code
                unit.arm("queue")
    finally:
        server.stop()


def _svg(qr: Any) -> bytes:
    import io

    out = io.BytesIO()
    qr.save(out, kind="svg", scale=4, border=4, dark="#000", light="#fff", xmldecl=False)
    return out.getvalue()


def test_kiosk_configuration() -> None:
    cfg = parse_config(
        {
            "unit": {"device_id": DEV, "scale": 5},
            "pins": {"buttons": [], "leds": []},
            "kiosk": {"enabled": True, "language": "en"},
        }
    )
    assert cfg.kiosk == KioskConfig(enabled=True, language="en") and cfg.pins.buttons == ()
    from device.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"unit": {"device_id": DEV}, "kiosk": {"host": "0.0.0.0", "language": "fr"}})
    assert "kiosk.host" in str(err.value) and "kiosk.language" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"unit": {"device_id": DEV}, "kiosk": {"phone_url": "https://x/r/t"}})
    assert "phone_url and visit_key go together" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "unit": {"device_id": DEV},
                "kiosk": {"phone_url": "https://x/r/t", "visit_key": "not base32!"},
            }
        )
    assert "not a base32 key" in str(err.value)


@pytest.fixture
def browser_page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    yield page
    page.close()


def test_a_visitor_touches_the_screen(
    kiosk: tuple[KioskServer, Unit, Any, Any], browser_page: Any
) -> None:
    from playwright.sync_api import expect

    server, _unit, outbox, clk = kiosk
    page = browser_page
    page.goto(server.url)
    expect(page.locator("#prompt")).to_have_text("Խնդրում ենք գնահատել մեր ծառայությունը")
    page.get_by_role("button", name="4 — Շատ լավ").click()
    expect(page.get_by_role("status")).to_have_text("Շնորհակալություն")
    assert outbox.depth == 1
    # The factor questions follow; the visitor skips them.
    page.get_by_role("button", name="Բաց թողնել").click()
    expect(page.get_by_role("button", name="1 — Շատ վատ")).to_be_enabled()
    page.get_by_role("button", name="1 — Շատ վատ").click()  # inside the cooldown
    expect(page.get_by_role("status")).to_have_text("Չհաշվվեց։ Մի պահ սպասեք։")
    clk.advance(3000)
    expect(page.get_by_role("button", name="2 — Վատ")).to_be_enabled()
    page.keyboard.press("2")  # a keyboard (or switch access) works too
    expect(page.get_by_role("status")).to_have_text("Շնորհակալություն")
    page.keyboard.press("Escape")  # and leaves the questions
    expect(page.get_by_role("button", name="2 — Վատ")).to_be_enabled()
    assert [json.loads(p)["score"] for _s, p in outbox.pending(limit=10)] == [4, 2]
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rate our service")


def test_a_kiosk_assessment_with_factors_is_stored_once_and_reaches_the_me_is(
    kiosk: tuple[KioskServer, Unit, Any, Any], browser_page: Any, tmp_path: Path
) -> None:
    """A visitor rates, answers three of the four questions by keyboard alone in
    Russian, and sends: the unit keeps the rating and a linked factors event; the
    collector stores them once (a re-send is a duplicate), counts them in the factor
    cells, and the fake M&E IS receives them as data elements."""
    from datetime import UTC, datetime

    from playwright.sync_api import expect

    from collector.config import Settings
    from collector.db import make_engine, migrate, session_factory
    from collector.demo_data import SHIPPED
    from collector.intake.store import Received, Store
    from collector.models import FactorAggregate
    from collector.outbound.forward import Forwarder
    from collector.registry import import_dir
    from simulator.me_is import FakeMeIs
    from simulator.me_is_server import FakeMeIsServer, serve_registry

    server, _unit, outbox, _clk = kiosk
    page = browser_page
    page.goto(server.url + "?lang=ru")
    expect(page.get_by_role("heading", level=1)).to_have_text("Оцените наше обслуживание")
    page.keyboard.press("3")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Ещё несколько вопросов. Их можно пропустить."
    )

    # Keyboard only: Tab to an answer, Enter to choose it.
    def tab_to(button: Any) -> None:
        for _ in range(40):
            page.keyboard.press("Tab")
            if button.evaluate("b => b === document.activeElement"):
                return
        raise AssertionError("not reachable by Tab")

    def choose(question: str, answer: str) -> None:
        group = page.get_by_role("group", name=question)
        button = group.get_by_role("button", name=answer, exact=True)
        tab_to(button)
        page.keyboard.press("Enter")
        expect(button).to_have_attribute("aria-pressed", "true")

    choose("Как вы оцениваете порядок обслуживания и время ожидания?", "Плохо")
    choose("Решён ли ваш вопрос?", "Частично")
    choose("Как вы оцениваете отношение сотрудника?", "Очень хорошо")
    tab_to(page.get_by_role("button", name="Отправить"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Спасибо за ответы")
    pending = [json.loads(p) for _s, p in outbox.pending(limit=10)]
    assert [e["type"] for e in pending] == ["rating", "factors"]
    assert pending[1]["rating_seq"] == pending[0]["seq"]
    assert {k: pending[1].get(k) for k in ("procedure", "solved", "conduct", "competence")} == {
        "procedure": 2, "solved": "partly", "conduct": 4, "competence": None,
    }  # fmt: skip
    # The collector: what the unit publishes, stored once and counted.
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    migrate(url)
    sessions = session_factory(make_engine(url))
    with sessions() as s, s.begin():
        import_dir(s, SHIPPED, now=datetime(2026, 1, 1, tzinfo=UTC))
    store = Store(sessions)
    payloads = [p for _s, p in outbox.pending(limit=10)]
    received = datetime.fromisoformat(pending[1]["at"]).astimezone(UTC)
    topic = f"gnahat/v1/dev/{DEV}/event"
    first = store.process([Received(topic, b, received) for b in payloads])
    again = store.process([Received(topic, b, received) for b in payloads])
    assert (first.stored, again.stored, again.duplicates) == (2, 0, 2)
    with sessions() as s:
        cells = {
            (f.factor, f.level): f.n
            for f in s.scalars(__import__("sqlalchemy").select(FactorAggregate))
        }
    assert cells == {("procedure", 2): 1, ("solved", 2): 1, ("conduct", 4): 1}
    fake = FakeMeIs(username="gnahat", password="pw")
    serve_registry(fake, sessions, tmp_path / "mapping.csv")
    with FakeMeIsServer(fake) as me_is:
        settings = Settings(
            database_url=url, forward_url=me_is.url, forward_username="gnahat",
            forward_password="pw", forward_mapping=tmp_path / "mapping.csv", forward_today=True,
        )  # fmt: skip
        fwd = Forwarder(sessions, settings)
        assert fwd.run_once().outcomes == {"sent": 1}
        fwd.http.close()
    held = {k[0]: v for k, v in fake.held().items() if v != "0"}
    assert held["GNAHAT_F_PROCEDURE_4_2"] == "1" and held["GNAHAT_F_SOLVED_3_2"] == "1"
    assert held["GNAHAT_F_CONDUCT_4_4"] == "1" and held["GNAHAT_R4_3"] == "1"


def test_factors_are_checked_and_taken_once_after_a_counted_rating(
    kiosk: tuple[KioskServer, Unit, Any, Any],
) -> None:
    server, _unit, outbox, clk = kiosk
    with httpx.Client(base_url=server.url) as c:

        def factors(body: object) -> httpx.Response:
            return c.post("/factors", json=body, headers=RATE)

        assert factors({"answers": {"solved": "yes"}}).json() == {"outcome": "no_rating"}
        assert c.post("/press", json={"score": 3}, headers=RATE).json()["outcome"] == "counted"
        for bad in (
            {"answers": {"solved": "maybe"}},
            {"answers": {"procedure": 9}},
            {"answers": {"mood": 2}},
            {"answers": {}},
            {"answers": {"solved": "yes"}, "service": "no spaces"},
            {"score": 3},
        ):
            r = factors(bad)
            assert r.status_code == 400 and "bad answers" in r.json()["error"], bad
        assert outbox.depth == 1  # nothing kept from the refused ones
        assert factors({"answers": {"solved": "yes", "conduct": 4}}).json() == {
            "outcome": "counted"
        }
        assert factors({"answers": {"solved": "no"}}).json() == {"outcome": "no_rating"}  # once
        clk.advance(3000)  # past the cooldown: the next visitor
        assert c.post("/press", json={"score": 2}, headers=RATE).json()["outcome"] == "counted"
        clk.advance(61_000)  # a rating's factors come within 60 s, or not at all
        assert factors({"answers": {"solved": "no"}}).json() == {"outcome": "no_rating"}
    kept = [json.loads(p) for _s, p in outbox.pending(limit=10)]
    assert [e["type"] for e in kept] == ["rating", "factors", "rating"]
    assert kept[1]["rating_seq"] == kept[0]["seq"] and kept[1]["solved"] == "yes"

"""The kiosk at the sizes of the units' screens (800x480, 1024x600), in Armenian, English
and Russian, as a visitor sees it: nothing overlaps, nothing is cut, nothing scrolls
sideways, no text under 12 px, and what the visitor must touch is on the screen without
scrolling (see tests/screens.py). A real browser; screenshots under screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.edge import online
from device.config import KioskConfig
from device.kiosk import KioskServer
from device.unit import Unit
from tests.device.helpers import DEV, clock, config, make_unit
from tests.screens import look, problems

SIZES = [(800, 480), (1024, 600)]
LANGS = ["hy", "en", "ru"]


@pytest.fixture(params=[4, 5], ids=lambda n: f"scale{n}")
def desk(
    mock_factory: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[KioskServer, Unit]]:
    """A desk with the phone code on its screen (the longest layout: the QR beside), on
    the usual 4-point scale and the longest, 5."""
    secret = "kiosk-screens-secret-0123456789abcdef"
    kiosk = KioskConfig(enabled=True, port=0,
                        phone_url=f"https://gnahat.example/r/{online.desk_token(secret, DEV)}",
                        visit_key=online.visit_key(secret, DEV))  # fmt: skip
    cfg = config(tmp_path, mode="armed", scale=request.param)
    unit, _outbox, _fb = make_unit(replace(cfg, kiosk=kiosk), mock_factory, clock())
    server = KioskServer(unit, kiosk).start()
    unit.arm("queue")
    yield server, unit
    server.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_kiosk_state_fits_the_units_screen(
    desk: tuple[KioskServer, Unit], browser: Any, size: tuple[int, int]
) -> None:
    server, unit = desk
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    found = {}
    try:
        for lang in LANGS:
            page.goto(f"{server.url}?lang={lang}")
            page.wait_for_selector("#phone:not([hidden])")  # no eval: the kiosk's CSP forbids it
            name = f"kiosk-{width}x{height}-{unit.config.scale}-{lang}"
            found[f"{name} rate"] = problems(look(page, f"{name}-rate", ("#buttons button",)))
            unit.arm("queue")
            page.locator("#buttons button").last.click()
            page.wait_for_selector("#more:not([hidden])")
            page.locator(".choices button").first.click()
            found[f"{name} questions"] = problems(
                look(page, f"{name}-questions", (".questions .question:last-child .choices button",
                                                  "#send", "#skip"))
            )  # fmt: skip
            page.locator("#skip").click()
            page.wait_for_selector("#rate:not([hidden])")
            unit.arm("queue")
    finally:
        context.close()
    bad = {k: v for k, v in found.items() if v}
    assert bad == {}, bad

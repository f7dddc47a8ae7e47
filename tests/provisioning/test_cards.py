"""Printable desk cards: one A6 SVG per desk in the registry, in Armenian and English,
whose QR address opens that desk's rating page on the collector."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.edge.online import desk_of
from collector.main import create_app
from device.config import parse_config
from device.visitcode import DeskCode

SVG = "{http://www.w3.org/2000/svg}"


def test_cards_for_every_desk_open_that_desks_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url)
    env = tmp_path / "collector.env"
    env.write_text(
        f"GNAHAT_DATABASE_URL={url}\nGNAHAT_SECRET_KEY=cards-secret-0123456789abcdef0123\n"
        "GNAHAT_PUBLIC_URL=https://gnahat.example.am\n",
        encoding="utf-8",
    )
    subprocess.run(
        [sys.executable, "-m", "collector.cli", "--env-file", str(env), "registry", "import",
         "--demo"],
        check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "cards", "--env-file", str(env),
         "--out", str(tmp_path / "cards")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    files = sorted((tmp_path / "cards").glob("*.svg"))
    engine = make_engine(url)
    with session_factory(engine)() as s:
        from sqlalchemy import func, select

        from collector.models import Assignment

        assert len(files) == s.scalar(select(func.count()).select_from(Assignment)) > 5
    engine.dispose()
    assert f"{len(files)} cards" in out
    card = ET.parse(files[0]).getroot()
    assert (card.get("width"), card.get("height")) == ("105mm", "148mm")  # A6
    texts = ["".join(t.itertext()) for t in card.iter(f"{SVG}text")]
    assert "Գնահատեք սպասարկումը" in texts and "Rate the service" in texts
    assert any(t.startswith("Պատուհան ") and " · Desk " in t for t in texts)
    address = "".join(t for t, el in zip(texts, card.iter(f"{SVG}text"), strict=True)
                      if el.get("class") == "url")  # fmt: skip
    assert address.startswith("https://gnahat.example.am/r/")
    qr = card.find(f"{SVG}svg")
    assert qr is not None and float(qr.get("width", 0)) >= 55  # mm: readable at arm's length
    assert qr.find(f"{SVG}path") is not None
    token = address.rsplit("/", 1)[1]
    device = desk_of("cards-secret-0123456789abcdef0123", token)
    app = create_app(Settings(database_url=url, secret_key="cards-secret-0123456789abcdef0123"))
    noon = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Yerevan: open
    app.state.gnahat.clock = lambda: noon
    with TestClient(app) as c:
        page = c.get(f"/r/{token}", params={"lang": "en"})
        assert page.status_code == 200 and "Rate the service" in page.text
        assert device.startswith("am-")
        # Beside the card, the desk's kiosk file: a unit with a screen configured from it
        # shows the code the collector takes for this desk.
        kiosk_file = files[0].with_suffix(".kiosk.toml")
        assert kiosk_file.stat().st_mode & 0o777 == 0o600  # it holds the desk's key
        fragment = tomllib.loads(kiosk_file.read_text())
        cfg = parse_config({"unit": {"device_id": device}, **fragment})
        shown = DeskCode(cfg.kiosk.phone_url, cfg.kiosk.visit_key)
        assert cfg.kiosk.phone_url == address
        page = c.get(shown.url(noon).removeprefix("https://gnahat.example.am"))
        assert page.status_code == 200 and 'name="code"' not in page.text  # proven

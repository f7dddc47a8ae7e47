"""Printable A6 cards, one per desk, with the QR code of the desk's online rating page.

Each card is an SVG of 105 x 148 mm (print at 100 %, no scaling): the request in
Armenian and English, the centre and desk, the QR code (error correction M, a quiet
zone of four modules, at least 55 mm wide so an ordinary phone reads it at arm's
length), and the address itself for anyone who types it. The QR code is drawn by
``segno``; the address carries the desk token signed with the collector's
``GNAHAT_SECRET_KEY`` (:func:`collector.edge.online.desk_token`), so cards are made where the
collector's settings are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import segno
import tomli_w
from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.edge.online import desk_token, visit_key
from collector.models import Assignment, Centre, Device
from provisioning.ca import write_secret

WIDTH_MM, HEIGHT_MM = 105, 148
QR_MM = 62
FONT = "'Noto Sans Armenian', 'Noto Sans', 'DejaVu Sans', sans-serif"


@dataclass(frozen=True)
class Desk:
    device: str
    desk: str
    centre: str
    name_hy: str
    name_en: str


def desks(session: Session, now: datetime) -> list[Desk]:
    """Every desk with a unit assigned now (retired units left out), by centre and desk."""
    rows = session.execute(
        select(Assignment.device_id, Assignment.desk, Centre.code, Centre.name_hy, Centre.name_en)
        .join(Centre, Centre.id == Assignment.centre_id)
        .join(Device, Device.id == Assignment.device_id)
        .where(
            Assignment.valid_from <= now,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            (Device.retired_at.is_(None)) | (Device.retired_at > now),
        )
        .order_by(Centre.code, Assignment.desk)
    ).all()
    return [Desk(*row) for row in rows]


def _qr(url: str) -> tuple[str, int]:
    """The QR code's drawing (an SVG path in module units) and its size in modules."""
    code = segno.make(url, error="m", micro=False)
    buf = io.BytesIO()
    code.save(buf, kind="svg", scale=1, border=4, xmldecl=False, svgns=False, omitsize=True)
    svg = buf.getvalue().decode()
    path = svg[svg.index("<path") : svg.index("</svg>")]
    return path, int(code.symbol_size(scale=1, border=4)[0])


def _lines(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def card_svg(url: str, desk: Desk) -> str:
    """One desk's card."""
    path, modules = _qr(url)
    qx = (WIDTH_MM - QR_MM) / 2
    text: list[tuple[float, float, str, str, str]] = [
        # (y mm, size mm, weight, language, text)
        (14, 6.2, "700", "hy", "Գնահատեք սպասարկումը"),
        (21, 4.6, "700", "en", "Rate the service"),
        (29, 3.6, "400", "hy", desk.name_hy),
        (34, 3.4, "400", "en", desk.name_en),
        (40, 3.6, "700", "", f"Պատուհան {desk.desk} · Desk {desk.desk}"),
    ]
    y_after = 44 + QR_MM
    text += [
        (y_after + 4, 3.4, "400", "hy", "Սկանավորեք կոդը հեռախոսով։"),
        (y_after + 8.5, 3.4, "400", "hy", "Գնահատումն անանուն է։"),
        (y_after + 13.5, 3.2, "400", "en", "Scan the code with your phone."),
        (y_after + 17.5, 3.2, "400", "en", "Rating is anonymous."),
    ]
    url_lines = _lines(url, 52)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_MM}mm" height="{HEIGHT_MM}mm" '
        f'viewBox="0 0 {WIDTH_MM} {HEIGHT_MM}" role="img" '
        f'aria-label="{escape(desk.name_en)}, desk {escape(desk.desk)}: rate the service">',
        f'<rect width="{WIDTH_MM}" height="{HEIGHT_MM}" fill="#fff"/>',
        f'<rect x="2" y="2" width="{WIDTH_MM - 4}" height="{HEIGHT_MM - 4}" rx="4" fill="none" '
        'stroke="#0b3d91" stroke-width="0.8"/>',
    ]
    for y, size, weight, lang, line in text:
        lang_attr = f' xml:lang="{lang}"' if lang else ""
        parts.append(
            f'<text x="{WIDTH_MM / 2}" y="{y}" font-family="{FONT}" font-size="{size}" '
            f'font-weight="{weight}" text-anchor="middle" fill="#111"{lang_attr}>'
            f"{escape(line)}</text>"
        )
    parts.append(
        f'<svg x="{qx}" y="44" width="{QR_MM}" height="{QR_MM}" viewBox="0 0 {modules} {modules}" '
        f'shape-rendering="crispEdges">{path}</svg>'
    )
    for i, line in enumerate(url_lines):
        parts.append(
            f'<text x="{WIDTH_MM / 2}" y="{y_after + 24 + i * 3.2}" font-family="DejaVu Sans Mono, '
            f'monospace" font-size="2.4" text-anchor="middle" fill="#333" class="url">'
            f"{escape(line)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_cards(
    sessions: Any, secret: str, public_url: str, out: Path, now: datetime
) -> list[Path]:
    """One ``{centre}-{desk}.svg`` per desk in ``out``, and beside it the desk's
    ``{centre}-{desk}.kiosk.toml`` (owner-only: it holds the desk's code key) for a unit
    with a screen, which then shows the desk code; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    with sessions() as s:
        found = desks(s, now)
    written = []
    base = public_url.rstrip("/")
    for desk in found:
        url = f"{base}/r/{desk_token(secret, desk.device)}"
        file = out / f"{desk.centre}-{desk.desk}.svg"
        file.write_text(card_svg(url, desk), encoding="utf-8")
        written.append(file)
        kiosk = out / f"{desk.centre}-{desk.desk}.kiosk.toml"
        fragment = {"kiosk": {"phone_url": url, "visit_key": visit_key(secret, desk.device)}}
        head = f"# {desk.device}: merge into the [kiosk] section of the unit's config\n"
        write_secret(kiosk, (head + tomli_w.dumps(fragment)).encode())
        written.append(kiosk)
    return written

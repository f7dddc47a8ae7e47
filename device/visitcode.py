"""The desk code: what lets a visitor rate this visit on their own phone.

A phone rating counts only with a proof that a visit happened at the desk (the
collector's threat model, docs/threat-model.md). A unit with a screen shows one: six
digits and a QR of the desk's phone page carrying them, a new code every minute (RFC
6238 TOTP over the desk's key, which provisioning derives from the collector's secret;
``gnahat-provision cards`` writes it with the phone page's address). The collector
takes a code for a few minutes and for one rating, so a photo of the screen is worth at
most one rating, taken at the desk itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno

STEP_S = 60
DIGITS = 6


@dataclass(frozen=True)
class DeskCode:
    phone_url: str
    """The desk's phone page (``https://.../r/{desk token}``), as its printed card has it."""
    visit_key: str
    """The desk's base32 key."""

    def code(self, now: datetime) -> str:
        return str(pyotp.TOTP(self.visit_key, digits=DIGITS, interval=STEP_S).at(now))

    def url(self, now: datetime) -> str:
        return f"{self.phone_url}?c={self.code(now)}"

    def qr_svg(self, now: datetime) -> bytes:
        """The QR of :meth:`url` as an SVG (black on white, a quiet zone of four modules)."""
        out = io.BytesIO()
        segno.make(self.url(now), error="m").save(
            out, kind="svg", scale=4, border=4, dark="#000", light="#fff", xmldecl=False
        )
        return out.getvalue()


def valid_key(key: str) -> bool:
    """Whether ``key`` is a base32 key of at least 80 bits."""
    try:
        pyotp.TOTP(key).byte_secret()
    except Exception:
        return False
    return len(key.rstrip("=")) >= 16

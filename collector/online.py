"""The online channel: a visitor rates the encounter on their own phone, by a desk's QR code.

Every desk's printed card carries a **desk token** (signed with ``GNAHAT_SECRET_KEY``,
naming the desk's unit): it opens the rating page. Each page view gets a **visit
token** (signed, timed, with a random nonce and the browser's cookie id): a rating
is taken once per visit token, so a replayed form is refused, a forged one too, and
a page left open too long asks for a fresh scan. Where a queue system or a unit arms
the desk (``GNAHAT_ONLINE_REQUIRE_ARMED``), a rating is taken only inside a visit's
window.

Nobody is identified: the address and the browser cookie are kept only as keyed
hashes that change every day (``HMAC(secret, day | value)``), enough to count how
many ratings one client gives. More than a visitor would give (per browser a day,
per address an hour, twice in one armed window) is **stored and flagged**
(``ONLINE_SUSPECT``: left out of scores, nothing deleted); a flood far beyond that is
refused with 429 before anything is stored.

A rating goes through :class:`collector.store.Store` like a unit's: an event of the
desk's unit on its ``web`` stream (seqs allocated here, contiguous per unit), with
``channel: online``, and a linked ``factors`` event when factors were answered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from collector.models import Device, Flag, OnlineSubmission, OnlineWindow
from collector.store import BatchResult, Received, Store
from device import protocol as p

STREAM = "web"
DESK_SALT = "gnahat-desk-card"
VISIT_SALT = "gnahat-online-visit"


class Refused(Exception):
    """A rating the channel does not take; ``code`` names the reason for the page."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Limits:
    per_browser_day: int = 3
    per_address_hour: int = 20
    flood_factor: int = 5
    """Beyond ``flood_factor`` times a limit, refused (429) instead of flagged."""
    visit_ttl_s: int = 1800
    window_s: int = 900
    require_armed: bool = False


def desk_token(secret: str, device: str) -> str:
    """The token printed in a desk's QR code."""
    return URLSafeSerializer(secret, salt=DESK_SALT).dumps({"d": device})


def desk_of(secret: str, token: str) -> str:
    """The desk unit a card's token names; :class:`Refused` (``forged``) if it is not ours."""
    try:
        data = URLSafeSerializer(secret, salt=DESK_SALT).loads(token)
    except BadSignature:
        raise Refused("forged", 403) from None
    device = data.get("d") if isinstance(data, dict) else None
    if not isinstance(device, str) or not p.DEVICE_ID_RE.match(device):
        raise Refused("forged", 403)
    return device


def _visits(secret: str, now: datetime) -> URLSafeTimedSerializer:
    """Visit tokens stamped and aged by ``now`` (the collector's clock, injectable)."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(now.timestamp())

    return URLSafeTimedSerializer(secret, salt=VISIT_SALT, signer=Signer)


def visit_token(secret: str, device: str, browser: str, now: datetime) -> str:
    """A fresh visit token for one page view of ``device``'s page in ``browser``."""
    return _visits(secret, now).dumps({"d": device, "b": browser, "n": secrets.token_urlsafe(16)})


def read_visit(
    secret: str, token: str, device: str, browser: str, max_age_s: int, now: datetime
) -> str:
    """The nonce of a valid visit token for this desk and browser, else :class:`Refused`."""
    try:
        data = _visits(secret, now).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise Refused("expired", 410) from None
    except BadSignature:
        raise Refused("forged", 403) from None
    if not isinstance(data, dict) or data.get("d") != device or data.get("b") != browser:
        raise Refused("forged", 403)
    nonce = data.get("n")
    if not isinstance(nonce, str):
        raise Refused("forged", 403)
    return nonce


def client_key(secret: str, day: str, value: str) -> str:
    """A keyed hash of an address or cookie id that changes every day."""
    return hmac.new(secret.encode(), f"{day}|{value}".encode(), hashlib.sha256).hexdigest()[:32]


def arm(sessions: sessionmaker[Session], device: str, now: datetime, window_s: int) -> datetime:
    """Open a visit window at ``device``'s desk (a queue system calling the next visitor,
    or the unit); returns when it closes."""
    closes = now + timedelta(seconds=window_s)
    with sessions() as s, s.begin():
        if s.get(Device, device) is None:
            raise Refused("unknown_desk", 404)
        s.add(OnlineWindow(device=device, opened_at=now, closes_at=closes))
    return closes


@dataclass
class Answers:
    score: int
    factors: dict[str, Any]
    service: str | None = None


def submit(
    sessions: sessionmaker[Session],
    store: Store,
    *,
    secret: str,
    limits: Limits,
    device: str,
    nonce: str,
    answers: Answers,
    address: str,
    browser: str,
    now: datetime,
    tz: ZoneInfo,
) -> BatchResult:
    """Take one online rating (and its factors): stored once, flagged if it looks like
    ballot stuffing, or :class:`Refused`."""
    day = now.astimezone(tz).date().isoformat()
    address_key = client_key(secret, day, address)
    browser_key = client_key(secret, day, browser)
    with sessions() as s:
        dev = s.get(Device, device)
        if dev is None or (dev.retired_at is not None and dev.retired_at <= now):
            raise Refused("unknown_desk", 404)
        scale = dev.scale
        if not 1 <= answers.score <= scale:
            raise Refused("bad_answer", 400)
        if s.scalar(select(OnlineSubmission.id).where(OnlineSubmission.nonce == nonce)):
            raise Refused("replayed", 409)
        since_day = now - timedelta(days=1)
        by_browser = s.scalar(
            select(func.count()).where(
                OnlineSubmission.browser_key == browser_key,
                OnlineSubmission.created_at >= since_day,
            )
        )
        by_address = s.scalar(
            select(func.count()).where(
                OnlineSubmission.address_key == address_key,
                OnlineSubmission.created_at >= now - timedelta(hours=1),
            )
        )
        window = s.scalars(
            select(OnlineWindow)
            .where(
                OnlineWindow.device == device,
                OnlineWindow.opened_at <= now,
                OnlineWindow.closes_at >= now,
            )
            .order_by(OnlineWindow.opened_at.desc())
        ).first()
        in_window = 0
        if window is not None:
            in_window = int(
                s.scalar(
                    select(func.count()).where(
                        OnlineSubmission.device == device,
                        OnlineSubmission.created_at >= window.opened_at,
                        OnlineSubmission.created_at <= window.closes_at,
                    )
                )
                or 0
            )
    by_browser, by_address = int(by_browser or 0), int(by_address or 0)
    if (
        by_browser >= limits.per_browser_day * limits.flood_factor
        or by_address >= limits.per_address_hour * limits.flood_factor
    ):
        raise Refused("flood", 429)
    if limits.require_armed and window is None:
        raise Refused("not_armed", 409)
    suspect = (
        by_browser >= limits.per_browser_day
        or by_address >= limits.per_address_hour
        or in_window >= 1
    )
    flags = int(Flag.ONLINE_SUSPECT) if suspect else 0
    count = 2 if answers.factors else 1
    seq = _allocate(sessions, device, nonce, count, address_key, browser_key, flags, now)
    local = now.astimezone(tz).isoformat(timespec="milliseconds")
    common: dict[str, Any] = dict(
        device=device, stream=STREAM, at=local, clock_synced=True, boot="web", mono_ms=0,
        channel="online", service=answers.service,
    )  # fmt: skip
    events = [p.Event(type=p.EventType.RATING, seq=seq, score=answers.score, scale=scale,
                      **common)]  # fmt: skip
    if answers.factors:
        events.append(
            p.Event(
                type=p.EventType.FACTORS, seq=seq + 1, rating_seq=seq, scale=scale,
                answers=answers.factors, **common,
            )
        )  # fmt: skip
    message = Received(p.event_topic(device), p.encode_batch(events), now, flags=flags)
    return store.process([message])


def _allocate(
    sessions: sessionmaker[Session],
    device: str,
    nonce: str,
    count: int,
    address_key: str,
    browser_key: str,
    flags: int,
    now: datetime,
) -> int:
    """The next ``count`` seqs of the desk's web stream, recorded with the nonce (so a
    replay of the same visit is refused even when two arrive at once)."""
    for _ in range(20):
        try:
            with sessions() as s, s.begin():
                last = s.scalar(
                    select(func.max(OnlineSubmission.last_seq)).where(
                        OnlineSubmission.device == device
                    )
                )
                first = int(last or 0) + 1
                s.add(
                    OnlineSubmission(
                        device=device, nonce=nonce, first_seq=first, last_seq=first + count - 1,
                        created_at=now, address_key=address_key, browser_key=browser_key,
                        flags=flags,
                    )
                )  # fmt: skip
            return first
        except IntegrityError:
            with sessions() as s:
                if s.scalar(select(OnlineSubmission.id).where(OnlineSubmission.nonce == nonce)):
                    raise Refused("replayed", 409) from None
            continue  # another rating of this desk took the seq meanwhile: take the next
    raise Refused("busy", 503)

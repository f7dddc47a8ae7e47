"""The online channel: a visitor rates the encounter on their own phone, by a desk's QR code.

A score decides things about a named person, so a phone rating counts only where the
collector can tell that a visit happened (the threat model: docs/threat-model.md):

- Every desk's printed card carries a **desk token** (signed with ``GNAHAT_SECRET_KEY``,
  naming the desk's unit). It opens the rating page, and nothing more: a photo of the
  card is not a visit.
- A **visit proof** makes a rating count: the **desk code** the unit's screen shows
  (six digits and a QR, RFC 6238 TOTP over a per-desk key, a new code every minute,
  taken for ``GNAHAT_ONLINE_CODE_MAX_AGE_S``), or the one-time code of a **visit
  window** that the queue system (or a manager) opens when it calls the next visitor.
  One rating per code; the code must have been shown within the centre's opening
  hours, and the rating sent within ``GNAHAT_ONLINE_VISIT_TTL_S`` of it.
- ``GNAHAT_ONLINE_PROOF=visit`` (the default) refuses a rating without a proof;
  ``open`` takes it within opening hours, **flagged** ``ONLINE_UNVERIFIED`` (kept,
  counted apart, never in a score).
- Each page view gets a **visit token** (signed, timed, with a random nonce, the
  browser's cookie id and the proof it was opened with).

Nobody is identified: the address (an IPv6 address by its /64, what one phone on
mobile data rotates through) and the browser cookie are kept only as keyed hashes that
change every day. More than a visitor gives from one browser a day, or (without a
proof) from one address an hour, is **stored and flagged** ``ONLINE_SUSPECT``; a
browser far beyond that is refused (429) before anything is stored. A shared address
(a centre's guest Wi-Fi) is never refused: ratings with a proof are distinct visits.

A rating goes through :class:`collector.intake.store.Store` like a unit's: an event of the
desk's unit on its ``web`` stream (seqs allocated here, in the same transaction that
spends the proof and stores the rating) with ``channel: online``, tied to the employee
logged in at the desk by badge at that moment (else the desk's default employee).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
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

from collector import hours as hours_mod
from collector.intake.store import ORIGIN_ONLINE, WEB_STREAM, BatchResult, Received, Store
from collector.models import (
    Assignment,
    AuditLog,
    Centre,
    ChannelAggregate,
    Device,
    Event,
    Flag,
    OnlineCodeFailure,
    OnlineSubmission,
    OnlineWindow,
    StreamState,
)
from device import protocol as p

STREAM = WEB_STREAM
DESK_SALT = "gnahat-desk-card"
VISIT_SALT = "gnahat-online-visit"
#: ``visit``: a rating needs a proof of the visit; ``open``: without one it is kept,
#: flagged unverified, never in a score.
PROOF_MODES = ("visit", "open")
CODE_STEP_S = 60
CODE_DIGITS = 6


class Refused(Exception):
    """A rating the channel does not take; ``code`` names the reason for the page."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Limits:
    proof: str = "visit"
    per_browser_day: int = 3
    per_address_hour: int = 20
    flood_factor: int = 5
    """Beyond ``flood_factor`` times the browser limit, refused (429) instead of flagged."""
    visit_ttl_s: int = 900
    window_s: int = 900
    code_max_age_s: int = 300
    code_failures_hour: int = 10
    arm_interval_s: int = 60
    arms_per_hour: int = 120


@dataclass(frozen=True)
class Proof:
    """What showed that a visit happened: ``kind`` (``desk_code``, ``window``), the
    single-use ``key`` (one rating per proof) and when the visit was shown."""

    kind: str
    key: str
    at: datetime


# ------------------------------------------------------------ tokens


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


@dataclass(frozen=True)
class Visit:
    """A page view's token, read back: its nonce, the proof it was opened with, and the
    browser id it was given to."""

    nonce: str
    proof: Proof | None
    browser: str = ""


def visit_token(
    secret: str, device: str, browser: str, now: datetime, proof: Proof | None = None
) -> str:
    """A fresh visit token for one page view of ``device``'s page in ``browser``."""
    data: dict[str, Any] = {"d": device, "b": browser, "n": secrets.token_urlsafe(16)}
    if proof is not None:
        data["p"] = [proof.kind, proof.key, int(proof.at.timestamp())]
    return _visits(secret, now).dumps(data)


def read_visit(
    secret: str, token: str, device: str, browser: str | None, max_age_s: int, now: datetime
) -> Visit:
    """A valid visit token for this desk and browser, else :class:`Refused`.

    ``browser`` None: a browser that keeps no cookie at all (it sent none), which has no
    id but the one its page view was given; the token is then bound to that page view
    alone. Its nonce still allows one rating, and its proof is still the limit (a browser
    that sends a cookie must send the one the page was given)."""
    try:
        data = _visits(secret, now).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise Refused("expired", 410) from None
    except BadSignature:
        raise Refused("forged", 403) from None
    if not isinstance(data, dict) or data.get("d") != device:
        raise Refused("forged", 403)
    if browser is not None and data.get("b") != browser:
        raise Refused("forged", 403)
    nonce = data.get("n")
    if not isinstance(nonce, str):
        raise Refused("forged", 403)
    proof = None
    if isinstance(data.get("p"), list) and len(data["p"]) == 3:
        kind, key, at = data["p"]
        proof = Proof(str(kind), str(key), datetime.fromtimestamp(int(at), UTC))
    return Visit(nonce, proof, str(data.get("b") or ""))


# ------------------------------------------------------------ visit codes


def visit_key(secret: str, device: str) -> str:
    """The desk's code key (base32, as RFC 6238 apps take it): provisioned to the unit
    that shows the desk code; derived from the collector's secret, never stored."""
    digest = hmac.new(secret.encode(), f"gnahat-visit-key|{device}".encode(), "sha256")
    return base64.b32encode(digest.digest()[:20]).decode()


def _totp(secret: str, device: str) -> pyotp.TOTP:
    return pyotp.TOTP(visit_key(secret, device), digits=CODE_DIGITS, interval=CODE_STEP_S)


def desk_code(secret: str, device: str, at: datetime) -> str:
    """The code the desk's screen shows at ``at`` (what the unit computes itself)."""
    return str(_totp(secret, device).at(at))


def clean_code(raw: str) -> str | None:
    """Six ASCII digits from what a visitor typed (spaces and dashes dropped), else None."""
    code = raw.replace(" ", "").replace("-", "").replace("\u00a0", "")
    if len(code) == CODE_DIGITS and code.isascii() and code.isdigit():
        return code
    return None


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:40]


def address_of(address: str) -> str:
    """What one person controls: an IPv4 address, or an IPv6 address's /64 (a phone on
    mobile data rotates through the addresses of its /64)."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_key(secret: str, day: str, value: str) -> str:
    """A keyed hash of an address or cookie id that changes every day."""
    return hmac.new(secret.encode(), f"{day}|{value}".encode(), hashlib.sha256).hexdigest()[:32]


def prove(
    sessions: sessionmaker[Session],
    *,
    secret: str,
    limits: Limits,
    device: str,
    raw_code: str,
    address: str,
    now: datetime,
    tz: ZoneInfo,
) -> Proof:
    """The proof a code gives for a visit at ``device``: a visit window's one-time code
    or the desk code of the last ``code_max_age_s``; :class:`Refused` otherwise (a wrong
    code is counted against the address; too many an hour and it may try no more)."""
    address_key = client_key(secret, now.astimezone(tz).date().isoformat(), address_of(address))
    with sessions() as s:
        failures = s.scalar(
            select(func.count()).where(
                OnlineCodeFailure.address_key == address_key,
                OnlineCodeFailure.at >= now - timedelta(hours=1),
            )
        )
        if int(failures or 0) >= limits.code_failures_hour:
            raise Refused("code_limit", 429)
        code = clean_code(raw_code)
        if code is not None:
            window = s.scalars(
                select(OnlineWindow).where(
                    OnlineWindow.device == device,
                    OnlineWindow.code == code,
                    OnlineWindow.opened_at <= now,
                    OnlineWindow.closes_at >= now,
                )
            ).first()
            if window is not None:
                return Proof("window", _key("window", window.id), window.opened_at)
            totp = _totp(secret, device)
            step = totp.timecode(now)
            # One step ahead (a unit's clock a little fast) back to the oldest code taken.
            for k in range(step + 1, step - limits.code_max_age_s // CODE_STEP_S - 1, -1):
                if hmac.compare_digest(totp.generate_otp(k), code):
                    at = min(now, datetime.fromtimestamp(k * CODE_STEP_S, UTC))
                    return Proof("desk_code", _key("code", device, k), at)
    with sessions() as s, s.begin():
        s.add(OnlineCodeFailure(device=device, address_key=address_key, at=now))
    raise Refused("bad_code", 403)


# ------------------------------------------------------------ the desk


def desk_hours(session: Session, device: str, at: datetime) -> hours_mod.Hours | None:
    """Opening hours of the centre whose desk the unit is at ``at`` (None: no desk)."""
    row = session.execute(
        select(Centre.hours)
        .join(Assignment, Assignment.centre_id == Centre.id)
        .where(
            Assignment.device_id == device,
            Assignment.valid_from <= at,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > at),
        )
        .order_by(Assignment.valid_from.desc())
    ).first()
    if row is None:
        return None
    return hours_mod.parse(row[0])


def serving_badge(session: Session, device: str, now: datetime, tz: ZoneInfo) -> str | None:
    """The badge logged in at the desk's unit at ``now`` (its latest login or logout of
    the day, from the unit's own streams), as a press would carry it."""
    midnight = datetime.combine(now.astimezone(tz).date(), time(0), tz)
    last = session.execute(
        select(Event.type, Event.staff)
        .where(
            Event.device == device,
            Event.type.in_((p.EventType.STAFF_LOGIN.value, p.EventType.STAFF_LOGOUT.value)),
            Event.pressed_at >= midnight,
            Event.pressed_at <= now,
            Event.stream != STREAM,
        )
        .order_by(Event.pressed_at.desc(), Event.id.desc())
        .limit(1)
    ).first()
    if last is None or last[0] != p.EventType.STAFF_LOGIN.value:
        return None
    return str(last[1]) if last[1] else None


def arm(
    sessions: sessionmaker[Session],
    device: str,
    now: datetime,
    limits: Limits,
    *,
    actor: str,
    tz: ZoneInfo,
) -> tuple[datetime, str]:
    """Open a visit window at ``device``'s desk (a queue system calling the next
    visitor): returns when it closes and its one-time code. Refused while the centre is
    closed, sooner than ``arm_interval_s`` after the desk's last window, and beyond
    ``arms_per_hour`` windows an hour by one actor; every window is audited."""
    closes = now + timedelta(seconds=limits.window_s)
    with sessions() as s, s.begin():
        if s.get(Device, device) is None:
            raise Refused("unknown_desk", 404)
        hrs = desk_hours(s, device, now)
        if hrs is None:
            raise Refused("unknown_desk", 404)
        if not hrs.is_open(now.astimezone(tz)):
            raise Refused("closed_now", 409)
        last = s.scalar(
            select(func.max(OnlineWindow.opened_at)).where(OnlineWindow.device == device)
        )
        if last is not None and now - last < timedelta(seconds=limits.arm_interval_s):
            raise Refused("arm_too_soon", 429)
        by_actor = s.scalar(
            select(func.count()).where(
                OnlineWindow.armed_by == actor, OnlineWindow.opened_at >= now - timedelta(hours=1)
            )
        )
        if int(by_actor or 0) >= limits.arms_per_hour:
            raise Refused("arm_limit", 429)
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        s.add(OnlineWindow(device=device, opened_at=now, closes_at=closes, code=code,
                           armed_by=actor))  # fmt: skip
        s.add(AuditLog(at=now, actor=actor, action="online.arm",
                       detail={"device": device, "closes_at": closes.isoformat()}))  # fmt: skip
    return closes, code


# ------------------------------------------------------------ a rating


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
    visit: Visit,
    answers: Answers,
    address: str,
    browser: str,
    now: datetime,
    tz: ZoneInfo,
) -> BatchResult:
    """Take one online rating (and its factors): stored once with its proof spent in the
    same transaction, flagged if it looks like ballot stuffing, or :class:`Refused`."""
    day = now.astimezone(tz).date().isoformat()
    address_key = client_key(secret, day, address_of(address))
    browser_key = client_key(secret, day, browser)
    proof = visit.proof
    with sessions() as s:
        dev = s.get(Device, device)
        if dev is None or (dev.retired_at is not None and dev.retired_at <= now):
            raise Refused("unknown_desk", 404)
        scale = dev.scale
        if not 1 <= answers.score <= scale:
            raise Refused("bad_answer", 400)
        hrs = desk_hours(s, device, now)
        if hrs is None:
            raise Refused("unknown_desk", 404)
        if proof is None:
            if limits.proof != "open":
                raise Refused("code_needed", 409)
            if not hrs.is_open(now.astimezone(tz)):
                raise Refused("closed_now", 409)
        else:
            if not hrs.is_open(proof.at.astimezone(tz)):
                raise Refused("closed_now", 409)
            if now - proof.at > timedelta(seconds=limits.visit_ttl_s):
                raise Refused("expired", 410)
        key = proof.key if proof is not None else _key("card", visit.nonce)
        if s.scalar(select(OnlineSubmission.id).where(OnlineSubmission.nonce == key)):
            raise Refused("replayed", 409)
        by_browser = int(
            s.scalar(
                select(func.count()).where(
                    OnlineSubmission.browser_key == browser_key,
                    OnlineSubmission.created_at >= now - timedelta(days=1),
                )
            )
            or 0
        )
        by_address = 0
        if proof is None:  # a proven visit is a visit, whoever shares its address
            by_address = int(
                s.scalar(
                    select(func.count()).where(
                        OnlineSubmission.address_key == address_key,
                        OnlineSubmission.proof == "card",
                        OnlineSubmission.created_at >= now - timedelta(hours=1),
                    )
                )
                or 0
            )
        staff = serving_badge(s, device, now, tz)
    if by_browser >= limits.per_browser_day * limits.flood_factor:
        raise Refused("flood", 429)
    flags = 0
    if by_browser >= limits.per_browser_day or by_address >= limits.per_address_hour:
        flags |= Flag.ONLINE_SUSPECT
    if proof is None:
        flags |= Flag.ONLINE_UNVERIFIED
    local = now.astimezone(tz).isoformat(timespec="milliseconds")
    common: dict[str, Any] = dict(
        device=device, stream=STREAM, at=local, clock_synced=True, boot="web", mono_ms=0,
        channel="online", service=answers.service, scale=scale,
    )  # fmt: skip
    count = 2 if answers.factors else 1
    for _ in range(20):
        try:
            with store.transaction() as s:
                seq = _next_seq(s, device)
                s.add(
                    OnlineSubmission(
                        device=device, nonce=key, first_seq=seq, last_seq=seq + count - 1,
                        created_at=now, address_key=address_key, browser_key=browser_key,
                        flags=int(flags), proof=proof.kind if proof else "card",
                    )
                )  # fmt: skip
                s.flush()  # a replay of the same proof stops here, before anything is stored
                events = [p.Event(type=p.EventType.RATING, seq=seq, score=answers.score,
                                  staff=staff, **common)]  # fmt: skip
                if answers.factors:
                    events.append(
                        p.Event(type=p.EventType.FACTORS, seq=seq + 1, rating_seq=seq,
                                answers=answers.factors, staff=staff, **common)
                    )  # fmt: skip
                message = Received(p.event_topic(device), p.encode_batch(events), now,
                                   flags=int(flags), origin=ORIGIN_ONLINE)  # fmt: skip
                result = store.process_in(s, [message])
                if result.stored != count:  # not stored (e.g. no desk): nothing is kept
                    raise _NotStored(result)
            return result
        except _NotStored:
            raise Refused("unknown_desk", 404) from None
        except IntegrityError:
            with sessions() as s:
                if s.scalar(select(OnlineSubmission.id).where(OnlineSubmission.nonce == key)):
                    raise Refused("replayed", 409) from None
            continue  # another rating of this desk took the seq meanwhile: take the next
    raise Refused("busy", 503)


class _NotStored(Exception):
    def __init__(self, result: BatchResult) -> None:
        super().__init__(dict(result.quarantined))


def _next_seq(session: Session, device: str) -> int:
    last = session.scalar(
        select(func.max(OnlineSubmission.last_seq)).where(OnlineSubmission.device == device)
    )
    kept = session.scalar(
        select(StreamState.max_seq).where(
            StreamState.device == device, StreamState.stream == STREAM
        )
    )
    return max(int(last or 0), int(kept or 0)) + 1


# ------------------------------------------------------------ what the ministry sees


def phone_shares(
    session: Session, first: date, last: date, totals: dict[int, int] | None = None
) -> dict[int, dict[str, int]]:
    """Per centre over the days: ratings counted in all, counted by phone, and phone
    ratings left out (flagged, unverified): so a centre whose scores lean on its phone
    channel stands out beside them.

    ``totals``: each centre's counted ratings over the same days, when the caller has
    them (the ministry page reads them for its rankings); then only the phone's cells
    are read, by their own index, not every channel's."""
    out: dict[int, dict[str, int]] = {}
    if totals is not None:
        for centre_id, n in totals.items():
            out[centre_id] = {"n": n, "online": 0, "online_excluded": 0}
    a = ChannelAggregate
    query = select(a.centre_id, a.channel, func.sum(a.n), func.sum(a.excluded)).where(
        a.day >= first, a.day <= last
    )
    if totals is not None:
        query = query.where(a.channel == "online")
    for centre_id, channel, n, excluded in session.execute(query.group_by(a.centre_id, a.channel)):
        row = out.setdefault(centre_id, {"n": 0, "online": 0, "online_excluded": 0})
        if totals is None:
            row["n"] += int(n or 0)
        if channel == "online":
            row["online"] += int(n or 0)
            row["online_excluded"] += int(excluded or 0)
    return out

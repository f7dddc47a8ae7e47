"""Alerts: managers and the ministry hear about problems first.

Rules are data: each kind has default parameters (:data:`DEFAULTS`), which an
``alert_rules`` row may override for every centre or for one. A round evaluates every
rule against the database and reconciles what it finds with the alerts on record:

- a new finding opens an alert (audited) and notifies its recipients;
- an alert whose condition still holds is re-notified with backoff
  (``alert_renotify_s`` doubling up to ``alert_renotify_max_s``) until someone
  acknowledges it with a comment (audited);
- an alert whose condition cleared closes by itself (audited), and those who heard of
  it hear that it closed.

Notices go through the shared outbox (:mod:`collector.outbound.outbox`): email over SMTP, or a
webhook signed by the Standard Webhooks scheme (:func:`collector.outbound.webhooks.post_signed`),
each retried with backoff and parked with a reason. Recipients choose centres and a
lowest severity, and Armenian or English.

Kinds: ``unit_silent`` (no message from a unit for N minutes of opening time: also a
unit unplugged in the busy hour), ``unit_backlog`` (a unit's outbox is deep or old),
``unit_clock`` (a unit reports an unsynced clock), ``after_login`` (ratings within
seconds of a staff login on the same unit), ``dissatisfied`` (the dissatisfied
share of a centre or a centre's service over a rolling window is above a threshold by
its 95 % interval, with enough ratings), ``drop`` (a centre's CSAT fell against its own
history, intervals apart) and ``bursts`` (many presses left out as bursts: worth a look).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector import hours as hours_mod
from collector.config import Settings
from collector.models import (
    Alert,
    AlertNotification,
    AlertRecipient,
    AlertRule,
    Assignment,
    AuditLog,
    Centre,
    DailyAggregate,
    Device,
    DeviceState,
    Event,
    ReportDelivery,
    Service,
)
from collector.outbound import mail, outbox, reports
from collector.reading.scores import wilson

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
OPEN, ACKED, CLOSED = "open", "acknowledged", "closed"
ACTIVE = (OPEN, ACKED)
DEFAULTS: dict[str, dict[str, Any]] = {
    "unit_silent": {"minutes": 20, "severity": "critical", "never_heard": True},
    "unit_backlog": {"queue_depth": 50, "oldest_unacked_s": 900, "severity": "warning"},
    "unit_clock": {"severity": "warning"},
    "dissatisfied": {"days": 7, "threshold": 0.3, "min_n": 30, "severity": "warning"},
    "drop": {
        "recent_days": 7,
        "history_days": 28,
        "min_drop": 0.15,
        "min_n": 30,
        "severity": "warning",
    },
    "bursts": {"excluded": 10, "severity": "info"},
    "after_login": {"seconds": 20, "count": 5, "severity": "info"},
}
#: A health report older than this says nothing about now.
HEALTH_FRESH = timedelta(hours=1)
TZ = ZoneInfo("Asia/Yerevan")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "unit_silent": "Unit {device} at {centre} (desk {desk}) has been silent for {minutes} "
        "minutes of opening time; last heard {last_seen}.",
        "unit_never_heard": "Unit {device} at {centre} (desk {desk}) has never been heard: "
        "silent for {minutes} minutes of opening time since it was placed there "
        "({last_seen}). Is it plugged in and provisioned?",
        "unit_backlog": "Unit {device} at {centre} (desk {desk}) holds {queue_depth} unsent "
        "ratings, the oldest {oldest_min} minutes old.",
        "unit_clock": "Unit {device} at {centre} (desk {desk}) reports that its clock is not "
        "synchronised.",
        "dissatisfied": "{where}: {share} of {n} ratings in the last {days} days are "
        "dissatisfied (95 % interval {low}-{high}; threshold {threshold}).",
        "drop": "{where}: satisfaction fell to {recent} over the last {recent_days} days "
        "from {history} before (95 % intervals do not overlap).",
        "bursts": "{where}: {excluded} presses were left out as bursts today: worth a look.",
        "after_login": "Unit {device} at {centre} (desk {desk}): {count} ratings today came "
        "within {seconds} s of a staff login, with no armed window: worth a look.",
        "opened": "Opened",
        "reminder": "Still open",
        "closed": "Closed: the condition cleared",
        "subject": "[Gnahat] {state}: {text}",
        "ack": "Acknowledge it on the dashboard, with a comment.",
    },
    "hy": {
        "unit_silent": "{centre} կենտրոնի {desk} սեղանի {device} սարքը լռում է աշխատանքային "
        "ժամերի {minutes} րոպե․ վերջին կապը՝ {last_seen}։",
        "unit_never_heard": "{centre} կենտրոնի {desk} սեղանի {device} սարքից կապ երբեք չի "
        "եղել․ այն լռում է աշխատանքային ժամերի {minutes} րոպե՝ տեղադրվելուց ի վեր "
        "({last_seen})։ Արդյո՞ք այն միացված և կարգավորված է։",
        "unit_backlog": "{centre} կենտրոնի {desk} սեղանի {device} սարքում կա {queue_depth} "
        "չուղարկված գնահատական, ամենահինը՝ {oldest_min} րոպե։",
        "unit_clock": "{centre} կենտրոնի {desk} սեղանի {device} սարքի ժամացույցը ճշգրտված չէ։",
        "dissatisfied": "{where}․ վերջին {days} օրվա {n} գնահատականից {share}-ը "
        "դժգոհ են (95 % միջակայք {low}-{high}, շեմ {threshold})։",
        "drop": "{where}․ գոհունակությունը վերջին {recent_days} օրում իջել է {recent}՝ "
        "նախկին {history}-ից (95 % միջակայքերը չեն հատվում)։",
        "bursts": "{where}․ այսօր {excluded} սեղմում հաշվի չի առնվել որպես շարք․ արժե ստուգել։",
        "opened": "Բացված է",
        "reminder": "Դեռ բաց է",
        "closed": "Փակված է․ պայմանն այլևս չկա",
        "subject": "[Գնահատ] {state}․ {text}",
        "ack": "Հաստատեք այն վահանակում՝ մեկնաբանությամբ։",
    },
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    centre_id: int | None
    severity: str
    detail: dict[str, Any]


def render(kind: str, detail: dict[str, Any], lang: str) -> str:
    texts = TEXTS.get(lang, TEXTS["en"])
    values = dict(detail)
    if kind == "unit_silent" and detail.get("never"):
        kind = "unit_never_heard"
    if lang == "hy" and "where_hy" in detail:
        values["where"] = detail["where_hy"]
    try:
        return texts[kind].format(**values)
    except (KeyError, IndexError):
        return f"{kind}: {detail}"


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


# ---------------------------------------------------------------- rules


def rule_params(session: Session) -> Callable[[str, int | None], dict[str, Any]]:
    """Parameters of a kind for a centre: defaults, then the all-centres row, then the
    centre's own."""
    rows = list(session.scalars(select(AlertRule)))
    general = {r.kind: r.params for r in rows if r.centre_id is None}
    own: dict[tuple[str, int | None], dict[str, Any]] = {
        (r.kind, r.centre_id): r.params for r in rows if r.centre_id is not None
    }

    def get(kind: str, centre_id: int | None) -> dict[str, Any]:
        return {
            **DEFAULTS[kind],
            **general.get(kind, {}),
            **own.get((kind, centre_id), {}),
        }

    return get


def set_rule(
    session: Session, kind: str, params: dict[str, Any], centre_id: int | None, now: datetime
) -> None:
    if kind not in DEFAULTS:
        raise ValueError(f"unknown rule {kind!r} (known: {', '.join(DEFAULTS)})")
    unknown = set(params) - set(DEFAULTS[kind]) - {"enabled"}
    if unknown:
        raise ValueError(f"{kind} has no parameter {', '.join(sorted(unknown))}")
    if "severity" in params and params["severity"] not in SEVERITIES:
        raise ValueError(f"severity is one of {', '.join(SEVERITIES)}")
    row = session.scalars(
        select(AlertRule).where(AlertRule.kind == kind, AlertRule.centre_id.is_(centre_id))
        if centre_id is None
        else select(AlertRule).where(AlertRule.kind == kind, AlertRule.centre_id == centre_id)
    ).first()
    if row is None:
        session.add(AlertRule(kind=kind, centre_id=centre_id, params=params, updated_at=now))
    else:
        row.params = {**row.params, **params}
        row.updated_at = now


def evaluate(
    session: Session, now: datetime, business_now: datetime | None = None
) -> list[Finding]:
    """Every condition that holds at ``now``: the units' silence against the time the
    collector stamps messages with, the scores' windows against the business day
    (``business_now``; the same clock in production, a simulated one in the demo)."""
    params = rule_params(session)
    centres = {c.id: c for c in session.scalars(select(Centre))}
    out: list[Finding] = []
    out += _unit_findings(session, now, centres, params)
    out += _score_findings(session, business_now or now, centres, params)
    out += _login_findings(session, business_now or now, params)
    return out


def _login_findings(
    session: Session, now: datetime, params: Callable[[str, int | None], dict[str, Any]]
) -> list[Finding]:
    """Ratings that follow a staff login on the same unit within seconds, today: staff
    trying the buttons, or rating themselves. (A unit in armed mode refuses presses
    nobody armed; these come from units without an armed window.)"""
    today = now.astimezone(TZ).date()
    rows = session.execute(
        select(Event.device, Event.type, Event.pressed_at, Event.centre_id)
        .where(
            Event.day == today,
            Event.type.in_(["rating", "staff_login"]),
            Event.centre_id.is_not(None),
        )
        .order_by(Event.device, Event.pressed_at)
    ).all()
    desks = dict(
        session.execute(
            select(Assignment.device_id, Assignment.desk).where(
                Assignment.valid_from <= now,
                (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            )
        ).all()
    )
    codes = dict(session.execute(select(Centre.id, Centre.code)).all())
    counts: dict[str, int] = defaultdict(int)
    where: dict[str, int] = {}
    last_login: dict[str, datetime] = {}
    for device, kind, at, centre_id in rows:
        if kind == "staff_login":
            last_login[device] = at
            continue
        p = params("after_login", centre_id)
        login = last_login.get(device)
        near = login is not None and 0 <= (at - login).total_seconds() <= float(p["seconds"])
        if near and centre_id is not None:
            counts[device] += 1
            where[device] = centre_id
    out = []
    for device, n in counts.items():
        cid = where[device]
        p = params("after_login", cid)
        if p.get("enabled", True) and n >= int(p["count"]):
            out.append(
                Finding(
                    "after_login",
                    f"unit:{device}",
                    cid,
                    p["severity"],
                    {
                        "device": device,
                        "centre": codes.get(cid, ""),
                        "desk": desks.get(device, "?"),
                        "count": n,
                        "seconds": int(p["seconds"]),
                    },
                )
            )
    return out


def _unit_findings(
    session: Session,
    now: datetime,
    centres: dict[int, Centre],
    params: Callable[[str, int | None], dict[str, Any]],
) -> list[Finding]:
    out: list[Finding] = []
    current = session.execute(
        select(
            Assignment.device_id,
            Assignment.centre_id,
            Assignment.desk,
            Assignment.valid_from,
            Device.created_at,
        )
        .join(Device, Device.id == Assignment.device_id)
        .where(
            Assignment.valid_from <= now,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            (Device.retired_at.is_(None)) | (Device.retired_at > now),
        )
    ).all()
    states = {s.device: s for s in session.scalars(select(DeviceState))}
    local_now = now.astimezone(TZ)
    for device, centre_id, desk, assigned_at, created_at in current:
        centre = centres[centre_id]
        state = states.get(device)
        base = {"device": device, "centre": centre.code, "desk": desk}
        p = params("unit_silent", centre_id)
        heard = state.last_seen if state is not None else None
        # Never heard: silent since it stood at the desk (its assignment, or its
        # registration if later): an alert from the first day, not never.
        since = heard or max(assigned_at, created_at)
        if p.get("enabled", True) and (heard is not None or p.get("never_heard", True)):
            hrs = hours_mod.parse(centre.hours)
            silent = hrs.open_minutes_between(since.astimezone(TZ), local_now)
            if silent >= float(p["minutes"]):
                detail = {
                    **base,
                    "minutes": int(silent),
                    "last_seen": since.astimezone(TZ).strftime("%Y-%m-%d %H:%M"),
                }
                if heard is None:
                    detail["never"] = True
                out.append(Finding("unit_silent", f"unit:{device}", centre_id, p["severity"],
                                   detail))  # fmt: skip
        health = state.health if state is not None else None
        fresh = (
            state is not None
            and state.health_at is not None
            and (now - state.health_at <= HEALTH_FRESH)
        )
        if not (health and fresh):
            continue
        p = params("unit_backlog", centre_id)
        depth = int(health.get("queue_depth") or 0)
        oldest = float(health.get("oldest_unacked_s") or 0)
        if p.get("enabled", True) and (
            depth >= int(p["queue_depth"]) or oldest >= float(p["oldest_unacked_s"])
        ):
            out.append(
                Finding(
                    "unit_backlog",
                    f"unit:{device}",
                    centre_id,
                    p["severity"],
                    {**base, "queue_depth": depth, "oldest_min": int(oldest // 60)},
                )
            )
        p = params("unit_clock", centre_id)
        if p.get("enabled", True) and health.get("clock_synced") is False:
            out.append(Finding("unit_clock", f"unit:{device}", centre_id, p["severity"], base))
    return out


def _bottom(levels: list[int], scale: int) -> int:
    """Dissatisfied: the bottom two levels of a 4- or 5-point scale, the bottom of a 3."""
    return sum(levels[: 1 if scale <= 3 else 2])


def _score_findings(
    session: Session,
    now: datetime,
    centres: dict[int, Centre],
    params: Callable[[str, int | None], dict[str, Any]],
) -> list[Finding]:
    out: list[Finding] = []
    today = now.astimezone(TZ).date()
    longest = max(
        int(params("dissatisfied", None)["days"]),
        int(params("drop", None)["recent_days"]) + int(params("drop", None)["history_days"]),
    )
    for cid in centres:
        longest = max(
            longest,
            int(params("dissatisfied", cid)["days"]),
            int(params("drop", cid)["recent_days"]) + int(params("drop", cid)["history_days"]),
        )
    a = DailyAggregate
    rows = session.execute(
        select(
            a.day,
            a.centre_id,
            a.service_id,
            a.scale,
            *(func.sum(getattr(a, f"n{i}")) for i in range(1, 6)),
            func.sum(a.excluded),
        )
        .where(a.day > today - timedelta(days=longest), a.day <= today)
        .group_by(a.day, a.centre_id, a.service_id, a.scale)
    ).all()
    services = dict(session.execute(select(Service.id, Service.code)).all())
    names = {s.code: (s.name_en, s.name_hy) for s in session.scalars(select(Service))}
    # Per (centre, service or None): per day [bottom, top two, n].
    per: dict[tuple[int, int | None], dict[date, list[int]]] = defaultdict(dict)
    excluded_today: dict[int, int] = defaultdict(int)
    for r in rows:
        day, cid, sid, scale = r[0], r[1], r[2], int(r[3])
        levels = [int(x or 0) for x in r[4 : 4 + scale]]
        trio = [_bottom(levels, scale), sum(levels[-2:]), sum(levels)]
        for key in ((cid, None), (cid, sid)):
            acc = per[key].setdefault(day, [0, 0, 0])
            for i in range(3):
                acc[i] += trio[i]
        if day == today:
            excluded_today[cid] += int(r[9] or 0)

    def window(days: dict[date, list[int]], first: date, last: date) -> list[int]:
        acc = [0, 0, 0]
        for d, v in days.items():
            if first <= d <= last:
                for i in range(3):
                    acc[i] += v[i]
        return acc

    for (cid, sid), days in per.items():
        centre = centres[cid]
        if sid is None:
            where, where_hy, subject = centre.name_en, centre.name_hy, f"centre:{centre.code}"
        else:
            code = services.get(sid, "NONE")
            en, hy = names.get(code, (code, code))
            where = f"{centre.name_en}, {en}"
            where_hy = f"{centre.name_hy}, {hy}"
            subject = f"service:{centre.code}/{code}"
        place = {"centre": centre.code, "where": where, "where_hy": where_hy}
        p = params("dissatisfied", cid)
        bottom, _top, n = window(days, today - timedelta(days=int(p["days"]) - 1), today)
        if p.get("enabled", True) and n >= int(p["min_n"]):
            lo, hi = wilson(bottom, n)
            if lo > float(p["threshold"]):
                out.append(
                    Finding(
                        "dissatisfied",
                        subject,
                        cid,
                        p["severity"],
                        {
                            **place,
                            "n": n,
                            "days": int(p["days"]),
                            "share": _pct(bottom / n),
                            "low": _pct(lo),
                            "high": _pct(hi),
                            "threshold": _pct(float(p["threshold"])),
                        },
                    )
                )
        if sid is not None:
            continue
        p = params("drop", cid)
        recent_first = today - timedelta(days=int(p["recent_days"]) - 1)
        _b, rt, rn = window(days, recent_first, today)
        history_first = recent_first - timedelta(days=int(p["history_days"]))
        _b, ht, hn = window(days, history_first, recent_first - timedelta(days=1))
        if p.get("enabled", True) and rn >= int(p["min_n"]) and hn >= int(p["min_n"]):
            _r_lo, r_hi = wilson(rt, rn)
            h_lo, _h_hi = wilson(ht, hn)
            if r_hi < h_lo and ht / hn - rt / rn >= float(p["min_drop"]):
                out.append(
                    Finding(
                        "drop",
                        f"centre:{centre.code}",
                        cid,
                        p["severity"],
                        {
                            **place,
                            "recent": _pct(rt / rn),
                            "history": _pct(ht / hn),
                            "recent_days": int(p["recent_days"]),
                        },
                    )
                )
        p = params("bursts", cid)
        if p.get("enabled", True) and excluded_today.get(cid, 0) >= int(p["excluded"]):
            out.append(
                Finding(
                    "bursts",
                    f"centre:{centre.code}",
                    cid,
                    p["severity"],
                    {**place, "excluded": excluded_today[cid]},
                )
            )
    return out


# ---------------------------------------------------------------- recipients


def add_recipient(
    session: Session,
    channel: str,
    address: str,
    *,
    name: str = "",
    lang: str = "hy",
    centres: Iterable[str] = (),
    min_severity: str = "warning",
    digest: str | None = None,
    now: datetime | None = None,
) -> tuple[AlertRecipient, str | None]:
    """Register who hears of alerts; a webhook gets a signing secret (returned once)."""
    from collector.outbound import webhooks

    if channel not in ("email", "webhook"):
        raise ValueError("a recipient is reached by email or by webhook")
    if channel == "email" and ("@" not in address or any(c.isspace() for c in address)):
        raise ValueError(f"{address!r} is not an email address")
    if channel == "webhook" and not address.startswith(("http://", "https://")):
        raise ValueError("a webhook URL is http:// or https://")
    if lang not in TEXTS:
        raise ValueError(f"lang is one of {', '.join(TEXTS)}")
    if min_severity not in SEVERITIES:
        raise ValueError(f"severity is one of {', '.join(SEVERITIES)}")
    if digest not in (None, "daily", "weekly") or (digest and channel != "email"):
        raise ValueError("a digest is daily or weekly, and goes by email")
    codes = sorted(set(centres))
    known = set(session.scalars(select(Centre.code).where(Centre.code.in_(codes))))
    if set(codes) - known:
        raise ValueError(f"unknown centre(s): {', '.join(sorted(set(codes) - known))}")
    secret = webhooks.new_secret() if channel == "webhook" else None
    r = AlertRecipient(
        name=name or address,
        channel=channel,
        address=address,
        secret=secret,
        lang=lang,
        centres=",".join(codes) or None,
        min_severity=min_severity,
        digest=digest,
        active=True,
        created_at=now or utcnow(),
    )
    session.add(r)
    session.flush()
    return r, secret


def _hears(r: AlertRecipient, severity: str, centre: str | None) -> bool:
    if not r.active or SEVERITIES.index(severity) < SEVERITIES.index(r.min_severity):
        return False
    return not r.centres or (centre is not None and centre in r.centres.split(","))


# ---------------------------------------------------------------- the engine


class AlertEngine:
    """Evaluates the rules, keeps alerts, and delivers their notices (one per
    deployment: a lease), in ``serve``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        metrics: Any = None,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        business_clock: Callable[[], datetime] | None = None,
        rng: Callable[[], float] | None = None,
        owner: str | None = None,
    ) -> None:
        import random

        self.sessions = sessions
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.business_clock = business_clock
        self.http = http or httpx.Client(timeout=settings.webhook_timeout_s)
        self.backoff = outbox.Backoff(10.0, settings.webhook_backoff_max_s, rng or random.random)
        owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = outbox.Lease(
            sessions, "alerts_lease", owner, max(3 * settings.alert_interval_s, 30.0), self._now
        )
        self.worker = outbox.Worker("gnahat-alerts", settings.alert_interval_s, self._round)

    def _now(self) -> datetime:
        return self.clock()

    # ------------------------------------------------------------ reconcile

    def reconcile(self) -> dict[str, int]:
        """Open, remind and close alerts against what holds now; queue their notices."""
        now = self.clock()
        counts = {"opened": 0, "reminded": 0, "closed": 0}
        with self.sessions() as s, s.begin():
            business = self.business_clock() if self.business_clock else now
            findings = {(f.kind, f.subject): f for f in evaluate(s, now, business)}
            active = {
                (a.kind, a.subject): a
                for a in s.scalars(select(Alert).where(Alert.state.in_(ACTIVE)))
            }
            recipients = list(
                s.scalars(select(AlertRecipient).where(AlertRecipient.active.is_(True)))
            )
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            for key, f in findings.items():
                alert = active.get(key)
                if alert is None:
                    alert = Alert(
                        kind=f.kind,
                        subject=f.subject,
                        centre_id=f.centre_id,
                        severity=f.severity,
                        state=OPEN,
                        detail=f.detail,
                        opened_at=now,
                        seen_at=now,
                        notices=0,
                    )
                    s.add(alert)
                    s.flush()
                    self._audit(s, now, "alert.opened", alert)
                    self._notify(s, alert, "opened", recipients, codes, now)
                    counts["opened"] += 1
                    continue
                alert.seen_at, alert.detail = now, f.detail
                due = alert.next_notice_at is not None and alert.next_notice_at <= now
                if alert.state == OPEN and due:
                    self._notify(s, alert, f"reminder-{alert.notices + 1}", recipients, codes, now)
                    counts["reminded"] += 1
            for key, alert in active.items():
                if key in findings:
                    continue
                alert.state, alert.closed_at, alert.next_notice_at = CLOSED, now, None
                self._audit(s, now, "alert.closed", alert)
                self._notify(s, alert, "closed", recipients, codes, now, reminder=False)
                counts["closed"] += 1
        return counts

    def _notify(
        self,
        s: Session,
        alert: Alert,
        notice: str,
        recipients: list[AlertRecipient],
        codes: dict[int, str],
        now: datetime,
        *,
        reminder: bool = True,
    ) -> None:
        centre = codes.get(alert.centre_id) if alert.centre_id is not None else None
        for r in recipients:
            if not _hears(r, alert.severity, centre):
                continue
            state = "closed" if notice == "closed" else notice.split("-")[0]
            outbox.enqueue(
                s,
                AlertNotification,
                f"{alert.id}/{r.id}/{notice}",
                {
                    "type": f"alert.{state}",
                    "data": {
                        "id": alert.id,
                        "kind": alert.kind,
                        "severity": alert.severity,
                        "centre": centre,
                        "subject": alert.subject,
                        "state": state,
                        "opened_at": alert.opened_at.isoformat(),
                        "detail": alert.detail,
                        "text": {lang: render(alert.kind, alert.detail, lang) for lang in TEXTS},
                    },
                },
                now,
                send_key=lambda key, v: f"gnahat:alert:{key}:v{v}",
                alert_id=alert.id,
                recipient_id=r.id,
            )
        if reminder:
            alert.notices += 1
            first = self.settings.alert_renotify_s
            wait = min(self.settings.alert_renotify_max_s, first * 2 ** (alert.notices - 1))
            alert.next_notice_at = now + timedelta(seconds=wait)

    def _audit(self, s: Session, now: datetime, action: str, alert: Alert) -> None:
        s.add(
            AuditLog(
                at=now,
                actor="alerts",
                action=action,
                detail={"alert": alert.id, "kind": alert.kind, "subject": alert.subject},
            )
        )

    # ------------------------------------------------------------ delivery

    def send_due(self, limit: int = 200) -> dict[str, int]:
        from collector.outbound import webhooks

        now = self.clock()
        with self.sessions() as s:
            rows = outbox.due(s, AlertNotification, now, limit, AlertNotification.pending_since)
            people = {r.id: r for r in s.scalars(select(AlertRecipient))}
            s.expunge_all()
        outcomes: dict[str, int] = defaultdict(int)
        struggling: set[str] = set()
        for row in rows:
            if self.worker.stopping.is_set():
                break
            r = people[row.recipient_id]
            lane = "smtp" if r.channel == "email" else r.address
            if lane in struggling:
                continue
            if r.channel == "email":
                kind, detail, status = outbox.attempt(
                    f"alert notice {row.batch_key}", self._email, r, row
                )
                retry_after = None
            else:
                kind, detail, status, retry_after = outbox.attempt(
                    f"alert notice {row.batch_key}", webhooks.post_signed,
                    self.http, r.address, r.secret or "", row.send_key, row.payload,
                    self.clock(), size=4,
                )  # fmt: skip
            if kind == "retry":
                struggling.add(lane)
            outcomes[kind] += 1
            outbox.mark(
                self.sessions,
                AlertNotification,
                row.id,
                row.version,
                self.clock(),
                kind,
                detail=detail,
                wait_s=self.backoff.wait(row.attempts + 1, retry_after),
                attempts=row.attempts + 1,
                last_status=status,
            )
            if kind != outbox.SENT:
                log.warning("alert notice %s to %s: %s (%s)", row.batch_key, r.name, kind, detail)
            if self.metrics is not None:
                self.metrics.alert_notices.labels(r.channel, kind).inc()
        return dict(outcomes)

    def _email(self, r: AlertRecipient, row: AlertNotification) -> tuple[str, str, int | None]:
        data = row.payload["data"]
        texts = TEXTS.get(r.lang, TEXTS["en"])
        text = data["text"].get(r.lang) or data["text"]["en"]
        state = texts.get(data["state"], data["state"])
        msg = self._message(r, texts["subject"].format(state=state, text=text), row.id)
        msg["X-Gnahat-Alert"] = f"{data['id']} {data['kind']} {data['state']}"
        lines = [text, "", f"{state} · {data['severity']} · {data['opened_at']}"]
        if data["state"] != "closed":
            lines += ["", texts["ack"]]
        msg.set_content("\n".join(lines), charset="utf-8")
        return self._smtp(msg)

    def _digest(self, r: AlertRecipient, row: ReportDelivery) -> EmailMessage:
        msg = self._message(r, row.payload["subject"], row.id)
        msg["X-Gnahat-Digest"] = f"{row.payload['first']} {row.payload['last']}"
        msg.set_content(row.payload["text"], charset="utf-8")
        for a in row.payload.get("attachments", []):
            msg.add_attachment(
                a["svg"].encode("utf-8"), maintype="image", subtype="svg+xml", filename=a["name"]
            )
        return msg

    def _message(self, r: AlertRecipient, subject: str, ident: int) -> EmailMessage:
        return mail.message(self.settings, r.address, subject, ident, self.clock())

    def _smtp(self, msg: EmailMessage) -> tuple[str, str, int | None]:
        return mail.send(self.settings, msg)

    def send_reports(self, limit: int = 50) -> dict[str, int]:
        """Send due digests (email) through the outbox."""
        now = self.clock()
        with self.sessions() as s:
            rows = outbox.due(s, ReportDelivery, now, limit, ReportDelivery.pending_since)
            people = {r.id: r for r in s.scalars(select(AlertRecipient))}
            s.expunge_all()
        outcomes: dict[str, int] = defaultdict(int)
        for row in rows:
            if self.worker.stopping.is_set():
                break
            r = people[row.recipient_id]
            kind, detail, status = outbox.attempt(
                f"digest {row.id}", lambda r, row: self._smtp(self._digest(r, row)), r, row
            )
            outcomes[f"digest_{kind}"] += 1
            outbox.mark(
                self.sessions,
                ReportDelivery,
                row.id,
                row.version,
                self.clock(),
                kind,
                detail=detail,
                wait_s=self.backoff.wait(row.attempts + 1),
                attempts=row.attempts + 1,
                last_status=status,
            )
            if kind == "retry":
                break
        return dict(outcomes)

    # ------------------------------------------------------------ operators and loop

    def acknowledge(self, alert_id: int, who: str, comment: str) -> Alert:
        comment = comment.strip()
        if not comment:
            raise ValueError("say what is being done: a comment is required")
        now = self.clock()
        with self.sessions() as s, s.begin():
            return acknowledge(s, alert_id, who, comment, now)

    def run_once(self) -> dict[str, int]:
        if not self.lease.hold():
            return {}
        out = {k: v for k, v in self.reconcile().items() if v}
        now = self.clock()
        with self.sessions() as s, s.begin():
            digests = reports.plan(s, now, self.business_clock() if self.business_clock else now)
        if digests:
            out["digests"] = digests
        out.update(self.send_due())
        out.update(self.send_reports())
        self.update_gauges()
        return out

    def update_gauges(self) -> None:
        if self.metrics is None:
            return
        with self.sessions() as s:
            n = s.scalar(select(func.count()).select_from(Alert).where(Alert.state == OPEN))
            parked = s.scalar(
                select(func.count())
                .select_from(AlertNotification)
                .where(AlertNotification.state == outbox.PARKED)
            )
        self.metrics.alerts_open.set(n or 0)
        self.metrics.alert_notices_parked.set(parked or 0)

    def _round(self) -> bool:
        self.run_once()
        return False

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop(self.settings.webhook_timeout_s + 5)
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the alerts lease")
        self.http.close()


def acknowledge(s: Session, alert_id: int, who: str, comment: str, now: datetime) -> Alert:
    """Mark an alert as being dealt with (no more reminders); audited."""
    comment = comment.strip()
    if not comment:
        raise ValueError("say what is being done: a comment is required")
    alert = s.get(Alert, alert_id)
    if alert is None:
        raise LookupError(f"no alert {alert_id}")
    if alert.state == CLOSED:
        raise ValueError("this alert has closed already")
    alert.state, alert.acked_at, alert.acked_by = ACKED, now, who
    alert.ack_comment = comment[:1000]
    alert.next_notice_at = None
    s.add(
        AuditLog(
            at=now,
            actor=who,
            action="alert.acknowledged",
            detail={"alert": alert.id, "comment": alert.ack_comment},
        )
    )
    return alert


def listing(
    s: Session, *, centres: set[str] | None, states: Iterable[str], lang: str = "en"
) -> list[dict[str, Any]]:
    codes = dict(s.execute(select(Centre.id, Centre.code)).all())
    out = []
    for a in s.scalars(
        select(Alert).where(Alert.state.in_(list(states))).order_by(Alert.opened_at.desc())
    ):
        code = codes.get(a.centre_id) if a.centre_id is not None else None
        if centres is not None and code not in centres:
            continue
        out.append(
            {
                "id": a.id,
                "kind": a.kind,
                "severity": a.severity,
                "state": a.state,
                "centre": code,
                "subject": a.subject,
                "text": render(a.kind, a.detail, lang),
                "opened_at": a.opened_at,
                "seen_at": a.seen_at,
                "closed_at": a.closed_at,
                "acknowledged": {"by": a.acked_by, "at": a.acked_at, "comment": a.ack_comment}
                if a.acked_at
                else None,
                "notices": a.notices,
            }
        )
    return out

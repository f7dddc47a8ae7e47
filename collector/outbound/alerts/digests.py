"""Scheduled digests: the period's figures, its pictures and the open alerts, by email.

A recipient with ``digest`` ``daily`` gets yesterday's digest, ``weekly`` the last whole
ISO week's, once the period is over and it is past 07:00 in Yerevan. Digests are built
when due and go through the same outbox as alert notices (retried, parked with a reason);
one per recipient and period, never twice. The text is in the recipient's language; the
pictures (the same SVG as the dashboard's) are attached.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import AlertRecipient, Centre, ReportDelivery, Service
from collector.outbound import outbox
from collector.outbound.alerts.kinds import ACTIVE
from collector.outbound.alerts.records import listing
from collector.reading import charts, scores

SEND_AFTER = time(7, 0)
TZ = ZoneInfo("Asia/Yerevan")
TEXTS = {
    "en": {
        "subject_daily": "[Gnahat] Ratings of {first}",
        "subject_weekly": "[Gnahat] Ratings of the week {first} to {last}",
        "centre": "{name}: {n} ratings, satisfied {csat} (95 % interval {low}-{high})",
        "change": "; previous period {prev} ({prev_n} ratings)",
        "none": "{name}: no ratings",
        "service": "  - {name}: {n} ratings, satisfied {csat}",
        "alerts": "Open alerts:",
        "no_alerts": "No open alerts.",
        "country": "Every centre",
        "pictures": "The pictures are attached (SVG); the dashboard has them with tables.",
    },
    "hy": {
        "subject_daily": "[Գնահատ] {first}-ի գնահատականները",
        "subject_weekly": "[Գնահատ] {first}–{last} շաբաթվա գնահատականները",
        "centre": "{name}․ {n} գնահատական, գոհ՝ {csat} (95 % միջակայք {low}-{high})",
        "change": "․ նախորդ ժամանակահատվածում՝ {prev} ({prev_n} գնահատական)",
        "none": "{name}․ գնահատականներ չկան",
        "service": "  - {name}․ {n} գնահատական, գոհ՝ {csat}",
        "alerts": "Բաց ազդանշաններ․",
        "no_alerts": "Բաց ազդանշաններ չկան։",
        "country": "Բոլոր կենտրոնները",
        "pictures": "Պատկերները կցված են (SVG)․ վահանակում դրանք կան նաև աղյուսակներով։",
    },
}


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def due_period(kind: str, local_now: datetime) -> tuple[date, date] | None:
    """The period whose digest is due at ``local_now`` (Yerevan), or None before 07:00."""
    if local_now.timetz().replace(tzinfo=None) < SEND_AFTER:
        return None
    today = local_now.date()
    if kind == "daily":
        day = today - timedelta(days=1)
        return day, day
    monday = today - timedelta(days=today.weekday())
    return monday - timedelta(days=7), monday - timedelta(days=1)


def _totals(summary: dict[str, Any] | None) -> tuple[int, int]:
    top = n = 0
    for t in (summary or {}).get("total", []):
        top += sum(t["counts"][-2:])
        n += t["n"]
    return top, n


def build(
    session: Session, recipient: AlertRecipient, first: date, last: date, kind: str
) -> dict[str, Any]:
    """Subject, text and attached pictures of one digest."""
    lang = recipient.lang if recipient.lang in TEXTS else "en"
    t = TEXTS[lang]
    codes = recipient.centres.split(",") if recipient.centres else None
    query = select(Centre).order_by(Centre.code)
    if codes:
        query = query.where(Centre.code.in_(codes))
    centres = list(session.scalars(query))
    ids = [c.id for c in centres]
    services = {
        s.code: (s.name_hy if lang == "hy" else s.name_en) for s in session.scalars(select(Service))
    }
    length = (last - first).days + 1
    prev_last = first - timedelta(days=1)
    prev_first = prev_last - timedelta(days=length - 1)
    now = {r["centre"]: r for r in scores.centre_scores(session, first, last, ids)}
    before = {r["centre"]: r for r in scores.centre_scores(session, prev_first, prev_last, ids)}
    lines: list[str] = []
    attachments: list[dict[str, str]] = []
    for c in centres:
        name = c.name_hy if lang == "hy" else c.name_en
        top, n = _totals(now.get(c.code))
        if not n:
            lines.append(t["none"].format(name=name))
            continue
        lo, hi = scores.wilson(top, n)
        line = t["centre"].format(name=name, n=n, csat=_pct(top / n), low=_pct(lo), high=_pct(hi))
        p_top, p_n = _totals(before.get(c.code))
        if p_n:
            line += t["change"].format(prev=_pct(p_top / p_n), prev_n=p_n)
        lines.append(line)
        if codes:  # a centre's own recipients get its services and its picture
            for sv in now[c.code]["services"]:
                if sv["n"]:
                    lines.append(
                        t["service"].format(
                            name=services.get(sv["service"], sv["service"]),
                            n=sv["n"],
                            csat=_pct(sv["csat"]),
                        )
                    )
            days = scores.daily_series(session, c.id, first, last)
            if len(days) > 1:
                svg = charts.trend(days, name, f"{first}..{last}", f"trend-{c.code}")
                attachments.append({"name": f"{c.code}-{first}-{last}.svg", "svg": str(svg)})
    open_alerts = listing(session, centres=set(codes) if codes else None, states=ACTIVE, lang=lang)
    lines += ["", t["alerts"] if open_alerts else t["no_alerts"]]
    lines += [f"  - {a['text']}" for a in open_alerts]
    if attachments:
        lines += ["", t["pictures"]]
    subject = t[f"subject_{kind}"].format(first=first.isoformat(), last=last.isoformat())
    if not codes:
        lines.insert(0, t["country"])
    return {
        "subject": subject,
        "text": "\n".join(lines),
        "attachments": attachments,
        "first": first.isoformat(),
        "last": last.isoformat(),
    }


def plan(session: Session, now: datetime, business_now: datetime) -> int:
    """Queue each recipient's digest that is due and not queued yet."""
    queued = 0
    local = business_now.astimezone(TZ)
    for r in session.scalars(
        select(AlertRecipient).where(
            AlertRecipient.active.is_(True),
            AlertRecipient.channel == "email",
            AlertRecipient.digest.is_not(None),
        )
    ):
        period = due_period(r.digest or "", local)
        if period is None:
            continue
        key = f"{r.id}/{r.digest}/{period[0].isoformat()}"
        if session.scalar(select(ReportDelivery.id).where(ReportDelivery.batch_key == key)):
            continue  # once per period: a late event does not send it again
        payload = build(session, r, period[0], period[1], r.digest or "daily")
        queued += outbox.enqueue(
            session,
            ReportDelivery,
            key,
            payload,
            now,
            send_key=lambda k, v: f"gnahat:digest:{k}:v{v}",
            recipient_id=r.id,
        )
    return queued

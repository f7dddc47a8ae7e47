"""Recipients, and the alerts on record: acknowledging one, listing them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import (
    Alert,
    AlertRecipient,
    AuditLog,
    Centre,
)
from collector.outbound.alerts.kinds import ACKED, CLOSED, SEVERITIES, TEXTS, render, utcnow

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

"""The alerts engine: rounds that reconcile findings with the alerts on record, and the outbox
of notices and digests (one engine per deployment, under a lease)."""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.models import (
    Alert,
    AlertNotification,
    AlertRecipient,
    AuditLog,
    Centre,
    ReportDelivery,
)
from collector.outbound import mail, outbox
from collector.outbound.alerts import digests as reports
from collector.outbound.alerts.kinds import ACTIVE, CLOSED, OPEN, TEXTS, log, render, utcnow
from collector.outbound.alerts.records import _hears, acknowledge
from collector.outbound.alerts.rules import evaluate

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
        # One language and one clock: the severity in the recipient's words, the time in
        # the centres' zone (as every time in the text), never UTC beside it.
        severity = texts.get(data["severity"], data["severity"])
        opened = datetime.fromisoformat(data["opened_at"]).astimezone(
            ZoneInfo(self.settings.timezone)
        )
        when = texts["opened_at"].format(time=opened.strftime("%Y-%m-%d %H:%M"))
        lines = [text, "", f"{state} · {severity} · {when}"]
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

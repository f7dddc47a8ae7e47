"""Webhooks: "a day's aggregates changed", pushed to analysts' systems through the outbox.

Planning finds the (centre, day) cells changed since the last round (the same margin as
forwarding, so a late commit is never missed) and queues, per active webhook, one
delivery per (webhook, centre, day) with the day's figures; a later change of the same
day makes a new version of that row (coalesced while it waits). Sending signs each
body by the Standard Webhooks specification (https://www.standardwebhooks.com/, the
``standardwebhooks`` reference library): headers ``webhook-id`` (the version's key,
the receiver's idempotency key), ``webhook-timestamp`` and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the secret). A 2xx
delivers; a network error, 408, 429 (``Retry-After``) or 5xx is retried with the
outbox's backoff and holds back that receiver's other deliveries for the round; any
other answer parks the delivery with the status and the reason.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as Signer

from collector.config import Settings
from collector.models import Centre, DailyAggregate, Meta, Webhook, WebhookDelivery
from collector.outbound import outbox
from collector.outbound.dhis2 import retry_after_seconds
from collector.reading.scores import Counts, wilson

log = logging.getLogger(__name__)

EVENT_TYPE = "aggregates.day_changed"
PLAN_MARGIN = timedelta(minutes=10)
BACKOFF_BASE_S = 10.0
RETRY_STATUSES = {408, 425, 429}


def utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookError(ValueError):
    pass


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def add(
    session: Session,
    url: str,
    *,
    name: str = "",
    centres: Iterable[str] = (),
    now: datetime | None = None,
) -> tuple[Webhook, str]:
    """Register a receiver; returns it and its secret (shown once)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("the URL must be http:// or https:// with a host")
    codes = sorted(set(centres))
    known = set(session.scalars(select(Centre.code).where(Centre.code.in_(codes))))
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise WebhookError(f"unknown centre(s): {', '.join(unknown)}")
    secret = new_secret()
    hook = Webhook(
        name=name or parts.hostname,
        url=url,
        secret=secret,
        centres=",".join(codes) or None,
        active=True,
        created_at=now or utcnow(),
    )
    session.add(hook)
    session.flush()
    return hook, secret


def day_payload(session: Session, centre: Centre, day: date) -> dict[str, Any]:
    """The body of one delivery: the centre's figures for the day, per scale."""
    a = DailyAggregate
    rows = session.execute(
        select(a.scale, *(getattr(a, f"n{i}") for i in range(1, 6)), a.excluded).where(
            a.day == day, a.centre_id == centre.id
        )
    ).all()
    scales: dict[int, Counts] = {}
    excluded = 0
    for r in rows:
        c = scales.setdefault(r[0], Counts(r[0]))
        c.add([int(x or 0) for x in r[1:6]])
        excluded += int(r[6] or 0)
    figures = []
    for scale, c in sorted(scales.items()):
        item: dict[str, Any] = {"scale": scale, "n": c.n, "counts": c.levels}
        if c.n:
            lo, hi = wilson(c.top_two, c.n)
            item.update(csat=round(c.top_two / c.n, 4), csat_ci95=[round(lo, 4), round(hi, 4)])
        figures.append(item)
    return {
        "type": EVENT_TYPE,
        "data": {
            "centre": centre.code,
            "marz": centre.marz,
            "day": day.isoformat(),
            "n": sum(c.n for c in scales.values()),
            "excluded": excluded,
            "scales": figures,
            "feed": f"/api/v1/feeds/aggregates?start={day}&end={day}&by=centre",
        },
    }


def post_signed(
    http: httpx.Client,
    url: str,
    secret: str,
    msg_id: str,
    payload: dict[str, Any],
    now: datetime,
) -> tuple[str, str, int | None, float | None]:
    """POST ``payload`` (with a ``timestamp``) signed by the Standard Webhooks scheme;
    returns (outcome, reason, HTTP status, Retry-After seconds) for the outbox: ``sent``
    on a 2xx, ``retry`` on a network error, 408, 425, 429 or 5xx, ``parked`` otherwise.
    Webhooks and alert notices both send with it."""
    body = json.dumps({**payload, "timestamp": now.isoformat()}, ensure_ascii=False)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(msg_id, now, body),
    }
    try:
        r = http.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return "retry", f"{type(exc).__name__}: {exc}", None, None
    if 200 <= r.status_code < 300:
        return outbox.SENT, "", r.status_code, None
    text = r.text[:200].strip()
    if r.status_code >= 500 or r.status_code in RETRY_STATUSES:
        after = retry_after_seconds(r.headers.get("retry-after"), now)
        return "retry", f"HTTP {r.status_code}: {text}", r.status_code, after
    if r.status_code == 410:
        return outbox.PARKED, "HTTP 410: the receiver is gone", r.status_code, None
    return outbox.PARKED, f"HTTP {r.status_code}: {text}", r.status_code, None


class WebhookSender:
    """Plans and sends webhook deliveries; one per deployment (a lease), in ``serve``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        metrics: Any = None,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] | None = None,
        owner: str | None = None,
    ) -> None:
        import random

        self.sessions = sessions
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.http = http or httpx.Client(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "gnahat-webhooks"},
        )
        self.backoff = outbox.Backoff(
            BACKOFF_BASE_S, settings.webhook_backoff_max_s, rng or random.random
        )
        owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = outbox.Lease(
            sessions,
            "webhook_lease",
            owner,
            max(3 * settings.webhook_interval_s, 30.0),
            lambda: self.clock(),
        )
        self.worker = outbox.Worker("gnahat-webhooks", settings.webhook_interval_s, self._round)

    # ------------------------------------------------------------ planning

    def plan(self) -> int:
        now = self.clock()
        queued = 0
        with self.sessions() as s, s.begin():
            hooks = list(s.scalars(select(Webhook).where(Webhook.active.is_(True))))
            meta = s.get(Meta, "webhooks_planned_at")
            since = datetime.fromisoformat(meta.value) - PLAN_MARGIN if meta else None
            if hooks:
                oldest = min(h.created_at for h in hooks)
                lower = max(since, oldest) if since else oldest
                changed = s.execute(
                    select(
                        DailyAggregate.day, DailyAggregate.centre_id, DailyAggregate.changed_at
                    ).where(DailyAggregate.changed_at >= lower)
                ).all()
                newest: dict[tuple[date, int], datetime] = {}
                for day, centre_id, at in changed:
                    key = (day, centre_id)
                    newest[key] = max(at, newest.get(key, at))
                centres = {c.id: c for c in s.scalars(select(Centre))}
                for (day, centre_id), at in sorted(newest.items()):
                    centre = centres[centre_id]
                    payload = day_payload(s, centre, day)
                    for hook in hooks:
                        wanted = hook.centres.split(",") if hook.centres else None
                        if at < hook.created_at or (wanted and centre.code not in wanted):
                            continue
                        queued += outbox.enqueue(
                            s,
                            WebhookDelivery,
                            f"{hook.id}/{centre.code}/{day.isoformat()}",
                            payload,
                            now,
                            send_key=lambda key, v: f"gnahat:{key}:v{v}",
                            webhook_id=hook.id,
                        )
            if meta is None:
                s.add(Meta(key="webhooks_planned_at", value=now.isoformat()))
            else:
                meta.value = now.isoformat()
        return queued

    # ------------------------------------------------------------ sending

    def send_due(self, limit: int = 200) -> dict[str, int]:
        now = self.clock()
        with self.sessions() as s:
            rows = outbox.due(s, WebhookDelivery, now, limit, WebhookDelivery.pending_since)
            hooks = {h.id: h for h in s.scalars(select(Webhook))}
            s.expunge_all()
        outcomes: dict[str, int] = defaultdict(int)
        struggling: set[int] = set()
        for row in rows:
            if self.worker.stopping.is_set() or not self.lease.hold():
                break
            hook = hooks.get(row.webhook_id)
            if hook is None or not hook.active:
                kind, detail, status, wait = outbox.PARKED, "the webhook was removed", None, 0.0
            elif row.webhook_id in struggling:
                continue  # that receiver failed this round: its other deliveries wait
            else:
                kind, detail, status, retry_after = outbox.attempt(
                    f"webhook {row.batch_key}", self._send, hook, row, size=4
                )
                wait = self.backoff.wait(row.attempts + 1, retry_after)
                if kind == "retry":
                    struggling.add(row.webhook_id)
            outcomes[kind] += 1
            outbox.mark(
                self.sessions,
                WebhookDelivery,
                row.id,
                row.version,
                self.clock(),
                kind,
                detail=detail,
                wait_s=wait,
                attempts=row.attempts + 1,
                last_status=status,
            )
            if kind != outbox.SENT:
                log.warning(
                    "webhook %s to %s: %s (%s)", row.batch_key, hook and hook.url, kind, detail
                )
            if self.metrics is not None:
                self.metrics.webhook_deliveries.labels(kind).inc()
        return dict(outcomes)

    def _send(
        self, hook: Webhook, row: WebhookDelivery
    ) -> tuple[str, str, int | None, float | None]:
        return post_signed(
            self.http, hook.url, hook.secret, row.send_key, row.payload, self.clock()
        )

    # ------------------------------------------------------------ operators and loop

    def retry(self, ids: Iterable[int] | None = None) -> int:
        where = WebhookDelivery.state == outbox.PARKED
        if ids is not None:
            where = where & WebhookDelivery.id.in_(list(ids))
        with self.sessions() as s, s.begin():
            return outbox.requeue(s, WebhookDelivery, self.clock(), where)

    def run_once(self) -> dict[str, int]:
        if not self.lease.hold():
            return {}
        planned = self.plan()
        out = self.send_due()
        if planned:
            out["queued"] = planned
        self.update_gauges()
        return out

    def update_gauges(self) -> None:
        if self.metrics is None:
            return
        from sqlalchemy import func

        with self.sessions() as s:
            counts = dict(
                s.execute(
                    select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)
                ).all()
            )
        self.metrics.webhook_pending.set(counts.get(outbox.PENDING, 0))
        self.metrics.webhook_parked.set(counts.get(outbox.PARKED, 0))

    def _round(self) -> bool:
        out = self.run_once()
        sent = sum(v for k, v in out.items() if k != "queued")
        return sent >= 200 and "retry" not in out

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop(self.settings.webhook_timeout_s + 5)
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the webhook lease")
        self.http.close()

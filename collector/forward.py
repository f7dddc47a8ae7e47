"""Forwarding daily aggregates to the M&E IS through an outbox.

Planning turns changed aggregate cells into one batch per (centre, day) — the
centre's dataValueSet for that day, absolute counts per score level and service
— stored in ``forward_batches`` with a stable key. A new version is queued only
when the content changed; a late event therefore re-queues its own day. Sending
pushes due batches one by one, outside any database transaction, so a slow or
absent M&E IS never holds up ingest: network errors, 5xx and 429 are retried
with capped exponential backoff and jitter (``Retry-After`` honoured); other 4xx
park the batch with the reason; an import summary with conflicts or ignored
values is kept and reported as a warning. Because values are absolute counts and
the import is an upsert, every re-send replaces rather than adds.

The wire format sits behind :class:`Adapter`; :class:`Dhis2Adapter` speaks DHIS2
``dataValueSets`` JSON, the most common aggregate exchange in government M&E.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.models import Centre, DailyAggregate, Employee, ForwardBatch, Meta, Service

log = logging.getLogger(__name__)

PENDING, SENT, PARKED = "pending", "sent", "parked"
NO_SERVICE = "NONE"
#: Cells changed within this margin before the last planning are looked at again, so a
#: transaction that stamped ``changed_at`` before a planning run but committed after it
#: is never missed (an unchanged batch costs only a hash comparison).
PLAN_MARGIN = timedelta(minutes=10)
BACKOFF_BASE_S = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Cell:
    service: str
    employee: str | None  # pseudonym, only when employee-level forwarding is on
    scale: int
    counts: tuple[int, ...]  # n1..n{scale}


@dataclass
class Outcome:
    """What one push came to."""

    kind: str  # "sent", "warning", "retry", "parked"
    detail: str = ""
    retry_after_s: float | None = None
    summary: dict[str, Any] | None = None


class Adapter(Protocol):
    def build(self, centre: str, day: date, cells: list[Cell]) -> dict[str, Any]: ...

    def send(
        self, http: httpx.Client, payload: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> Outcome: ...


@dataclass
class Dhis2Adapter:
    """DHIS2 ``dataValueSets`` JSON: ``POST /api/dataValueSets`` with ``idScheme=code``."""

    base_url: str
    data_element: str = "GNAHAT_R{scale}_{level}"
    data_set: str | None = None

    def build(self, centre: str, day: date, cells: list[Cell]) -> dict[str, Any]:
        values = []
        for cell in cells:
            for level, count in enumerate(cell.counts, start=1):
                dv: dict[str, Any] = {
                    "dataElement": self.data_element.format(scale=cell.scale, level=level),
                    "categoryOptionCombo": cell.service,
                    "value": str(count),
                }
                if cell.employee is not None:
                    dv["attributeOptionCombo"] = cell.employee
                values.append(dv)
        values.sort(
            key=lambda v: (
                v["dataElement"],
                v["categoryOptionCombo"],
                v.get("attributeOptionCombo"),
            )
        )
        payload: dict[str, Any] = {
            "period": day.strftime("%Y%m%d"),
            "orgUnit": centre,
            "dataValues": values,
        }
        if self.data_set:
            payload["dataSet"] = self.data_set
        return payload

    def send(
        self, http: httpx.Client, payload: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> Outcome:
        params = {"importStrategy": "CREATE_AND_UPDATE", "idScheme": "code"}
        if dry_run:
            params["dryRun"] = "true"
        try:
            r = http.post(
                self.base_url.rstrip("/") + "/api/dataValueSets",
                params=params,
                json=payload,
                headers={"Idempotency-Key": key},
            )
        except httpx.HTTPError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        return judge_response(r.status_code, r.headers, r.content)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def judge_response(status: int, headers: Any, body: bytes) -> Outcome:
    """Map an M&E IS answer to an outcome (DHIS2 import summaries, 2.3x and 2.38+)."""
    if status == 429:
        return Outcome(
            "retry",
            "HTTP 429 (throttled)",
            retry_after_seconds(headers.get("retry-after"), utcnow()),
        )
    if status >= 500:
        return Outcome("retry", f"HTTP {status}: {_message(body)}")
    if status not in (200, 201, 202, 409):
        return Outcome("parked", f"HTTP {status}: {_message(body)}")
    try:
        doc = json.loads(body)
    except ValueError:
        return Outcome("parked", f"HTTP {status} without a JSON import summary")
    if not isinstance(doc, dict):
        return Outcome("parked", f"HTTP {status}: unexpected answer")
    inner = doc.get("response")
    summary: dict[str, Any] = inner if isinstance(inner, dict) else doc
    counts = summary.get("importCount") or {}
    conflicts = summary.get("conflicts") or []
    taken = sum(int(counts.get(k, 0)) for k in ("imported", "updated", "deleted"))
    ignored = int(counts.get("ignored", 0))
    brief = {"status": summary.get("status"), "importCount": counts, "conflicts": conflicts[:20]}
    first = "; ".join(f"{c.get('object')}: {c.get('value')}" for c in conflicts[:3])
    if summary.get("status") == "ERROR" or (ignored and not taken):
        return Outcome(
            "parked",
            f"the M&E IS took no value ({ignored} ignored): {first}".rstrip(": "),
            None,
            brief,
        )
    if conflicts or ignored or summary.get("status") == "WARNING":
        return Outcome("warning", f"{ignored} value(s) ignored: {first}".rstrip(": "), None, brief)
    if status == 409:
        return Outcome("parked", f"HTTP 409: {_message(body)}", None, brief)
    return Outcome("sent", "", None, brief)


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])[:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


@dataclass
class RunReport:
    planned: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lease: bool = True

    def __str__(self) -> str:
        if not self.lease:
            return "another process is forwarding (it holds the lease); nothing done here"
        parts = [f"{self.planned} batch(es) queued"]
        parts += [f"{n} {k}" for k, n in sorted(self.outcomes.items())]
        return ", ".join(parts)


class Forwarder:
    """Plans batches from aggregates and pushes them; one per deployment."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        metrics: Any = None,
        adapter: Adapter | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        owner: str | None = None,
    ) -> None:
        if not settings.forward_url and adapter is None:
            raise ValueError("set GNAHAT_FORWARD_URL to forward to the M&E IS")
        self.sessions = sessions
        self.settings = settings
        self.metrics = metrics
        self.adapter: Adapter = adapter or Dhis2Adapter(
            settings.forward_url or "",
            data_element=settings.forward_data_element,
            data_set=settings.forward_data_set,
        )
        self.http = http or make_http_client(settings)
        self.clock = clock
        self.rng = rng
        self.tz = ZoneInfo(settings.timezone)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.check_lease = False
        """Renew the lease before each push (set by :meth:`run_once`, the serving path)."""

    # ------------------------------------------------------------ planning

    def _pseudonym(self, code: str) -> str:
        digest = hmac.new(self.settings.pseudonym_key.encode(), code.encode(), hashlib.sha256)
        return "E" + digest.hexdigest()[:12].upper()

    def cells(
        self,
        session: Session,
        day: date,
        centre_id: int,
        services: dict[int, str] | None = None,
    ) -> list[Cell]:
        """The (day, centre) cells as the M&E IS gets them (``services``: id → code, read
        once by a caller that builds many batches)."""
        if services is None:
            services = dict(session.execute(select(Service.id, Service.code)).all())
        employees = (
            dict(
                session.execute(
                    select(Employee.id, Employee.code).where(Employee.centre_id == centre_id)
                ).all()
            )
            if self.settings.forward_employee_level
            else {}
        )
        rows = session.scalars(
            select(DailyAggregate).where(
                DailyAggregate.day == day, DailyAggregate.centre_id == centre_id
            )
        ).all()
        sums: dict[tuple[str, str | None, int], list[int]] = {}
        for r in rows:
            service = services.get(r.service_id, NO_SERVICE)
            employee = None
            if self.settings.forward_employee_level:
                code = employees.get(r.employee_id)
                employee = self._pseudonym(code) if code else "UNATTRIBUTED"
            counts = sums.setdefault((service, employee, r.scale), [0] * r.scale)
            for level in range(r.scale):
                counts[level] += getattr(r, f"n{level + 1}")
        return [Cell(s, e, sc, tuple(c)) for (s, e, sc), c in sorted(sums.items(), key=str)]

    def last_day(self, now: datetime) -> date:
        """The newest day that may be pushed at ``now``."""
        today = now.astimezone(self.tz).date()
        return today if self.settings.forward_today else today - timedelta(days=1)

    def plan(self) -> int:
        """Queue a new version of every (centre, day) whose counts changed; return how many.

        Once a local day, the last ``forward_resend_days`` finished days are queued again
        under a fresh idempotency key (a safety net for values lost on the far side).
        """
        now = self.clock()
        last_day = self.last_day(now)
        queued = 0
        with self.sessions() as s, s.begin():
            since = _meta_time(s, "forward_planned_at")
            query = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
            if since is not None:
                query = query.where(DailyAggregate.changed_at >= since - PLAN_MARGIN)
            candidates = {(d, c) for d, c in s.execute(query).all() if d <= last_day}
            # The newest eligible day always: its cells may have changed while it was
            # still the running day (not yet eligible) and before the last planning.
            newest = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
            candidates |= set(s.execute(newest.where(DailyAggregate.day == last_day)))
            sweep_tag = now.astimezone(self.tz).date().isoformat()
            sweep = _meta(s, "forward_swept_on") != sweep_tag
            if sweep:
                first = last_day - timedelta(days=self.settings.forward_resend_days - 1)
                recent = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
                recent = recent.where(DailyAggregate.day >= first, DailyAggregate.day <= last_day)
                sweep_set = set(s.execute(recent))
                candidates |= sweep_set
            else:
                sweep_set = set()
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            services = dict(s.execute(select(Service.id, Service.code)).all())
            for day, centre_id in sorted(candidates):
                cells = self.cells(s, day, centre_id, services)
                payload = self.adapter.build(codes[centre_id], day, cells)
                digest = hashlib.sha256(
                    json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
                ).hexdigest()
                key = f"{codes[centre_id]}/{day.strftime('%Y%m%d')}"
                batch = s.scalars(select(ForwardBatch).where(ForwardBatch.batch_key == key)).first()
                if batch is None:
                    s.add(
                        ForwardBatch(
                            batch_key=key,
                            day=day,
                            centre_id=centre_id,
                            version=1,
                            send_key=f"gnahat:{key}:v1",
                            payload=payload,
                            payload_hash=digest,
                            state=PENDING,
                            attempts=0,
                            next_attempt_at=now,
                            pending_since=now,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    queued += 1
                elif batch.payload_hash != digest:
                    batch.version += 1
                    batch.send_key = f"gnahat:{key}:v{batch.version}"
                    batch.payload, batch.payload_hash = payload, digest
                    if batch.state != PENDING:
                        batch.pending_since = now
                    batch.state, batch.attempts, batch.next_attempt_at = PENDING, 0, now
                    batch.last_error = batch.warning = None
                    batch.updated_at = now
                    queued += 1
                elif (day, centre_id) in sweep_set and batch.state == SENT:
                    batch.send_key = f"gnahat:{key}:v{batch.version}:resend-{sweep_tag}"
                    batch.pending_since = now
                    batch.state, batch.attempts, batch.next_attempt_at = PENDING, 0, now
                    batch.updated_at = now
                    queued += 1
            _set_meta(s, "forward_planned_at", now.isoformat())
            if sweep:
                _set_meta(s, "forward_swept_on", sweep_tag)
        return queued

    # ------------------------------------------------------------ sending

    def backoff_s(self, attempts: int) -> float:
        """Capped exponential backoff with jitter (between half and all of the step)."""
        step = min(self.settings.forward_backoff_max_s, BACKOFF_BASE_S * 2 ** (attempts - 1))
        return float(step * (0.5 + self.rng() / 2))

    def send_due(self, limit: int = 200) -> dict[str, int]:
        now = self.clock()
        with self.sessions() as s:
            due = s.execute(
                select(
                    ForwardBatch.id,
                    ForwardBatch.version,
                    ForwardBatch.send_key,
                    ForwardBatch.payload,
                    ForwardBatch.batch_key,
                    ForwardBatch.attempts,
                )
                .where(ForwardBatch.state == PENDING, ForwardBatch.next_attempt_at <= now)
                .order_by(ForwardBatch.day, ForwardBatch.batch_key)
                .limit(limit)
            ).all()
        outcomes: dict[str, int] = defaultdict(int)
        for batch_id, version, send_key, payload, batch_key, attempts in due:
            if self._stop.is_set():
                break
            if self.check_lease and not self.hold_lease():
                # Renewed before every push: a long round (a slow M&E IS) must not outlive
                # the lease, or a second server would push the same batches meanwhile.
                log.warning("forwarding lease lost during a round; stopping this round")
                break
            outcome = self.adapter.send(self.http, payload, send_key)  # no transaction open
            outcomes[outcome.kind] += 1
            self._record(batch_id, version, batch_key, attempts + 1, outcome)
            if outcome.kind == "retry":
                break  # the M&E IS is struggling: the rest waits for the next round
        return dict(outcomes)

    def _record(
        self, batch_id: int, version: int, key: str, attempts: int, outcome: Outcome
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {"attempts": attempts, "updated_at": now}
        if outcome.kind in ("sent", "warning"):
            values.update(
                state=SENT,
                sent_version=version,
                sent_at=now,
                summary=outcome.summary,
                last_error=None,
                warning=outcome.detail or None,
                next_attempt_at=None,
            )
            if outcome.kind == "warning":
                log.warning("M&E IS accepted %s with conflicts: %s", key, outcome.detail)
        elif outcome.kind == "parked":
            values.update(
                state=PARKED,
                last_error=outcome.detail,
                summary=outcome.summary,
                next_attempt_at=None,
            )
            log.error("M&E IS refused %s; parked: %s", key, outcome.detail)
        else:
            wait = outcome.retry_after_s
            if wait is None:
                wait = self.backoff_s(attempts)
            values.update(last_error=outcome.detail, next_attempt_at=now + timedelta(seconds=wait))
            log.warning("push of %s failed (%s); retry in %.0f s", key, outcome.detail, wait)
        with self.sessions() as s, s.begin():
            # Only the version we sent: a newer one planned meanwhile stays pending.
            s.execute(
                update(ForwardBatch)
                .where(ForwardBatch.id == batch_id, ForwardBatch.version == version)
                .values(**values)
            )
        if self.metrics is not None:
            self.metrics.forward_pushes.labels(outcome.kind).inc()

    def run_once(self) -> RunReport:
        """One round: plan, then push what is due — if this process holds the lease."""
        if not self.hold_lease():
            return RunReport(lease=False)
        self.check_lease = True
        report = RunReport(planned=self.plan())
        report.outcomes.update(self.send_due())
        self.update_gauges()
        return report

    def hold_lease(self) -> bool:
        """Take or renew the forwarding lease (one forwarder per database at a time).

        A compare-and-swap on one ``meta`` row, the same on SQLite and PostgreSQL: the
        lease is ours if it is free, expired, or already ours; it lasts three rounds, so
        another ``serve`` process takes over within that after this one stops or dies.
        """
        now = self.clock()
        until = now + timedelta(seconds=max(3 * self.settings.forward_interval_s, 30.0))
        mine = f"{self.owner}|{until.isoformat()}"
        with self.sessions() as s:
            try:
                with s.begin():
                    if s.get(Meta, "forward_lease") is None:
                        s.add(Meta(key="forward_lease", value=""))
            except IntegrityError:
                pass  # another process created the row first
        with self.sessions() as s, s.begin():
            row = s.get(Meta, "forward_lease")
            if row is None:
                return False
            owner, _, expires = row.value.partition("|")
            if owner != self.owner and expires and datetime.fromisoformat(expires) > now:
                return False
            taken = s.execute(
                update(Meta)
                .where(Meta.key == "forward_lease", Meta.value == row.value)
                .values(value=mine)
            )
            return bool(taken.rowcount == 1)  # type: ignore[attr-defined]

    def release_lease(self) -> None:
        with self.sessions() as s, s.begin():
            row = s.get(Meta, "forward_lease")
            if row is not None and row.value.partition("|")[0] == self.owner:
                s.execute(
                    update(Meta)
                    .where(Meta.key == "forward_lease", Meta.value == row.value)
                    .values(value="")
                )

    def update_gauges(self) -> None:
        if self.metrics is None:
            return
        now = self.clock()
        with self.sessions() as s:
            counts: dict[str, int] = dict(
                s.execute(
                    select(ForwardBatch.state, func.count()).group_by(ForwardBatch.state)
                ).all()
            )
            oldest = s.scalar(
                select(ForwardBatch.pending_since)
                .where(ForwardBatch.state == PENDING)
                .order_by(ForwardBatch.pending_since)
                .limit(1)
            )
        self.metrics.forward_pending.set(counts.get(PENDING, 0))
        self.metrics.forward_parked.set(counts.get(PARKED, 0))
        self.metrics.forward_oldest_pending.set(
            (now - oldest).total_seconds() if oldest is not None else 0
        )

    # ------------------------------------------------------------ operators

    def retry(self, keys: Iterable[str] | None = None) -> int:
        """Re-queue parked batches (all, or those named) after a fix on either side."""
        now = self.clock()
        with self.sessions() as s, s.begin():
            query = select(ForwardBatch).where(ForwardBatch.state == PARKED)
            if keys is not None:
                query = query.where(ForwardBatch.batch_key.in_(list(keys)))
            batches = s.scalars(query).all()
            for b in batches:
                b.state, b.attempts, b.next_attempt_at, b.updated_at = PENDING, 0, now, now
                b.pending_since = now
        return len(batches)

    def dry_run(self, day: date, centre: str | None = None) -> list[tuple[str, Outcome]]:
        """Build the day's batches and send them with ``dryRun=true``: checks a mapping,
        changes nothing here or there."""
        out = []
        with self.sessions() as s:
            query = select(DailyAggregate.centre_id).where(DailyAggregate.day == day).distinct()
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            centres = sorted(c for c in s.scalars(query) if centre is None or codes[c] == centre)
            services = dict(s.execute(select(Service.id, Service.code)).all())
            built = [
                (codes[c], self.adapter.build(codes[c], day, self.cells(s, day, c, services)))
                for c in centres
            ]
        for code, payload in built:
            key = f"gnahat:{code}/{day.strftime('%Y%m%d')}:dry-run"
            out.append((code, self.adapter.send(self.http, payload, key, dry_run=True)))
        return out

    # ------------------------------------------------------------ background

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gnahat-forwarder", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.run_once()
                if report.planned or report.outcomes:
                    log.info("forwarding: %s", report)
            except Exception:  # a bug or a database hiccup must not end forwarding
                log.exception("forwarding round failed; trying again next round")
            self._wake.wait(self.settings.forward_interval_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.settings.forward_timeout_s + 5)
            self._thread = None
        try:
            self.release_lease()  # another process may take over at once
        except Exception:
            log.exception("could not release the forwarding lease")
        self.http.close()


def make_http_client(settings: Settings) -> httpx.Client:
    headers = {"Accept": "application/json", "User-Agent": "gnahat-forwarder"}
    auth: Any = None
    if settings.forward_token:
        headers["Authorization"] = f"ApiToken {settings.forward_token}"
    elif settings.forward_username:
        auth = (settings.forward_username, settings.forward_password or "")
    return httpx.Client(
        headers=headers, auth=auth, timeout=settings.forward_timeout_s, follow_redirects=False
    )


def _meta(s: Session, key: str) -> str | None:
    row = s.get(Meta, key)
    return row.value if row is not None else None


def _meta_time(s: Session, key: str) -> datetime | None:
    value = _meta(s, key)
    return datetime.fromisoformat(value) if value else None


def _set_meta(s: Session, key: str, value: str) -> None:
    row = s.get(Meta, key)
    if row is None:
        s.add(Meta(key=key, value=value))
    else:
        row.value = value

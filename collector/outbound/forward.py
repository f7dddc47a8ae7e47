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

import logging
import os
import random
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.models import (
    Centre,
    DailyAggregate,
    ForwardBatch,
    Service,
)
from collector.outbound import mapping as mapping_mod
from collector.outbound import outbox
from collector.outbound.dhis2 import (
    Adapter,
    Dhis2Adapter,
    Outcome,
    Remote,
    Unmapped,
    utcnow,
    value_key,
)
from collector.outbound.planning import (
    BACKOFF_BASE_S,
    LOCKED,
    NO_SERVICE,
    PARKED,
    PENDING,
    REFUSED_MIN_WAIT_S,
    SENT,
    Planning,
    RunReport,
)

log = logging.getLogger(__name__)


__all__ = [
    "LOCKED",
    "NO_SERVICE",
    "PARKED",
    "PENDING",
    "SENT",
    "Forwarder",
    "RunReport",
    "make_http_client",
]


class Forwarder(Planning):
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
        self.fixed_mapping = (
            mapping_mod.load(settings.forward_mapping) if settings.forward_mapping else None
        )
        self.adapter: Adapter = adapter or Dhis2Adapter(
            settings.forward_url or "",
            self.fixed_mapping or mapping_mod.Mapping(),
            max_values=settings.forward_max_values,
        )
        self.http = http or make_http_client(settings)
        self.clock = clock
        self.rng = rng
        self.tz = ZoneInfo(settings.timezone)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.backoff = outbox.Backoff(BACKOFF_BASE_S, settings.forward_backoff_max_s, rng)
        self.lease = outbox.Lease(
            sessions,
            "forward_lease",
            self.owner,
            max(3 * settings.forward_interval_s, 30.0),
            lambda: self.clock(),
        )
        self.worker = outbox.Worker("gnahat-forwarder", settings.forward_interval_s, self._round)
        self._stop = self.worker.stopping
        self.check_lease = False
        """Renew the lease before each push (set by :meth:`run_once`, the serving path)."""

    # ------------------------------------------------------------ sending

    def backoff_s(self, attempts: int) -> float:
        """Capped exponential backoff with jitter (between half and all of the step)."""
        return self.backoff.wait(attempts)

    def send_due(self, limit: int = 200) -> dict[str, int]:
        """Push the due batches, ``GNAHAT_FORWARD_CONCURRENCY`` at a time.

        DHIS2 imports a JSON ``dataValueSets`` POST synchronously in the request's own
        thread (``DataValueSetController.postJsonDataValueSet`` calls
        ``DataValueSetService.importDataValueSetJson``; no lock across requests, read at
        2.41.9), so a few pushes at once for different (org unit, period) pairs are
        handled side by side. Any answer asking us to wait (429, 503, ``Retry-After``, a
        timeout) stops the whole round: nothing new is started until the next one.
        """
        now = self.clock()
        with self.sessions() as s:
            due = s.scalars(
                select(ForwardBatch)
                .where(ForwardBatch.state == PENDING, ForwardBatch.next_attempt_at <= now)
                .order_by(ForwardBatch.day, ForwardBatch.batch_key)
                .limit(limit)
            ).all()
            s.expunge_all()
        outcomes: dict[str, int] = defaultdict(int)
        queue = list(reversed(due))
        halt = threading.Event()
        lock = threading.Lock()

        def work() -> None:
            while not halt.is_set() and not self._stop.is_set():
                with lock:
                    if not queue:
                        return
                    batch = queue.pop()
                    if self.check_lease and not self.hold_lease():
                        # Renewed before every push: a long round (a slow M&E IS) must
                        # not outlive the lease, or a second server would push the same
                        # batches meanwhile.
                        log.warning("forwarding lease lost during a round; stopping this round")
                        halt.set()
                        return
                outcome = self._push_or_park(batch)
                with lock:
                    outcomes[outcome.kind] += 1
                if outcome.kind == "retry":
                    halt.set()  # the M&E IS is struggling: the rest waits for the next round

        workers = min(self.settings.forward_concurrency, len(due))
        if workers <= 1:
            work()
        else:
            threads = [
                threading.Thread(target=work, name=f"gnahat-forward-{i}", daemon=True)
                for i in range(workers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return dict(outcomes)

    def _push_or_park(self, batch: ForwardBatch) -> Outcome:
        """:meth:`_push`; a batch that fails for a reason of its own (a payload the adapter
        cannot build, a value that does not encode) is parked with that reason and the
        round goes on with the next: one odd batch never blocks the queue."""
        try:
            return self._push(batch)
        except Exception as exc:
            log.exception("batch %s failed for a reason of its own; parked", batch.batch_key)
            outcome = Outcome("parked", f"could not be sent: {type(exc).__name__}: {exc}"[:500])
            self._record(batch.id, batch.version, batch.batch_key, batch.attempts + 1, outcome,
                         Remote.load(batch.remote))  # fmt: skip
            return outcome

    def _push(self, batch: ForwardBatch) -> Outcome:
        """One batch to the M&E IS, and its outcome recorded."""
        remote = Remote.load(batch.remote)
        body = self.adapter.request(batch.payload, remote, full=bool(batch.full_send))
        more = False
        if body is None:
            outcome = Outcome("sent", "nothing changed since the last delivery")
        else:
            # Every key we send may be there after this, whatever we hear back.
            sent_keys = {value_key(dv, body) for dv in body["dataValues"]}
            remote.scheme = self.mapping.id_scheme
            remote.maybe |= {k for k in sent_keys if k not in remote.confirmed}
            self._note_remote(batch.id, batch.version, remote)
            outcome = self.adapter.send(self.http, body, batch.send_key)  # no transaction
            self._learn(remote, body, outcome)
            if outcome.kind == "locked" and _only_held_values_locked(remote, body, outcome):
                # E7640 on values the M&E IS already confirmed as they are: delivered.
                outcome = Outcome("sent", f"already held, period now closed: {outcome.detail}",
                                  summary=outcome.summary)  # fmt: skip
            more = outcome.kind == "sent" and self._more_to_send(batch, remote)
        self._record(batch.id, batch.version, batch.batch_key, batch.attempts + 1, outcome, remote,
                     more=more)  # fmt: skip
        return outcome

    def _learn(self, remote: Remote, body: dict[str, Any], outcome: Outcome) -> None:
        """Update what the M&E IS holds from its answer: accepted values are confirmed,
        deleted ones gone; values it refused, and every value of an import it aborted,
        were not applied: not "maybe there" (a deletion of them would only be refused in
        turn); unanswered ones stay unknown ("maybe")."""
        if outcome.kind not in ("sent", "refused", "locked"):
            return
        aborted = outcome.kind != "sent" and _applied_nothing(outcome)
        for index, dv in enumerate(body["dataValues"]):
            k = value_key(dv, body)
            if aborted or index in outcome.rejected:
                if k not in remote.confirmed:
                    remote.maybe.discard(k)
                continue
            if dv.get("deleted"):
                remote.confirmed.pop(k, None)
                remote.maybe.discard(k)
            elif outcome.kind == "sent" or outcome.rejected:
                remote.confirmed[k] = str(dv["value"])
                remote.maybe.discard(k)

    def _more_to_send(self, batch: ForwardBatch, remote: Remote) -> bool:
        """After a confirmed push: whether deletions still wait (sent only once every
        value that replaces them is confirmed)."""
        try:
            return self.adapter.request(batch.payload, remote, full=False) is not None
        except Exception:  # an odd payload: judged when it is pushed again
            return False

    def _note_remote(self, batch_id: int, version: int, remote: Remote) -> None:
        with self.sessions() as s, s.begin():
            s.execute(
                update(ForwardBatch).where(ForwardBatch.id == batch_id).values(remote=remote.dump())
            )

    def _record(
        self,
        batch_id: int,
        version: int,
        key: str,
        attempts: int,
        outcome: Outcome,
        remote: Remote,
        *,
        more: bool = False,
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "attempts": attempts,
            "updated_at": now,
            "remote": remote.dump(),
            "problem": outcome.problem,
        }
        if outcome.kind == "sent" and more:  # values confirmed; the deletions go next, at once
            values.update(
                state=PENDING, summary=outcome.summary, last_error=None, warning=None,
                next_attempt_at=now, full_send=False, attempts=0,
            )  # fmt: skip
        elif outcome.kind == "sent":
            values.update(
                state=SENT,
                sent_version=version,
                sent_at=now,
                summary=outcome.summary,
                last_error=None,
                warning=None,
                next_attempt_at=None,
                full_send=False,
            )
        elif outcome.kind == "locked":
            values.update(
                state=LOCKED,
                last_error=outcome.detail,
                summary=outcome.summary,
                next_attempt_at=None,
            )
            log.error("%s is locked in the M&E IS; not retried: %s", key, outcome.detail)
        elif outcome.kind == "parked":
            values.update(
                state=PARKED,
                last_error=outcome.detail,
                summary=outcome.summary,
                next_attempt_at=None,
            )
            log.error("M&E IS answer to %s unusable; parked: %s", key, outcome.detail)
        else:
            wait = outcome.retry_after_s
            if wait is None:
                wait = self.backoff_s(attempts)
            if outcome.kind == "refused":
                wait = max(wait, REFUSED_MIN_WAIT_S)
                values["summary"] = outcome.summary
            values.update(last_error=outcome.detail, next_attempt_at=now + timedelta(seconds=wait))
            log.warning("push of %s failed (%s); retry in %.0f s", key, outcome.detail, wait)
        with self.sessions() as s, s.begin():
            # The rest only for the version we sent: a newer one planned meanwhile stays
            # pending. What the M&E IS holds is true whatever the version.
            s.execute(
                update(ForwardBatch)
                .where(ForwardBatch.id == batch_id, ForwardBatch.version == version)
                .values(**values)
            )
            s.execute(
                update(ForwardBatch).where(ForwardBatch.id == batch_id).values(remote=remote.dump())
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
        """Take or renew the forwarding lease (one forwarder per database at a time; it
        lasts three rounds: see :class:`collector.outbound.outbox.Lease`)."""
        return self.lease.hold()

    def release_lease(self) -> None:
        self.lease.release()

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
        self.metrics.forward_locked.set(counts.get(LOCKED, 0))
        self.metrics.forward_oldest_pending.set(
            (now - oldest).total_seconds() if oldest is not None else 0
        )

    # ------------------------------------------------------------ operators

    def retry(self, keys: Iterable[str] | None = None) -> int:
        """Re-queue parked and locked batches, and make failed pending ones due now (all,
        or those named), after a fix on either side (for a locked period: once an
        administrator opened it)."""
        where = ForwardBatch.state.in_([PARKED, LOCKED]) | (
            (ForwardBatch.state == PENDING) & ForwardBatch.problem.is_not(None)
        )
        if keys is not None:
            where = where & ForwardBatch.batch_key.in_(list(keys))
        with self.sessions() as s, s.begin():
            return outbox.requeue(s, ForwardBatch, self.clock(), where)

    def status(self) -> list[ForwardBatch]:
        with self.sessions() as s:
            rows = list(s.scalars(select(ForwardBatch).order_by(ForwardBatch.batch_key)))
            s.expunge_all()
        return rows

    def dry_run(self, day: date, centre: str | None = None) -> list[tuple[str, Outcome]]:
        """Build the day's batches and send them with ``dryRun=true``: checks a mapping,
        changes nothing here or there."""
        out: list[tuple[str, Outcome]] = []
        with self.sessions() as s:
            self.refresh_mapping(s)
            query = select(DailyAggregate.centre_id).where(DailyAggregate.day == day).distinct()
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            centres = sorted(c for c in s.scalars(query) if centre is None or codes[c] == centre)
            services = dict(s.execute(select(Service.id, Service.code)).all())
            built = []
            for c in centres:
                try:
                    built.append(
                        (
                            codes[c],
                            self.adapter.build(codes[c], day, self.cells(s, day, c, services)),
                        )
                    )
                except Unmapped as exc:
                    out.append((codes[c], Outcome("parked", str(exc), problem="unmapped")))
        for code, payload in built:
            key = f"gnahat:{code}/{day.strftime('%Y%m%d')}:dry-run"
            out.append((code, self.adapter.send(self.http, payload, key, dry_run=True)))
        return sorted(out, key=lambda item: item[0])

    # ------------------------------------------------------------ background

    def _round(self) -> bool:
        report = self.run_once()
        if report.planned or report.outcomes:
            log.info("forwarding: %s", report)
        # A catch-up (an outage, a back-filled centre) goes on at once while rounds
        # come back full and nothing failed.
        return sum(report.outcomes.values()) >= 200 and "retry" not in report.outcomes

    def start(self) -> None:
        self.worker.start()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self) -> None:
        self.worker.stop(self.settings.forward_timeout_s + 5)
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


def _applied_nothing(outcome: Outcome) -> bool:
    """Whether the M&E IS applied none of a request: its import summary counts nothing
    imported, updated or deleted (an aborted import: a data set, org unit or write
    access refused for the whole set, or every value refused)."""
    summary = outcome.summary or {}
    counts = summary.get("importCount") if isinstance(summary, dict) else None
    if not isinstance(counts, dict):
        return False
    return not any(int(counts.get(k) or 0) for k in ("imported", "updated", "deleted"))


def _only_held_values_locked(remote: Remote, body: dict[str, Any], outcome: Outcome) -> bool:
    """Whether every value a "locked" answer refused is one the M&E IS had confirmed as
    we send it (an unchanged day re-sent into a period that has since closed)."""
    if not outcome.rejected:
        return False
    values = body["dataValues"]
    for index in outcome.rejected:
        if index >= len(values):
            return False
        dv = values[index]
        if dv.get("deleted") or remote.confirmed.get(value_key(dv, body)) != str(dv["value"]):
            return False
    return True

"""The one outbox mechanism: store, send, retry with backoff, park with a reason.

Forwarding to the M&E IS (:mod:`collector.outbound.forward`) and webhooks
(:mod:`collector.outbound.webhooks`) both keep rows that say what must reach someone else, and
both run the same machinery, defined once here:

- :class:`Backoff`: capped exponential waits with jitter, ``Retry-After`` honoured;
- :class:`Lease`: one sender per database at a time, a compare-and-swap on one ``meta``
  row (the same on SQLite and PostgreSQL), lasting three rounds, so another ``serve``
  process takes over when the holder stops or dies;
- :class:`Worker`: the background thread that runs rounds, goes on at once while a round
  came back full, and never dies of an exception;
- :func:`enqueue` and :func:`mark`: a row per key with a version that goes up when its
  payload changes (a new idempotency key), and the state transitions
  ``pending`` → ``sent`` | ``pending`` (a retry, at ``next_attempt_at``) | ``parked``
  (with ``last_error``; an operator re-queues it), applied only to the version sent.

No transaction is open while a request is in flight: a slow receiver never holds up
ingest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from collector.models import Meta

log = logging.getLogger(__name__)

PENDING, SENT, PARKED = "pending", "sent", "parked"


@dataclass
class Backoff:
    """Capped exponential backoff: ``base_s`` doubling per attempt up to ``max_s``, each
    wait between half and all of the step (jitter from ``rng``)."""

    base_s: float
    max_s: float
    rng: Callable[[], float]

    def wait(self, attempts: int, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        step = min(self.max_s, self.base_s * 2 ** (max(1, attempts) - 1))
        return float(step * (0.5 + self.rng() / 2))


class Lease:
    """One holder at a time per ``name``, kept in the ``meta`` table."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        owner: str,
        ttl_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self.clock = clock
        self.generation = -1
        """The generation this process took the lease in (-1: never held)."""

    def hold(self) -> bool:
        """Take or renew: ours if free, expired, or already ours. Each change of holder
        raises the lease's generation (what :meth:`check` fences commits with)."""
        now = self.clock()
        expires = (now + timedelta(seconds=self.ttl_s)).isoformat()
        with self.sessions() as s:
            try:
                with s.begin():
                    if s.get(Meta, self.name) is None:
                        s.add(Meta(key=self.name, value=""))
            except IntegrityError:
                pass  # another process created the row first
        with self.sessions() as s, s.begin():
            row = s.get(Meta, self.name)
            if row is None:
                return False
            owner, until, gen = _lease_parts(row.value)
            if owner != self.owner and until and datetime.fromisoformat(until) > now:
                return False
            generation = gen if owner == self.owner and gen == self.generation else gen + 1
            taken = s.execute(
                update(Meta)
                .where(Meta.key == self.name, Meta.value == row.value)
                .values(value=f"{self.owner}|{expires}|{generation}")
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                self.generation = generation
                return True
            return False

    def check(self, session: Session) -> None:
        """Inside a commit's transaction: :class:`Fenced` unless the lease is still ours,
        in the generation we took (PostgreSQL: the row is share-locked to the commit, so
        no one can take it over in between)."""
        q = select(Meta.value).where(Meta.key == self.name)
        if session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(read=True)
        value = session.scalar(q) or ""
        owner, _until, gen = _lease_parts(value)
        if owner != self.owner or gen != self.generation:
            raise Fenced(f"the {self.name} is {value or 'free'}, not ours ({self.owner}, "
                         f"generation {self.generation})")  # fmt: skip

    def release(self) -> None:
        with self.sessions() as s, s.begin():
            row = s.get(Meta, self.name)
            if row is not None and row.value.partition("|")[0] == self.owner:
                s.execute(
                    update(Meta)
                    .where(Meta.key == self.name, Meta.value == row.value)
                    .values(value=f"||{_lease_parts(row.value)[2]}")
                )


class Fenced(Exception):
    """A commit refused: the lease it depends on is no longer this process's."""


def _lease_parts(value: str) -> tuple[str, str, int]:
    """``owner|expires|generation`` (older rows have no generation: 0)."""
    parts = value.split("|")
    owner = parts[0] if parts else ""
    until = parts[1] if len(parts) > 1 else ""
    try:
        gen = int(parts[2]) if len(parts) > 2 and parts[2] else 0
    except ValueError:
        gen = 0
    return owner, until, gen


def attempt(
    what: str, send: Callable[..., tuple[Any, ...]], *args: Any, size: int = 3
) -> tuple[Any, ...]:
    """One row's send. An exception of the row's own (a header its text cannot make, a
    payload that does not encode: a defect or odd data, not a receiver that is down)
    parks that row with the reason, so the rows behind it still go: a queue never stops
    at one bad row. ``size``: how many values ``send`` returns (outcome, reason, ...)."""
    try:
        return send(*args)
    except Exception as exc:
        log.exception("%s failed for a reason of its own; parked", what)
        reason = f"could not be sent: {type(exc).__name__}: {exc}"[:500]
        return (PARKED, reason, *([None] * (size - 2)))


class Worker:
    """Runs ``round()`` every ``interval_s`` in a daemon thread; ``round`` returns True
    when there is more to do at once (a full round in a catch-up)."""

    def __init__(self, name: str, interval_s: float, round: Callable[[], bool]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.round = round
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            more = False
            try:
                more = self.round()
            except Exception:  # a bug or a database hiccup must not end the sender
                log.exception("%s: round failed; trying again next round", self.name)
            if more:
                continue
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def digest(payload: Any) -> str:
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()
    ).hexdigest()


def enqueue(
    session: Session,
    model: Any,
    key: str,
    payload: Any,
    now: datetime,
    *,
    send_key: Callable[[str, int], str],
    **fields: Any,
) -> bool:
    """Queue ``payload`` under ``key``: a new row, or a new version of the row when the
    payload changed (whatever its state: a delivered one goes again, a parked one is
    re-queued with the new content). False when nothing changed."""
    h = digest(payload)
    row = session.scalars(select(model).where(model.batch_key == key)).first()
    if row is None:
        session.add(
            model(
                batch_key=key,
                version=1,
                send_key=send_key(key, 1),
                payload=payload,
                payload_hash=h,
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                pending_since=now,
                created_at=now,
                updated_at=now,
                **fields,
            )
        )
        return True
    if row.payload_hash == h:
        return False
    row.version += 1
    row.send_key = send_key(key, row.version)
    row.payload, row.payload_hash = payload, h
    if row.state != PENDING:
        row.pending_since = now
    row.state, row.attempts, row.next_attempt_at = PENDING, 0, now
    row.last_error = None
    row.updated_at = now
    return True


def due(session: Session, model: Any, now: datetime, limit: int, *order: Any) -> list[Any]:
    """Pending rows whose time has come, detached (sending happens outside a session)."""
    rows = list(
        session.scalars(
            select(model)
            .where(model.state == PENDING, model.next_attempt_at <= now)
            .order_by(*order, model.id)
            .limit(limit)
        )
    )
    session.expunge_all()
    return rows


def mark(
    sessions: sessionmaker[Session],
    model: Any,
    row_id: int,
    version: int,
    now: datetime,
    kind: str,
    *,
    detail: str = "",
    wait_s: float = 0.0,
    attempts: int,
    **extra: Any,
) -> None:
    """Apply what one send came to (``sent``, ``retry`` or ``parked``), to the version
    sent only: a newer version queued meanwhile stays pending."""
    values: dict[str, Any] = {"attempts": attempts, "updated_at": now, **extra}
    if kind == SENT:
        values.update(state=SENT, sent_at=now, last_error=None, next_attempt_at=None)
    elif kind == PARKED:
        values.update(state=PARKED, last_error=detail, next_attempt_at=None)
    else:
        values.update(last_error=detail, next_attempt_at=now + timedelta(seconds=wait_s))
    with sessions() as s, s.begin():
        s.execute(
            update(model).where(model.id == row_id, model.version == version).values(**values)
        )


def requeue(session: Session, model: Any, now: datetime, where: Any) -> int:
    """Make the rows matching ``where`` pending and due now (an operator's retry)."""
    rows = session.scalars(select(model).where(where)).all()
    for r in rows:
        r.state, r.attempts, r.next_attempt_at, r.updated_at = PENDING, 0, now, now
        r.pending_since = now
    return len(rows)

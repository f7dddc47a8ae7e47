"""The MQTT consumer: receive, hand off at once, commit in batches, then ack.

The MQTT client (by default in its own process, see ``collector.intake.receiver``; or a
paho thread in this process) only timestamps each message and hands it over. One
writer thread takes batches (by size or time, whichever first), commits them
through :class:`~collector.intake.store.Store`, and only then publishes ``ack`` ranges.

Faults stay single:

- A batch the database cannot take *for a transient reason* (connection lost,
  lock timeout, database down) is retried with backoff; nothing is acked
  meanwhile, and on stop the retrying ends (the broker keeps what was not acked).
- A batch it *refuses* (a data or integrity error: a value no column can hold) is
  split: message by message, then element by element; what is still refused is
  quarantined on its own, with its key, and acknowledged, so one unit's bad
  element never holds its own backlog, other units or other elements.
- The queue is bounded and the broker gets its PUBACK only after the commit
  (:mod:`collector.intake.receiver`), so a slow database leaves the backlog in the broker.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from collector.config import Settings
from collector.intake.receiver import (
    Generation,
    Item,
    ReceiverProcess,
    Token,
    build_client,
    check_client_settings,
    connect,
    end_network_thread,
    is_retained_event,
    puback,
    token_of,
)
from collector.intake.store import BatchResult, Reason, Received, Store
from collector.metrics import Metrics
from collector.models import DeviceState
from collector.outbound.outbox import Fenced
from device import protocol as p

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


#: The writer failing this many times within a minute: ingest gives up (serve exits).
WRITER_MAX_FAILURES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_transient(exc: BaseException) -> bool:
    """Errors of the database *link* (retry the batch), not of a message (isolate it)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout)


def client_settings(s: Settings) -> dict[str, Any]:
    """What the MQTT client needs, as plain data (it crosses into the receiver process)."""
    return {
        **s.model_dump(),
        "mqtt_host": s.mqtt_host,
        "mqtt_port": s.mqtt_port,
        "mqtt_tls": s.mqtt_tls,
        "mqtt_endpoints": s.mqtt_endpoints,
    }


#: Quick deaths of the receiver child in a row after which ingest gives up (a setting
#: that can never work); the process then exits non-zero and its supervisor decides.
RECEIVER_MAX_QUICK_DEATHS = 5
#: A receiver that lived at least this long did not die "quickly".
RECEIVER_QUICK_S = 30.0


class Ingest:
    """Receive, commit in batches, ack after the commit.

    ``clock`` stamps ``received_at`` when the receiver is a thread; a receiver process
    stamps with the wall clock of that process.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        on_commit: Callable[[BatchResult], None] | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.on_commit = on_commit
        self.on_fatal = on_fatal
        self._queue: queue.Queue[Received] = queue.Queue(maxsize=settings.ingest_queue_max)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._client: Any = None
        self._receiver: ReceiverProcess | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.batches = 0
        self.messages_committed = 0
        self._commit_retry_delay = 0.5
        self._progress = threading.Condition()
        self._generation = Generation()
        self._abandoned = False
        self.failing_since: float | None = None
        """Monotonic time of the first failed commit of the batch now being retried."""
        self.fatal: str | None = None
        """Why ingest gave up (a receiver that dies at once, again and again)."""
        self.taken = 0
        """Messages taken from the broker so far (committed or waiting)."""
        self.commit_failed = threading.Event()
        """Set when a commit fails for a transient reason (tests, health)."""
        self.receiver_backoff_s = 1.0
        """First wait before a dead receiver child is started again (doubles, to 30 s)."""
        self._deaths: list[float] = []
        self._receiver_started = 0.0
        self._drill = threading.Event()
        self.fenced = threading.Event()
        """Set when a commit was refused because the lease is no longer ours."""
        self._held_since: datetime | None = None
        """While ingest drains what the broker held for it after an absence: when that
        absence began (an event received meanwhile may have waited there since; its
        dating says so). ``None`` once the writer finds nothing waiting."""
        self.writer_failures: list[float] = []
        """Monotonic times of the writer's failures in the last minute."""
        self.writer_error: str | None = None
        self.last_commit_mono: float | None = None

    # ------------------------------------------------------------ lifecycle

    def _client_settings(self) -> dict[str, Any]:
        return client_settings(self.settings)

    def start(self) -> None:
        check_client_settings(self._client_settings())  # a bad CA path fails here, named
        self._stop.clear()
        self._abandoned = False
        self._held_since = self._last_heard()
        self._writer = threading.Thread(target=self._write_loop, name="gnahat-writer", daemon=True)
        self._writer.start()
        if self.settings.ingest_receiver == "process":
            self._receiver = ReceiverProcess(
                self._client_settings(),
                self._subscriptions(),
                on_messages=self._on_messages,
                on_event=self._on_event,
            )
            self._receiver.start()
            self._receiver_started = time.monotonic()
            return
        client = build_client(
            self._client_settings(),
            self._subscriptions(),
            self._mqtt_on_message,
            self._on_event,
            self._generation,
        )
        self._client = client
        connect(client, self._client_settings())
        client.loop_start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, commit and ack what is queued, disconnect."""
        client = self._client
        if client is not None:
            client.on_message = None
        if self._receiver is not None:
            self._receiver.pause()  # everything it took is now on our queue
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None
        if client is not None:
            client.disconnect()
            end_network_thread(client)
            self._client = None
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None
        self._on_event("connected", False)

    def kill(self) -> None:
        """Drop the connection without committing queued messages (tests of crash paths)."""
        client, self._client = self._client, None
        self._stop.set()
        if client is not None:
            client.on_message = None
            end_network_thread(client)
            client.socket() and client.socket().close()
        if self._receiver is not None:
            self._receiver.kill()
            self._receiver = None
        with self._queue.mutex:
            self._queue.queue.clear()
        if self._writer is not None:
            self._writer.join(10)
            self._writer = None

    def wait_until_subscribed(self, timeout: float = 10.0) -> bool:
        return self.subscribed.wait(timeout)

    def wait_for_messages(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` messages in all have been committed and acked."""
        with self._progress:
            return self._progress.wait_for(lambda: self.messages_committed >= count, timeout)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything received so far is committed (tests, benchmarks)."""
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    # ------------------------------------------------------------ receiving

    def _subscriptions(self) -> list[str]:
        group = self.settings.mqtt_share_group
        return [
            p.subscription(p.TopicKind.EVENT, share_group=group),
            p.subscription(p.TopicKind.STATUS, share_group=group),
            p.subscription(p.TopicKind.HEALTH, share_group=group),
        ]

    def _on_event(self, kind: str, value: bool | int) -> None:
        if kind == "connected":
            if value:
                self.connected.set()
            else:
                if self.connected.is_set() and not self._stop.is_set():
                    log.warning("disconnected from broker; reconnecting")
                    if self._held_since is None:  # what the broker holds from now on
                        self._held_since = self.clock()
                self.connected.clear()
            self.metrics.mqtt_connected.set(1 if value else 0)
        elif kind == "subscribed":
            self.subscribed.set()
        elif kind == "dropped_qos0":
            self.metrics.qos0_dropped.inc(value)
        elif kind == "retained_ignored":
            self.metrics.retained_ignored.inc(value)
        elif kind == "stale_acks":
            pass  # PUBACKs for a connection that is gone: the broker re-delivers those
        elif kind == "died" and not self._stop.is_set():
            # The child is gone (killed, out of memory): start another. What it had
            # taken but not handed over is re-sent by the broker (never PUBACKed).
            threading.Thread(target=self._restart_receiver, daemon=True).start()

    def _restart_receiver(self) -> None:
        old, self._receiver = self._receiver, None
        if old is not None:
            old.kill()
        if self._stop.is_set():
            return
        now = time.monotonic()
        lived = now - self._receiver_started
        self._deaths = [*self._deaths, now] if lived < RECEIVER_QUICK_S else [now]
        quick = len(self._deaths)
        if quick >= RECEIVER_MAX_QUICK_DEATHS:
            self.fatal = (
                f"the MQTT receiver process died {quick} times in a row within "
                f"{RECEIVER_QUICK_S:.0f} s of starting; check the broker settings "
                f"(GNAHAT_MQTT_URL, credentials, GNAHAT_MQTT_CA_FILE) and the log above"
            )
            log.critical("giving up: %s", self.fatal)
            self.metrics.mqtt_connected.set(0)
            if self.on_fatal is not None:
                self.on_fatal(self.fatal)
            return
        delay = min(self.receiver_backoff_s * 2 ** (quick - 1), 30) * random.uniform(0.8, 1.2)
        log.error("the MQTT receiver process died; starting another in %.1f s", delay)
        if self._stop.wait(delay):
            return
        self.metrics.receiver_restarts.inc()
        receiver = ReceiverProcess(
            self._client_settings(),
            self._subscriptions(),
            on_messages=self._on_messages,
            on_event=self._on_event,
        )
        receiver.start()
        self._receiver_started = time.monotonic()
        self._receiver = receiver

    def _mqtt_on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if is_retained_event(msg):
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
            self.metrics.retained_ignored.inc()
            return
        item = Received(
            msg.topic, bytes(msg.payload), self.clock(), token_of(msg, self._generation),
            held_since=self._held_since,
        )  # fmt: skip
        if item.token is None:  # QoS 0 (health) is best effort: never block the network loop
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.metrics.qos0_dropped.inc()
                return
        else:
            self._queue.put(item)  # QoS 1: bounded by the in-flight window the broker keeps
        self._took(1)

    def _on_messages(self, items: list[Item]) -> None:
        for topic, payload, ts, token, ahead in items:
            decoded = None
            if ahead is not None:  # decoded by the receiver process
                is_batch, events = ahead
                decoded = p.DecodedPayload([p.event_from_tuple(e) for e in events], [], is_batch)
            # Blocks while the queue is full: the pipe and then the broker hold the rest.
            self._queue.put(
                Received(topic, payload, datetime.fromtimestamp(ts, UTC), token,
                         decoded=decoded, held_since=self._held_since)
            )  # fmt: skip
            self._took(1)

    def _took(self, n: int) -> None:
        with self._progress:
            self.taken += n
            self._progress.notify_all()

    def wait_taken(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` messages in all have been taken from the broker."""
        with self._progress:
            return self._progress.wait_for(lambda: self.taken >= count, timeout)

    # ------------------------------------------------------------ the writer

    def _take_batch(self) -> list[Received]:
        """Group commit: the first message, then whatever else is already waiting.

        An idle writer commits a lone press at once; under load, messages pile up while
        the previous commit runs and go together in the next. ``ingest_batch_ms`` > 0
        adds a deliberate wait for more (rarely useful).
        """
        size = self.settings.ingest_batch_size
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            if self.connected.is_set() and self._held_since is not None:
                self._held_since = None  # idle while connected: the broker's backlog is in
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.ingest_batch_ms / 1000
        while len(batch) < size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        """The writer, supervised: an error that escapes a round (a defect of ours, not
        the database's) is logged, counted and shown by health, and the writer goes on
        with the next batch; the failed batch was never PUBACKed, so the receiver is
        started again and the broker re-delivers it. Failing again and again, ingest
        gives up (``fatal``): ``serve`` exits non-zero and systemd starts it afresh."""
        while True:
            try:
                if self._write_round():
                    return
            except Exception as exc:
                now = time.monotonic()
                self.writer_failures = [t for t in self.writer_failures if now - t < 60] + [now]
                self.writer_error = f"{type(exc).__name__}: {exc}"
                self.metrics.writer_failures.inc()
                log.exception("the ingest writer failed; going on with the next batch")
                if len(self.writer_failures) >= WRITER_MAX_FAILURES:
                    self._give_up(
                        f"the ingest writer failed {len(self.writer_failures)} times within "
                        f"60 s (last: {self.writer_error}); see the log above"
                    )
                    return
                if not self._stop.is_set():
                    threading.Thread(target=self._redeliver, daemon=True).start()

    def _redeliver(self) -> None:
        """A new broker session, so the broker delivers again what was taken and never
        PUBACKed: another receiver process, or (a receiver thread) a reconnect."""
        if self._receiver is not None:
            self._restart_receiver()
            return
        client = self._client
        if client is not None:
            try:
                client.reconnect()
            except Exception as exc:  # its loop keeps trying on its own
                log.warning("reconnect after a writer failure: %s", exc)

    def _last_heard(self) -> datetime | None:
        """When the collector last heard any unit: the broker may hold what came since."""
        try:
            with self.store.sessions() as s:
                last = s.scalar(select(func.max(DeviceState.last_seen)))
        except Exception as exc:  # the database is away: the writer retries anyway
            log.warning("could not read when units were last heard: %s", exc)
            return None
        return last if isinstance(last, datetime) else None

    def _give_up(self, why: str) -> None:
        self.fatal = why
        log.critical("giving up: %s", why)
        if self.on_fatal is not None:
            self.on_fatal(why)

    def fail_next_round(self) -> None:
        """A fault drill: the writer's next round fails as a defect would (see cli)."""
        self._drill.set()

    @property
    def writer_failing(self) -> str | None:
        """Why the writer failed, while nothing has been committed since (else None)."""
        if not self.writer_failures or self.writer_error is None:
            return None
        if self.last_commit_mono is not None and self.last_commit_mono > self.writer_failures[-1]:
            return None
        return self.writer_error

    @property
    def writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def _write_round(self) -> bool:
        """One batch taken and committed; True when the writer is done (stopping)."""
        if self._abandoned:
            self._drop_queued()
            return True
        batch = self._take_batch()
        if not batch:
            return self._stop.is_set()
        try:
            if self._drill.is_set():
                self._drill.clear()
                raise RuntimeError("a writer failure asked for by a fault drill (SIGUSR2)")
            self.metrics.queue_depth.set(self._queue.qsize())
            self._commit(batch)
        finally:
            for _ in batch:
                self._queue.task_done()
        return False

    def _drop_queued(self) -> None:
        """Stopping while the database is down: nothing more is committed or acked."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._queue.task_done()

    def _commit(self, batch: list[Received]) -> None:
        delay = self._commit_retry_delay
        while True:
            started = time.perf_counter()
            try:
                result = self._process(batch)
                break
            except Fenced as exc:
                # Another process holds the lease now: commit nothing more, ack nothing;
                # the broker keeps what was taken (never PUBACKed) for the holder.
                log.warning("commit fenced off: %s; ingest stops", exc)
                self.fenced.set()
                self._abandoned = True
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.metrics.db_errors.inc()
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.commit_failed.set()
                if self._stop.is_set():
                    # Stopping: no retry storm. Nothing of this batch was acked, so the
                    # broker (no PUBACK) and the units (no ack) still hold all of it.
                    log.error("commit failed while stopping; leaving the rest to the broker")
                    self._abandoned = True
                    return
                log.error("commit failed, retrying in %.1fs: %s", delay, _describe(exc))
                if self._stop.wait(delay):
                    continue  # one last try, then give up (above)
                delay = min(max(delay, 0.05) * 2, 30) * random.uniform(0.8, 1.2)
        self.failing_since = None
        self.last_commit_mono = time.monotonic()
        self.metrics.record(result, time.perf_counter() - started, len(batch))
        self._publish_acks(result, [m.token for m in batch])
        if self.on_commit is not None:
            self.on_commit(result)
        with self._progress:
            self.batches += 1
            self.messages_committed += len(batch)
            self._progress.notify_all()

    def _process(self, batch: list[Received]) -> BatchResult:
        try:
            return self.store.process(batch)
        except Fenced:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch of %d refused (%s); isolating message by message", len(batch), exc)
        total = BatchResult()
        for msg in batch:
            _merge(total, self._process_one(msg))
        return total

    def _process_one(self, msg: Received) -> BatchResult:
        """One message alone; if refused, each of its elements alone; what fails, quarantined."""
        try:
            return self.store.process([msg])
        except Fenced:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            error: Exception = exc
        parts = self.store.split_message(msg)
        total = BatchResult()
        for part, key in parts:
            if len(parts) > 1:
                try:
                    _merge(total, self.store.process([part]))
                    continue
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    error = exc
            refused = isinstance(error, DBAPIError | StatementError)
            reason = Reason.REFUSED_BY_DATABASE if refused else Reason.INTERNAL_ERROR
            if refused:
                log.error("the database refused a message on %s (%s): quarantined", part.topic, key)
            else:
                log.exception("a message on %s broke processing: quarantined", part.topic)
            self.metrics.isolated.labels(reason).inc()
            _merge(total, self.store.quarantine_raw(part, reason, _describe(error), key=key))
        return total

    def _publish_acks(self, result: BatchResult, tokens: list[Token]) -> None:
        acks = result.ack_messages()
        receiver = self._receiver  # read once: a restart may set it to None meanwhile
        if receiver is not None:
            if not receiver.publish_acks(acks, tokens):
                self.metrics.acks_dropped.inc(len(acks))  # the units re-send; dedup absorbs
                return
        elif self._client is not None:
            for topic, payload in acks:
                self._client.publish(topic, payload, qos=1)
            puback(self._client, self._generation, tokens)
        else:
            self.metrics.acks_dropped.inc(len(acks))
            return
        self.metrics.acks.inc(len(acks))


def _describe(exc: BaseException) -> str:
    """The error's own first line (a database message names the column and the value)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:2000]


def _merge(total: BatchResult, one: BatchResult) -> None:
    for key, seqs in one.acks.items():
        total.acks.setdefault(key, set()).update(seqs)
    total.received += one.received
    total.stored += one.stored
    total.duplicates += one.duplicates
    total.quarantined.update(one.quarantined)
    total.stored_keys.extend(one.stored_keys)
    total.quarantine_bytes_cut += one.quarantine_bytes_cut

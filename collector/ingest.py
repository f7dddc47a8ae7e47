"""The MQTT consumer: receive, hand off at once, commit in batches, then ack.

The MQTT client (by default in its own process, see ``collector.receiver``; or a
paho thread in this process) only timestamps each message and hands it over. One
writer thread takes batches (by size or time, whichever first), commits them
through :class:`~collector.store.Store`, and only then publishes ``ack`` ranges.
A failed commit is retried with backoff (nothing is acked meanwhile); a message
that breaks processing is quarantined as ``internal_error``, never fatal.
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

from sqlalchemy.exc import DBAPIError, OperationalError

from collector.config import Settings
from collector.metrics import Metrics
from collector.receiver import ReceiverProcess, build_client, connect
from collector.store import BatchResult, Received, Store
from device import protocol as p
from device.mqtt_loop import stop_loop

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.on_commit = on_commit
        self._queue: queue.Queue[Received] = queue.Queue()
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

    # ------------------------------------------------------------ lifecycle

    def _client_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            **s.model_dump(),
            "mqtt_host": s.mqtt_host,
            "mqtt_port": s.mqtt_port,
            "mqtt_tls": s.mqtt_tls,
        }

    def start(self) -> None:
        self._stop.clear()
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
            return
        client = build_client(
            self._client_settings(), self._subscriptions(), self._mqtt_on_message, self._on_event
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
            stop_loop(client)
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
            stop_loop(client)
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

    def _on_event(self, kind: str, value: bool) -> None:
        if kind == "connected":
            if value:
                self.connected.set()
            else:
                if self.connected.is_set() and not self._stop.is_set():
                    log.warning("disconnected from broker; reconnecting")
                self.connected.clear()
            self.metrics.mqtt_connected.set(1 if value else 0)
        elif kind == "subscribed":
            self.subscribed.set()
        elif kind == "died" and not self._stop.is_set():
            # The child is gone (killed, out of memory): start another. What it had
            # taken but not handed over is re-sent by the units (never acked).
            threading.Thread(target=self._restart_receiver, daemon=True).start()

    def _restart_receiver(self) -> None:
        old, self._receiver = self._receiver, None
        if old is not None:
            old.kill()
        if self._stop.is_set():
            return
        self.metrics.receiver_restarts.inc()
        receiver = ReceiverProcess(
            self._client_settings(),
            self._subscriptions(),
            on_messages=self._on_messages,
            on_event=self._on_event,
        )
        receiver.start()
        self._receiver = receiver

    def _mqtt_on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._queue.put(Received(msg.topic, bytes(msg.payload), self.clock()))

    def _on_messages(self, items: list[tuple[str, bytes, float]]) -> None:
        for topic, payload, ts in items:
            self._queue.put(Received(topic, payload, datetime.fromtimestamp(ts, UTC)))

    # ------------------------------------------------------------ the writer

    def _take_batch(self) -> list[Received]:
        size = self.settings.ingest_batch_size
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
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
        while True:
            batch = self._take_batch()
            if not batch:
                if self._stop.is_set():
                    return
                continue
            try:
                self.metrics.queue_depth.set(self._queue.qsize())
                self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _commit(self, batch: list[Received]) -> None:
        delay = self._commit_retry_delay
        while True:
            started = time.perf_counter()
            try:
                result = self._process(batch)
                break
            except (OperationalError, DBAPIError) as exc:
                self.metrics.db_errors.inc()
                log.error("commit failed, retrying in %.1fs: %s", delay, exc)
                if self._stop.wait(delay) and self._client is None and self._receiver is None:
                    return
                delay = min(max(delay, 0.05) * 2, 30) * random.uniform(0.8, 1.2)
        self.metrics.record(result, time.perf_counter() - started, len(batch))
        self._publish_acks(result)
        if self.on_commit is not None:
            self.on_commit(result)
        with self._progress:
            self.batches += 1
            self.messages_committed += len(batch)
            self._progress.notify_all()

    def _process(self, batch: list[Received]) -> BatchResult:
        try:
            return self.store.process(batch)
        except (OperationalError, DBAPIError):
            raise
        except Exception:
            log.exception("batch failed to process; retrying message by message")
        total = BatchResult()
        for msg in batch:
            try:
                one = self.store.process([msg])
            except (OperationalError, DBAPIError):
                raise
            except Exception as exc:
                log.exception("message on %s broke processing; quarantined", msg.topic)
                one = self.store.quarantine_raw(msg, "internal_error", repr(exc))
            _merge(total, one)
        return total

    def _publish_acks(self, result: BatchResult) -> None:
        acks = result.ack_messages()
        if self._receiver is not None:
            self._receiver.publish_acks(acks)
        elif self._client is not None:
            for topic, payload in acks:
                self._client.publish(topic, payload, qos=1)
        else:
            return
        self.metrics.acks.inc(len(acks))


def _merge(total: BatchResult, one: BatchResult) -> None:
    for key, seqs in one.acks.items():
        total.acks.setdefault(key, set()).update(seqs)
    total.received += one.received
    total.stored += one.stored
    total.duplicates += one.duplicates
    total.quarantined.update(one.quarantined)
    total.stored_keys.extend(one.stored_keys)

"""The unit's MQTT link: drains the outbox in order and forgets only what the collector acks.

Runs on its own thread; press handling never waits on it. Events go out as
single objects or, when the unit is behind, as arrays of up to ``batch_max``.
Events unacked after ``ack_timeout_s`` (or at a reconnect) are sent again with a
fresh ``sent_mono_ms``; the collector deduplicates by ``(device, stream, seq)``.
While no ack arrives at all (a collector down, a database stalled), each round of
re-sends doubles the wait, up to :data:`MAX_RESEND_FACTOR` times ``ack_timeout_s``,
so a fleet does not multiply a backlog that is already waiting in the broker; the
first ack brings the wait back to ``ack_timeout_s``.

A link that holds events and has heard no ack for :data:`DEAF_FACTOR` times the longest
re-send wait (a connection the broker keeps open but no longer delivers on, a client
loop that died) starts a new client at the next broker endpoint: whatever went wrong
with the old connection or session, a new one is made from nothing.
"""

from __future__ import annotations

import logging
import queue
import random
import shutil
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device import protocol as p
from device.clock import Clock
from device.config import UnitConfig
from device.endpoints import Failover
from device.mqtt_loop import stop_loop
from device.outbox import Outbox

log = logging.getLogger(__name__)

#: Longest wait before re-sending, as a multiple of ``ack_timeout_s`` (30 s → 8 min).
MAX_RESEND_FACTOR = 16
#: A link holding events with no ack for this many times the longest re-send wait starts
#: a new client (30 s → 16 min; the scenarios' 3 s → 96 s).
DEAF_FACTOR = 2


def stamp(payload: bytes, sent_mono_ms: int, boot: str) -> bytes:
    """Add ``sent_mono_ms``/``sent_boot`` to a stored compact event object (no re-parse)."""
    return payload[:-1] + b',"sent_mono_ms":%d,"sent_boot":"%s"}' % (
        sent_mono_ms,
        boot.encode("ascii"),
    )


def cpu_temperature_c() -> float | None:
    try:
        with open("/sys/class/thermal/thermal_zone0/temp", encoding="ascii") as fh:
            return int(fh.read().strip()) / 1000
    except (OSError, ValueError):
        return None


class Link:
    def __init__(
        self,
        config: UnitConfig,
        outbox: Outbox,
        clock: Clock,
        *,
        boot: str,
        health_extra: Callable[[], dict[str, Any]] | None = None,
        on_command: Callable[[p.Command, dict[str, Any]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.mqtt = config.mqtt
        self.device = config.device_id
        self.outbox = outbox
        self.clock = clock
        self.boot = boot
        self.health_extra = health_extra or dict
        self.on_command = on_command
        self.rng = rng or random.Random()
        self.client: mqtt.Client | None = None
        self.failover: Failover | None = None
        self._resubscribe_at: int | None = None
        """Monotonic ms at which to subscribe again after a refused subscription."""
        self._resubscribe_wait_ms = 1000
        self.connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._inflight: dict[int, int] = {}
        self._sent_upto = 0
        self._thread: threading.Thread | None = None
        self._started_mono = clock.mono_ms()
        self._next_health = 0
        self.last_ack_mono: int | None = None
        self._heard_mono = self._started_mono
        """Monotonic ms of the last ack or accepted connection (the deaf-link watchdog)."""
        self._pending_since: int | None = None
        """Monotonic ms since which the outbox has held events (None while it is empty)."""
        self.restarts = 0
        """New clients started because the link heard nothing while holding events."""
        self.published = 0
        self.resent = 0
        self.acked = 0
        self.resend_wait_ms = int(self.mqtt.ack_timeout_s * 1000)
        """Current wait before unacked events are sent again (doubles while no ack comes)."""
        self._ack_cond = threading.Condition()
        self.reconnect_failures = 0
        """Lost or refused connections since the last good one (the back-off's count)."""
        self.reconnect_wait_s = 0
        """The wait chosen after the last of them."""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._start_client(0)
        self._thread = threading.Thread(target=self._run, name="gnahat-link", daemon=True)
        self._thread.start()

    def _start_client(self, first: int) -> None:
        """A new paho client whose first attempt goes to endpoint number ``first``."""
        cfg = self.mqtt
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password())
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file,
                certfile=cfg.cert_file,
                keyfile=cfg.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(
            p.status_topic(self.device), p.encode_status(p.Presence.OFFLINE), qos=1, retain=True
        )
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(64)
        self._jitter_backoff(client)
        client.on_connect = self._mqtt_on_connect
        client.on_disconnect = self._mqtt_on_disconnect
        client.on_subscribe = self._mqtt_on_subscribe
        client.on_message = self._mqtt_on_message
        self.client = client
        failover = Failover(
            cfg.endpoints(),
            lambda host, port: client.connect_async(host, port, keepalive=cfg.keepalive_s),
            quick=lambda: self._jitter_backoff(client),
            first=first,
        )
        self.failover = failover

        def unreachable(c: mqtt.Client, userdata: Any) -> None:
            self._grow_backoff(c)
            failover.failed(c, userdata)

        client.on_connect_fail = unreachable
        failover.start()
        client.loop_start()

    def _restart_client(self, now: int) -> None:
        """Drop the current client (its callbacks first, so it reports nothing more) and
        start a new one at the next endpoint."""
        old = self.client
        following = 0
        if self.failover is not None:
            following = (self.failover.index + 1) % len(self.failover.endpoints)
        self.connected.clear()
        self.client = None
        if old is not None:
            for name in ("on_connect", "on_disconnect", "on_subscribe", "on_message"):
                setattr(old, name, None)
            old.on_connect_fail = None
            old.disconnect()
            stop_loop(old)
        self.restarts += 1
        self._heard_mono = now
        self._start_client(following)

    def _watch_deafness(self, now: int) -> None:
        if self.outbox.depth == 0:
            self._pending_since = None
            return
        if self._pending_since is None:
            self._pending_since = now
        deaf_ms = int(self.mqtt.ack_timeout_s * 1000 * MAX_RESEND_FACTOR * DEAF_FACTOR)
        silent_ms = now - max(self._heard_mono, self._pending_since)
        if silent_ms >= deaf_ms and self.failover is not None:  # started, not hand-wired
            log.warning(
                "no ack for %.0f s while holding %d event(s); starting a new connection",
                silent_ms / 1000,
                self.outbox.depth,
            )
            self._restart_client(now)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        client, self.client = self.client, None
        if client is not None:
            if self.connected.is_set():
                info = client.publish(
                    p.status_topic(self.device),
                    p.encode_status(p.Presence.OFFLINE),
                    qos=1,
                    retain=True,
                )
                info.wait_for_publish(2)
            client.disconnect()
            stop_loop(client)
        self.connected.clear()

    def wake(self) -> None:
        """Something was appended to the outbox: send it now."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Events sent on this connection and not yet acked."""
        return len(self._inflight)

    def wait_until_drained(self, timeout: float = 60.0) -> bool:
        """Block until the outbox is empty (everything acked)."""
        with self._ack_cond:
            return self._ack_cond.wait_for(lambda: self.outbox.depth == 0, timeout)

    # ------------------------------------------------------------ paho callbacks (paho's thread)

    def _jitter_backoff(self, client: mqtt.Client) -> None:
        """The shortest wait before the next attempt (a new client, a broker not yet
        tried): jittered around ``reconnect_min_s``."""
        lo, hi = self.mqtt.reconnect_min_s, self.mqtt.reconnect_max_s
        client.reconnect_delay_set(
            min_delay=max(1, round(lo * self.rng.uniform(0.5, 1.5))),
            max_delay=max(1, round(hi * self.rng.uniform(0.8, 1.0))),
        )

    def _grow_backoff(self, client: mqtt.Client) -> int:
        """After a lost or refused connection: the next wait doubles up to
        ``reconnect_max_s``, each drawn at random from its upper half ("equal jitter"),
        so a fleet refused at once (a rotated credential, a node's bcrypt checks) spreads
        out instead of knocking together every second. paho's own doubling restarts
        whenever its delays are set, so the link keeps the count and sets each wait."""
        lo, hi = max(self.mqtt.reconnect_min_s, 1.0), max(self.mqtt.reconnect_max_s, 1.0)
        self.reconnect_failures += 1
        ceiling = min(hi, lo * 2 ** min(self.reconnect_failures - 1, 30))
        wait = int(max(1, round(ceiling * self.rng.uniform(0.5, 1.0))))
        client.reconnect_delay_set(min_delay=wait, max_delay=wait)
        self.reconnect_wait_s = wait
        return wait

    def _mqtt_on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the unit: %s", reason)
            return
        if self.failover is not None:
            self.failover.connected()
        self.reconnect_failures = 0  # a good connection: the next loss waits the least
        self._jitter_backoff(client)
        self._subscribe(client)
        client.publish(
            p.status_topic(self.device),
            p.encode_status(p.Presence.ONLINE, firmware=self.config.firmware, boot=self.boot),
            qos=1,
            retain=True,
        )
        self._inbox.put(("connected", b""))
        self.connected.set()
        self._wake.set()

    def _mqtt_on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            wait = self._grow_backoff(client)
            log.warning("link down (%s); next attempt in about %d s", reason, wait)
            if self.failover is not None:
                self.failover.lost(client, userdata, flags, reason, props)

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe([(p.ack_topic(self.device), 1), (p.cmd_topic(self.device), 1)])

    def _mqtt_on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        """A refused subscription (a broker cluster electing a leader, an ACL) would leave
        the unit deaf to its acks for the whole connection: try again, with back-off."""
        if any(r.is_failure for r in reasons):
            log.warning("the broker refused the ack subscription (%s); trying again", reasons)
            self._inbox.put(("subscribe_failed", b""))
            self._wake.set()
        else:
            self._inbox.put(("subscribed", b""))

    def _mqtt_on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.topic, bytes(msg.payload)))
        self._wake.set()

    # ------------------------------------------------------------ the drain thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                log.exception("link step failed")
                self._stop.wait(1.0)
                continue
            self._wake.wait(self._sleep_s())
            self._wake.clear()

    def _sleep_s(self) -> float:
        now = self.clock.mono_ms()
        waits = [1.0, max(0.0, (self._next_health - now) / 1000)]
        if self._inflight:
            oldest = min(self._inflight.values())
            waits.append(max(0.0, (oldest + self.resend_wait_ms - now) / 1000))
        return max(0.01, min(waits))

    def _step(self) -> None:
        self._handle_inbox()
        now = self.clock.mono_ms()
        self._watch_deafness(now)
        client = self.client
        if client is None or not self.connected.is_set():
            return
        if self._resubscribe_at is not None and now >= self._resubscribe_at:
            self._resubscribe_at = None
            self._subscribe(client)
        if now >= self._next_health:
            self._next_health = now + int(self.mqtt.health_interval_s * 1000)
            client.publish(p.health_topic(self.device), self.health_payload(), qos=0)
        timeout_ms = self.resend_wait_ms
        expired = sorted(s for s, t in self._inflight.items() if now - t >= timeout_ms)
        if expired:
            self.resent += len(expired)
            ceiling = int(self.mqtt.ack_timeout_s * 1000 * MAX_RESEND_FACTOR)
            self.resend_wait_ms = min(self.resend_wait_ms * 2, ceiling)
            self._publish(client, self.outbox.get(expired[: self.mqtt.inflight_max]))
        room = self.mqtt.inflight_max - len(self._inflight)
        while room > 0 and self.connected.is_set():
            rows = self.outbox.pending(after=self._sent_upto, limit=min(room, 1024))
            if not rows:
                break
            self._publish(client, rows)
            self._sent_upto = rows[-1][0]
            room -= len(rows)
            self._handle_inbox()

    def _publish(self, client: mqtt.Client, rows: list[tuple[int, bytes]]) -> None:
        topic = p.event_topic(self.device)
        size = self.mqtt.batch_max
        for i in range(0, len(rows), size):
            chunk = rows[i : i + size]
            now = self.clock.mono_ms()
            stamped = [stamp(payload, now, self.boot) for _, payload in chunk]
            body = stamped[0] if len(stamped) == 1 else b"[" + b",".join(stamped) + b"]"
            client.publish(topic, body, qos=1)
            for seq, _ in chunk:
                self._inflight[seq] = now
            self.published += len(chunk)

    def _handle_inbox(self) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if topic == "connected":
                self._heard_mono = self.clock.mono_ms()
                # A new connection: whatever was in flight may be lost; send it all again.
                self._inflight.clear()
                self._sent_upto = 0
                self._next_health = 0
                self._resubscribe_at = None
                self._resubscribe_wait_ms = 1000
            elif topic == "subscribe_failed":
                self._resubscribe_at = self.clock.mono_ms() + self._resubscribe_wait_ms
                self._resubscribe_wait_ms = min(
                    self._resubscribe_wait_ms * 2, int(self.mqtt.reconnect_max_s * 1000)
                )
            elif topic == "subscribed":
                self._resubscribe_wait_ms = 1000
            elif topic == p.ack_topic(self.device):
                self._handle_ack(payload)
            elif topic == p.cmd_topic(self.device):
                try:
                    command, args = p.decode_cmd(payload)
                except p.ProtocolError as exc:
                    log.warning("bad command: %s", exc)
                    continue
                if self.on_command is not None:
                    self.on_command(command, args)

    def _handle_ack(self, payload: bytes) -> None:
        try:
            ack = p.decode_ack(payload)
        except p.ProtocolError as exc:
            log.warning("bad ack: %s", exc)
            return
        if ack.stream != self.outbox.stream:
            return  # an ack for a stream this card no longer has
        removed = self.outbox.ack(ack.ranges, at=self.clock.now().isoformat())
        for lo, hi in ack.ranges:
            if hi - lo < 4096:
                for seq in range(lo, hi + 1):
                    self._inflight.pop(seq, None)
            else:
                for seq in [s for s in self._inflight if lo <= s <= hi]:
                    del self._inflight[seq]
        self.resend_wait_ms = int(self.mqtt.ack_timeout_s * 1000)  # the collector answers
        with self._ack_cond:
            self.acked += removed
            self.last_ack_mono = self._heard_mono = self.clock.mono_ms()
            self._ack_cond.notify_all()

    # ------------------------------------------------------------ health

    def oldest_unacked_s(self) -> tuple[float | None, bool]:
        """Age of the oldest unacked event, and whether it is only a lower bound.

        Same boot: the monotonic clock says it exactly. An earlier boot (its monotonic
        stamp means nothing now): the wall clock, when both that press and now were
        synced; else at least this boot's uptime.
        """
        now = self.clock.mono_ms()
        try:
            found = self.outbox.oldest_event()
        except (p.ProtocolError, ValueError):  # unreadable row: its age is unknown
            return (now - self._started_mono) / 1000, True
        if found is None:
            return None, False
        created_mono, event = found
        if event.boot == self.boot:
            return max(0.0, (now - created_mono) / 1000), False
        if event.clock_synced and self.clock.synced():
            age = (self.clock.now() - event.at_datetime).total_seconds()
            return max(age, (now - self._started_mono) / 1000), False
        return (now - self._started_mono) / 1000, True

    def health_payload(self) -> bytes:
        now = self.clock.mono_ms()
        age, lower_bound = self.oldest_unacked_s()
        try:
            disk = shutil.disk_usage(self.outbox.path.parent).free / 2**20
        except OSError:
            disk = None
        extra = dict(self.health_extra())
        # The monotonic clock now, in this boot: a heartbeat is never held by a broker
        # (QoS 0), so the collector dates unsynced presses of this boot by it.
        extra["boot"] = self.boot
        extra["mono_ms"] = now
        if lower_bound:
            extra["oldest_unacked_lower_bound"] = True
        suppressed = int(extra.pop("suppressed_presses", 0))
        return p.encode_health(
            p.Health(
                device=self.device,
                at=self.clock.now().isoformat(),
                queue_depth=self.outbox.depth,
                oldest_unacked_s=age,
                uptime_s=(now - self._started_mono) / 1000,
                firmware=self.config.firmware,
                clock_synced=self.clock.synced(),
                disk_free_mb=None if disk is None else round(disk, 1),
                cpu_temp_c=cpu_temperature_c(),
                suppressed_presses=suppressed,
                stream=self.outbox.stream,
                last_seq=self.outbox.last_seq,
                extra=extra,
            )
        )

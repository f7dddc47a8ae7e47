"""The MQTT side of ingest in its own process, so receiving and committing use two cores.

The child runs the paho client (fixed client id, persistent session, subscriptions
made in ``on_connect``), timestamps each message and ships them to the parent in
chunks over a pipe; the parent sends back the ack messages to publish after its
commit. Nothing about the guarantees changes: an ack still leaves only after the
commit, and whatever the child received but the parent never committed is
re-sent by the units.

Backpressure: the client acknowledges a QoS 1 message to the broker (PUBACK) only
when the parent says it is committed (paho's ``manual_ack``). The broker sends at
most its in-flight window of unacknowledged messages (MQTT 5 ``Receive Maximum``,
which the collector sets, or the broker's ``max_inflight_messages`` for 3.1.1), so
while the database is slow or down the backlog stays in the broker, not in our
memory. A PUBACK names a packet id of one connection: each message carries the
generation of the connection it came on, and a PUBACK for an older connection is
not sent (the broker re-delivers that message, and deduplication absorbs it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import ssl
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from device import protocol as p
from device.endpoints import Failover

log = logging.getLogger(__name__)

#: (connection generation, packet id) of a QoS 1 message; ``None`` for QoS 0.
Token = tuple[int, int] | None
#: An event payload the child decoded: (is_batch, each event as ``event_as_tuple``).
Decoded = tuple[bool, list[tuple[Any, ...]]] | None
#: A received message as the child ships it: topic, payload, receipt time, token and
#: the payload decoded (None: not an event, or something is wrong with it).
Item = tuple[str, bytes, float, Token, Decoded]


def decode_ahead(topic: str, payload: bytes) -> Decoded:
    """Decode an event payload in the receiver process, which has time to spare, so
    that the writer (the busiest thread of ingest) gets it ready. Anything wrong is
    left to the writer, which decodes it again and quarantines it with the reason."""
    try:
        device, kind = p.parse_topic(topic)
        if kind is not p.TopicKind.EVENT:
            return None
        decoded = p.decode_payload(payload, topic_device=device)
    except p.ProtocolError:
        return None
    if decoded.errors:
        return None
    return decoded.is_batch, [p.event_as_tuple(e) for e in decoded.events]


#: QoS 0 messages (health) held while the parent does not take them; beyond this the
#: newest are dropped (and counted): QoS 0 is best effort by definition.
MAX_QOS0_BUFFERED = 10_000


class SettingsError(ValueError):
    """A setting that can never work (a missing CA file): fail at once, name it."""


def check_client_settings(settings: dict[str, Any]) -> None:
    """Refuse what would make every connection attempt fail, before starting anything."""
    if settings.get("mqtt_tls"):
        ca = settings.get("mqtt_ca_file")
        if ca:
            if not os.path.isfile(ca):
                raise SettingsError(f"GNAHAT_MQTT_CA_FILE: {ca} does not exist or is no file")
            try:
                ssl.create_default_context(cafile=ca)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise SettingsError(
                    f"GNAHAT_MQTT_CA_FILE: {ca} holds no usable certificate: {exc}"
                ) from None
    if settings.get("mqtt_password") and not settings.get("mqtt_username"):
        raise SettingsError("GNAHAT_MQTT_PASSWORD is set but GNAHAT_MQTT_USERNAME is not")


def end_network_thread(client: Any) -> None:
    """Stop paho's ``loop_start`` thread and wait for it.

    paho's ``loop_stop`` can raise ``AttributeError`` when the thread clears itself
    between its two reads of it (right after a disconnect); that thread is ending anyway.
    """
    thread = getattr(client, "_thread", None)
    with contextlib.suppress(AttributeError):
        client.loop_stop()
    if thread is not None and thread is not threading.current_thread():
        thread.join(10)


class Generation:
    """The generation of the client's current connection (bumped at each CONNACK)."""

    def __init__(self) -> None:
        self.generation = 0


def build_client(
    settings: dict[str, Any],
    subscriptions: list[str],
    on_message: Any,
    events: Any,
    conn: Generation | None = None,
) -> Any:
    """A paho client configured as the collector's (used by both receiver kinds).

    ``manual_ack``: a QoS 1 message is acknowledged to the broker by the caller, after
    its commit (see the module docstring).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = settings["mqtt_protocol"] == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings["mqtt_client_id"],
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    if settings.get("mqtt_username"):
        client.username_pw_set(settings["mqtt_username"], settings.get("mqtt_password"))
    if settings.get("mqtt_tls"):
        client.tls_set(ca_certs=settings.get("mqtt_ca_file"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    state = conn if conn is not None else Generation()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
        state.generation += 1
        log.info("connected to broker (session present: %s)", flags.session_present)
        events("connected", True)
        c.subscribe([(t, 1) for t in subscriptions])

    retry = {"wait": 1.0}

    def on_subscribe(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            # A broker cluster electing a leader refuses for a moment; an ACL for good.
            # Either way ingest would sit deaf on this connection: try again, backing off.
            log.error("subscription refused: %s; trying again in %.0f s", reasons, retry["wait"])
            timer = threading.Timer(retry["wait"], c.subscribe, [[(t, 1) for t in subscriptions]])
            timer.daemon = True
            timer.start()
            retry["wait"] = min(retry["wait"] * 2, 30.0)
            return
        retry["wait"] = 1.0
        log.info("subscribed to %s", ", ".join(subscriptions))
        events("subscribed", True)

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        events("connected", False)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    return client


def is_retained_event(msg: Any) -> bool:
    """A retained copy on an ``event`` topic, sent because we (re)subscribed.

    Never new work: a live publish reaches a subscribed collector with the retain flag
    cleared (MQTT 3.1.1 §3.3.1.3, MQTT 5 §3.3.1.3), and a unit re-sends what is not
    acked. Units never retain events; the copy is acknowledged, counted and dropped, so
    it is not replayed into ingest at every new session.
    """
    return bool(msg.retain) and str(msg.topic).endswith("/event")


def token_of(msg: Any, conn: Generation) -> Token:
    return (conn.generation, msg.mid) if msg.qos > 0 else None


def puback(client: Any, conn: Generation, tokens: list[Token]) -> int:
    """Acknowledge committed messages to the broker; returns how many were stale."""
    stale = 0
    for token in tokens:
        if token is None:
            continue
        generation, mid = token
        if generation == conn.generation:
            client.ack(mid, 1)
        else:
            stale += 1  # that connection is gone: the broker re-delivers, dedup absorbs it
    return stale


def connect(client: Any, settings: dict[str, Any]) -> Failover:
    """Arm ``client`` for the first broker of the list; a lost or failed connection
    moves the next attempt to the next broker (see :mod:`device.endpoints`)."""
    kwargs: dict[str, Any] = {}
    if settings["mqtt_protocol"] == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings["mqtt_session_expiry_s"]
        props.ReceiveMaximum = settings["mqtt_receive_maximum"]
        kwargs = {"clean_start": False, "properties": props}
    failover = Failover(
        [(h, p) for h, p in settings["mqtt_endpoints"]],  # lists once pickled: tuples again
        lambda host, port: client.connect_async(host, port, keepalive=30, **kwargs),
        quick=lambda: client.reconnect_delay_set(min_delay=1, max_delay=30),
    )
    previous = client.on_disconnect
    previous_connect = client.on_connect

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            failover.connected()
        if previous_connect is not None:
            previous_connect(c, userdata, flags, reason, props)

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if previous is not None:
            previous(c, userdata, flags, reason, props)
        failover.lost(c, userdata, flags, reason, props)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_connect_fail = failover.failed
    failover.start()
    return failover


def _child(
    conn: Connection, settings: dict[str, Any], subscriptions: list[str], log_level: int
) -> None:
    import signal

    # The parent decides when this process ends ("stop", or the pipe closing when the
    # parent dies); a Ctrl-C or SIGTERM sent to the whole group must not cut it short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    buf: list[Item] = []
    have = threading.Condition()
    send_lock = threading.Lock()
    taking = threading.Event()
    taking.set()
    done = threading.Event()
    pause = threading.Event()
    dropped = [0]
    mqtt_conn = Generation()

    def send(item: Any) -> None:
        with send_lock:
            conn.send(item)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        if not taking.is_set():
            return  # not acknowledged: the broker sends it again to the next session
        if is_retained_event(msg):
            if msg.qos > 0:
                c.ack(msg.mid, msg.qos)
            send(("event", "retained_ignored", 1))
            return
        with have:
            if msg.qos == 0 and len(buf) >= MAX_QOS0_BUFFERED:
                dropped[0] += 1
                return
            buf.append((msg.topic, bytes(msg.payload), time.time(), token_of(msg, mqtt_conn), None))
            have.notify()

    def sender() -> None:
        # Only this thread ships messages (so "paused" follows the last of them), and it
        # sleeps until there is something to ship: an idle receiver does not wake up.
        while True:
            with have:
                have.wait_for(lambda: bool(buf) or pause.is_set() or done.is_set())
                if done.is_set():
                    return
                chunk, buf[:] = list(buf), []
                lost, dropped[0] = dropped[0], 0
                pausing = pause.is_set()
                pause.clear()
            try:
                if chunk:
                    send(("msgs", [(*m[:4], decode_ahead(m[0], m[1])) for m in chunk]))
                if lost:
                    send(("event", "dropped_qos0", lost))
                if pausing:
                    send(("paused",))
            except (OSError, BrokenPipeError):
                return

    def tell(kind: str, value: bool | int) -> None:
        # The parent died: the command loop below sees the pipe close and ends.
        with contextlib.suppress(OSError):
            send(("event", kind, value))

    client = build_client(settings, subscriptions, on_message, tell, mqtt_conn)
    connect(client, settings)
    client.loop_start()
    ship = threading.Thread(target=sender, name="gnahat-receiver-send", daemon=True)
    ship.start()
    try:
        while True:
            cmd = conn.recv()  # blocks: commands come only from the parent
            if cmd[0] == "ack":
                for topic, payload in cmd[1]:
                    client.publish(topic, payload, qos=1)
                stale = puback(client, mqtt_conn, cmd[2])
                if stale:
                    send(("event", "stale_acks", stale))
            elif cmd[0] == "pause":
                taking.clear()
                with have:
                    pause.set()
                    have.notify()
            elif cmd[0] == "stop":
                break
    except (EOFError, OSError, BrokenPipeError):
        pass  # the parent is gone: stop
    finally:
        done.set()
        with have:
            have.notify_all()
        with contextlib.suppress(Exception):
            client.disconnect()
        end_network_thread(client)


class ReceiverProcess:
    """Parent side: start the child, deliver its messages, forward acks."""

    def __init__(
        self, settings: dict[str, Any], subscriptions: list[str], *, on_messages: Any, on_event: Any
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.on_messages = on_messages
        self.on_event = on_event
        self._conn: Connection | None = None
        self._proc: Any = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._paused = threading.Event()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._conn = parent
        self._proc = ctx.Process(
            target=_child,
            args=(
                child,
                self.settings,
                self.subscriptions,
                logging.getLogger().getEffectiveLevel(),
            ),
            name="gnahat-receiver",
            daemon=True,
        )
        self._proc.start()
        child.close()
        # The child ignores SIGTERM, so multiprocessing's own exit hook (terminate, then
        # join without a timeout) would wait for it forever if this process exits without
        # stop(): end it first. atexit runs hooks last-in first-out, so this one runs first.
        atexit.register(self._at_exit)
        self._reader = threading.Thread(target=self._read, name="gnahat-receiver-pipe", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                self.on_event("connected", False)
                if not self._stopping:
                    log.error("the MQTT receiver process died")
                    self.on_event("died", True)
                return
            if item[0] == "msgs":
                if item[1]:
                    self.on_messages(item[1])  # blocks while ingest's queue is full
            elif item[0] == "event":
                self.on_event(item[1], item[2])
            elif item[0] == "paused":
                self._paused.set()

    def publish_acks(self, acks: list[tuple[str, bytes]], tokens: list[Token]) -> bool:
        """Hand acks (to units) and PUBACKs (to the broker) to the child; False if gone."""
        if self._conn is None:
            return False
        if not acks and not tokens:
            return True
        with self._send_lock:
            try:
                self._conn.send(("ack", acks, tokens))
            except (OSError, BrokenPipeError):
                return False
        return True

    def pause(self, timeout: float = 10.0) -> None:
        """Stop taking messages; everything received so far is delivered first."""
        if self._conn is None:
            return
        with self._send_lock, contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send(("pause",))
        self._paused.wait(timeout)

    def _at_exit(self) -> None:
        if self._proc is not None:
            log.warning("interpreter exiting with the MQTT receiver running; stopping it")
            self.stop(timeout=2.0)

    def stop(self, timeout: float = 10.0) -> None:
        atexit.unregister(self._at_exit)
        self._stopping = True
        if self._conn is not None:
            with self._send_lock, contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(("stop",))
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            self._reader.join(5)
        self._conn = self._proc = None

    def kill(self) -> None:
        atexit.unregister(self._at_exit)
        self._stopping = True
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._conn = self._proc = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

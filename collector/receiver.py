"""The MQTT side of ingest in its own process, so receiving and committing use two cores.

The child runs the paho client (fixed client id, persistent session, subscriptions
made in ``on_connect``), timestamps each message and ships them to the parent in
chunks over a pipe; the parent sends back the ack messages to publish after its
commit. Nothing about the guarantees changes: an ack still leaves only after the
commit, and whatever the child received but the parent never committed is
re-sent by the units.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import ssl
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from device.mqtt_loop import stop_loop

log = logging.getLogger(__name__)


def build_client(
    settings: dict[str, Any], subscriptions: list[str], on_message: Any, events: Any
) -> Any:
    """A paho client configured as the collector's (used by both receiver kinds)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = settings["mqtt_protocol"] == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings["mqtt_client_id"],
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    if settings.get("mqtt_username"):
        client.username_pw_set(settings["mqtt_username"], settings.get("mqtt_password"))
    if settings.get("mqtt_tls"):
        client.tls_set(ca_certs=settings.get("mqtt_ca_file"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.reconnect_delay_set(min_delay=1, max_delay=30)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
        log.info("connected to broker (session present: %s)", flags.session_present)
        events("connected", True)
        c.subscribe([(t, 1) for t in subscriptions])

    def on_subscribe(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused: %s", reasons)
            return
        log.info("subscribed to %s", ", ".join(subscriptions))
        events("subscribed", True)

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        events("connected", False)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    return client


def connect(client: Any, settings: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {}
    if settings["mqtt_protocol"] == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings["mqtt_session_expiry_s"]
        kwargs = {"clean_start": False, "properties": props}
    client.connect_async(settings["mqtt_host"], settings["mqtt_port"], keepalive=30, **kwargs)


def _child(
    conn: Connection, settings: dict[str, Any], subscriptions: list[str], log_level: int
) -> None:
    import signal

    # The parent decides when this process ends ("stop", or the pipe closing when the
    # parent dies); a Ctrl-C or SIGTERM sent to the whole group must not cut it short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    buf: list[tuple[str, bytes, float]] = []
    lock = threading.Lock()
    send_lock = threading.Lock()
    taking = threading.Event()
    taking.set()

    def send(item: Any) -> None:
        with send_lock:
            conn.send(item)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        if taking.is_set():
            with lock:
                buf.append((msg.topic, bytes(msg.payload), time.time()))

    client = build_client(
        settings, subscriptions, on_message, lambda kind, value: send(("event", kind, value))
    )
    connect(client, settings)
    client.loop_start()
    try:
        while True:
            if conn.poll(0.005):
                cmd = conn.recv()
                if cmd[0] == "ack":
                    for topic, payload in cmd[1]:
                        client.publish(topic, payload, qos=1)
                elif cmd[0] == "pause":
                    taking.clear()
                    with lock:
                        rest, buf[:] = list(buf), []
                    send(("msgs", rest))
                    send(("paused",))
                elif cmd[0] == "stop":
                    break
            with lock:
                chunk, buf[:] = list(buf), []
            if chunk:
                send(("msgs", chunk))
    except (EOFError, OSError, BrokenPipeError):
        pass  # the parent is gone: stop
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        stop_loop(client)


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
                    self.on_messages(item[1])
            elif item[0] == "event":
                self.on_event(item[1], item[2])
            elif item[0] == "paused":
                self._paused.set()

    def publish_acks(self, acks: list[tuple[str, bytes]]) -> None:
        if self._conn is None or not acks:
            return
        with self._send_lock, contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send(("ack", acks))

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

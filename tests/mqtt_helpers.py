"""Small real-MQTT clients for tests: a recorder that waits for what it expects."""

from __future__ import annotations

import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.broker import MosquittoBroker


class Recorder:
    """Subscribes to topics and records messages; waits on a condition, no sleeping."""

    def __init__(
        self, broker: MosquittoBroker, topics: list[str], client_id: str = "rec", **auth: str
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if auth:
            self.client.username_pw_set(auth["username"], auth.get("password"))
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("recorder did not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 20
    ) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(broker: MosquittoBroker, client_id: str = "pub", **auth: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if auth:
        c.username_pw_set(auth["username"], auth.get("password"))
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c

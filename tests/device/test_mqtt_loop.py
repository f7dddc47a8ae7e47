"""stop_loop: paho's loop_stop() without its race against a thread that ends by itself."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.mqtt_loop import stop_loop
from simulator.broker import MosquittoBroker


def _client(broker: MosquittoBroker) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="loop-test")
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert up.wait(10)
    return c


def test_stops_a_running_loop(broker: MosquittoBroker) -> None:
    c = _client(broker)
    thread = c._thread
    assert thread is not None
    stop_loop(c)
    assert not thread.is_alive()
    c.disconnect()


def test_after_disconnect_the_thread_has_ended_and_that_is_fine(broker: MosquittoBroker) -> None:
    c = _client(broker)
    thread = c._thread
    assert thread is not None
    gone = threading.Event()
    c.on_disconnect = lambda *a: gone.set()
    c.disconnect()
    assert gone.wait(10)
    stop_loop(c)
    assert not thread.is_alive()


def test_the_race_inside_loop_stop_is_absorbed() -> None:
    """paho checks ``_thread``, the thread clears it on its way out, paho joins ``None``."""

    class Racing:
        def __init__(self) -> None:
            self._thread: threading.Thread | None = threading.Thread(target=lambda: None)
            self._thread.start()
            self.joined = self._thread

        def loop_stop(self) -> None:
            self._thread = None  # what the ending thread does between check and join
            self._thread.join()  # type: ignore[attr-defined]

    c = Racing()
    stop_loop(c)
    assert not c.joined.is_alive()

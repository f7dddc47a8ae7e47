"""Unit figures: press → durable write → feedback latency, outbox drain rate, daemon memory."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Results, percentile
from device import protocol as p
from device.clock import SystemClock
from device.config import MqttConfig, parse_config
from device.daemon import Daemon
from device.feedback import Pattern
from device.link import Link
from device.outbox import Outbox
from simulator.broker import MosquittoBroker
from simulator.units import UnitProcess, unit_config

DEV = "am-er-avan-d01"


def press_latency(results: Results, workdir: Path, n: int = 2000) -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    cfg = parse_config({"unit": {"device_id": DEV, "cooldown_s": 0, "debounce_ms": 0}})
    cfg = replace(
        cfg,
        outbox_path=str(workdir / "press.db"),
        mqtt=MqttConfig(host="127.0.0.1", port=1, username=None),
    )
    factory = MockFactory(pin_class=MockPWMPin)
    daemon = Daemon(cfg, pin_factory=factory, clock=SystemClock())
    daemon.start()
    assert daemon.feedback is not None
    shown_at: list[float] = []
    daemon.feedback.on_shown(
        lambda pat, arg: shown_at.append(time.perf_counter()) if pat is Pattern.THANKS else None
    )
    latencies = []
    pins = [factory.pin(x) for x in cfg.pins.buttons]
    for i in range(n):
        pin = pins[i % len(pins)]
        t0 = time.perf_counter()
        pin.drive_low()
        latencies.append((shown_at[-1] - t0) * 1000)
        pin.drive_high()
    daemon.stop()
    results.add("device.press_to_feedback_p50_ms", percentile(latencies, 50), "ms")
    results.add("device.press_to_feedback_p99_ms", percentile(latencies, 99), "ms", goal="<= 20")


def drain_rate(results: Results, workdir: Path, n: int = 100_000) -> None:
    outbox = Outbox(workdir / "drain.db", max_events=n + 10).open()
    stream = outbox.stream
    # Fill the outbox quickly (one transaction) with n ordinary rating events.
    conn = outbox.conn
    conn.execute("BEGIN")
    for seq in range(1, n + 1):
        ev = p.Event(
            type=p.EventType.RATING,
            device=DEV,
            stream=stream,
            seq=seq,
            at="2026-11-24T10:00:00.000+04:00",
            clock_synced=True,
            boot="b",
            mono_ms=seq,
            score=1 + seq % 4,
            scale=4,
            staff=None,
        )
        conn.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, p.encode_event(ev), seq))
    conn.execute("UPDATE meta SET value=? WHERE key='last_seq'", (str(n),))
    conn.execute("COMMIT")
    outbox.close()
    outbox = Outbox(workdir / "drain.db", max_events=n + 10).open()

    with MosquittoBroker(workdir / "broker") as broker:
        # A collector-style acker: acks every received event's seq range at once.
        acker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acker", protocol=mqtt.MQTTv311)
        ready = threading.Event()

        def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            device, _ = p.parse_topic(m.topic)
            body = json.loads(m.payload)
            items = body if isinstance(body, list) else [body]
            seqs = [e["seq"] for e in items]
            ack = p.Ack(items[0]["stream"], tuple(p.ranges_from_seqs(seqs)))
            c.publish(p.ack_topic(device), p.encode_ack(ack), qos=1)

        acker.on_message = on_message
        acker.on_subscribe = lambda *a: ready.set()
        acker.on_connect = lambda c, *a: c.subscribe("gnahat/v1/dev/+/event", qos=1)
        acker.connect(broker.host, broker.port)
        acker.loop_start()
        ready.wait(10)
        cfg = parse_config({"unit": {"device_id": DEV}})
        cfg = replace(
            cfg,
            mqtt=MqttConfig(host=broker.host, port=broker.port, username=None, ack_timeout_s=30),
        )
        link = Link(cfg, outbox, SystemClock(), boot="bench")
        t0 = time.perf_counter()
        link.start()
        ok = link.wait_until_drained(300)
        elapsed = time.perf_counter() - t0
        link.stop()
        acker.disconnect()
        acker.loop_stop()
    outbox.close()
    if not ok:
        raise RuntimeError("drain did not finish")
    results.add("device.drain_events_per_s", n / elapsed, "events/s", goal=">= 2000")


def daemon_rss(results: Results, workdir: Path) -> None:
    with MosquittoBroker(workdir / "broker-rss") as broker:
        cfg = unit_config(
            workdir / "rss.toml",
            device_id=DEV,
            broker_host=broker.host,
            broker_port=broker.port,
            outbox=workdir / "rss.db",
        )
        unit = UnitProcess(cfg).start()
        for i in range(200):
            unit.press(1 + i % 4)
        assert unit.proc is not None
        status = Path(f"/proc/{unit.proc.pid}/status").read_text()
        rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
        unit.stop()
    results.add("device.rss_mb", rss_kb / 1024, "MiB", goal="<= 40")


def refused_fleet(results: Results, workdir: Path, n: int = 600, seconds: float = 60) -> None:
    """``n`` units whose credential the broker refuses (a proxy answering every CONNECT
    with CONNACK "not authorised", as after a rotated password): how many connection
    attempts a second reach the broker once they have backed off, beside the one a
    second per unit of a fixed one-second retry. Real link code, one process."""
    import logging

    from simulator.faults import TcpProxy

    # Every refusal is a log line on a unit; 600 units' would drown the figures.
    logging.getLogger("device.link").setLevel(logging.CRITICAL)
    proxy = TcpProxy("127.0.0.1", 1).start()
    proxy.refuse()
    password = workdir / "refused-password"
    password.write_text("rotated-away")
    links = []
    cfg0 = parse_config({"unit": {"device_id": DEV}})
    try:
        for i in range(n):
            device = f"am-er-avan-d{i:03d}"[:32]
            cfg = replace(
                cfg0, device_id=device, outbox_path=str(workdir / f"refused-{i}.db"),
                mqtt=MqttConfig(host=proxy.host, port=proxy.port, username=device,
                                password_file=str(password)),
            )  # fmt: skip
            outbox = Outbox(cfg.outbox_path).open()
            link = Link(cfg, outbox, SystemClock(), boot=f"b{i}")
            link.start()
            links.append((link, outbox))
        started = time.monotonic()
        threading.Event().wait(seconds / 2)
        half, mid = proxy.refused, time.monotonic()
        threading.Event().wait(seconds / 2)
        rate = (proxy.refused - half) / (time.monotonic() - mid)
        total = proxy.refused / (time.monotonic() - started)
    finally:
        from concurrent.futures import ThreadPoolExecutor

        def stop(pair: tuple[Link, Outbox]) -> None:
            pair[0].stop()  # a link waiting to reconnect takes up to a second to stop
            pair[1].close()

        with ThreadPoolExecutor(max_workers=100) as pool:
            list(pool.map(stop, links))
        proxy.close()
    results.add(f"device.refused_{n}_units_attempts_per_s_first_{seconds:g}s", total, "conn/s",
                goal=f"<< {n} (a fixed 1 s retry)")  # fmt: skip
    results.add(f"device.refused_{n}_units_attempts_per_s_second_half", rate, "conn/s",
                goal=f"<= {n / 15:.0f} (waits of 15-30 s by then)")  # fmt: skip


def run(results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="gnahat-bench-") as d:
        work = Path(d)
        press_latency(results, work)
        drain_rate(results, work)
        daemon_rss(results, work)
        refused_fleet(results, work)

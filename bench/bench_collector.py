"""Collector figures: sustained ingest into SQLite and PostgreSQL beside a bare paho
subscriber on the same broker, and press-to-commit latency at a steady 2 000 events/s."""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text

from bench.common import Results, percentile
from collector.config import Settings
from collector.db import make_engine, migrate, session_factory
from collector.demo_data import SHIPPED
from collector.intake.ingest import Ingest
from collector.intake.store import BatchResult, Store
from collector.metrics import Metrics
from collector.registry import import_dir
from device import protocol as p
from simulator.broker import MosquittoBroker

N = 60_000


def _devices() -> list[str]:
    import csv

    with (SHIPPED / "devices.csv").open(encoding="utf-8") as fh:
        return [row["device"] for row in csv.DictReader(fh)]


#: Every unit of the demo registry, each pressed about once a minute: a busy national day.
DEVICES = _devices()


def payloads(
    n: int, stream: str = "bench", devices: list[str] | None = None
) -> list[tuple[str, bytes]]:
    devices = devices or DEVICES
    out = []
    for i in range(n):
        device = devices[i % len(devices)]
        seq = i // len(devices) + 1
        minute = seq + i % 7  # a press about every minute per unit, staggered
        ev = p.Event(
            type=p.EventType.RATING,
            device=device,
            stream=stream,
            seq=seq,
            at=f"2026-11-{20 + (minute // 540) % 5:02d}T{9 + (minute // 60) % 9:02d}:"
            f"{minute % 60:02d}:{i % 60:02d}+04:00",
            clock_synced=True,
            boot="b",
            mono_ms=seq,
            sent_mono_ms=seq + 5,
            sent_boot="b",
            score=1 + i % 4,
            scale=4,
            staff=None,
        )
        out.append((p.event_topic(device), p.encode_event(ev)))
    return out


class Endpoint(Protocol):
    """Where to publish (``host``, ``port``) and what the collector is given (``url``)."""

    host: str
    port: int

    @property
    def url(self) -> str: ...


def publish_all(broker: Endpoint, msgs: list[tuple[str, bytes]]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish(t, m, qos=1) for t, m in msgs]
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()


def prepared_db(url: str) -> None:
    migrate(url)
    engine = make_engine(url)
    with session_factory(engine)() as s, s.begin():
        import_dir(s, SHIPPED, now=datetime(2026, 1, 1, tzinfo=UTC))
    engine.dispose()


def ingest_rate(
    broker: Endpoint,
    url: str,
    client_id: str,
    *,
    protocol: str = "5",
    n: int = N,
    publish: Callable[[list[tuple[str, bytes]]], None] | None = None,
    msgs: list[tuple[str, bytes]] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> float:
    """Messages queued while the collector is away, then drained: sustained commit rate.
    ``publish``/``msgs``: how and what to queue (default: one client, every unit)."""
    prepared_db(url)
    settings = Settings(
        database_url=url,
        mqtt_url=broker.url,
        mqtt_client_id=client_id,
        mqtt_protocol=protocol,  # type: ignore[arg-type]
        mqtt_username=username,
        mqtt_password=password,
    )  # the documented defaults (MQTT 3.1.1 where the broker has no 5)
    engine = make_engine(url)
    first = Ingest(settings, Store(session_factory(engine)), Metrics())
    first.start()
    first.wait_until_subscribed(20)
    first.stop()
    msgs = msgs if msgs is not None else payloads(n)
    n = len(msgs)
    if publish is None:
        publish_all(broker, msgs)
    else:
        publish(msgs)
    # The collector's process holds no bench data: drop it, and keep what start-up built
    # out of later collections, as `serve` and `ingest` do once started.
    del msgs
    gc.collect()
    gc.freeze()
    ing = Ingest(settings, Store(session_factory(engine)), Metrics())
    started = time.perf_counter()
    ing.start()
    # The clock starts when the receiver process is up and connected, as the bare
    # subscriber's starts at its connect: starting a process (imports, ~1 s) is a
    # fixed cost of a restart, reported apart, not a rate.
    if not ing.connected.wait(120):
        raise RuntimeError("ingest never connected")
    t0 = time.perf_counter()
    if not ing.wait_for_messages(n, timeout=600):
        raise RuntimeError(f"ingest stalled at {ing.messages_committed}/{n}")
    elapsed = time.perf_counter() - t0
    ing.stop()
    engine.dispose()
    LAST_START_S[0] = t0 - started
    return n / elapsed


#: The last ``ingest_rate`` run's start-up (receiver process up and connected), seconds.
LAST_START_S = [0.0]


def bare_rate(broker: MosquittoBroker) -> float:
    """A paho subscriber that only counts, on the same broker, same queued-session setup."""
    got = 0
    done = threading.Event()
    sub_ok = threading.Event()

    def make() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
        c.on_subscribe = lambda *a: sub_ok.set()
        c.on_connect = lambda cl, *a: cl.subscribe("gnahat/v1/dev/+/event", qos=1)
        return c

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = make()
    c.connect(broker.host, broker.port, clean_start=False, properties=props)
    c.loop_start()
    sub_ok.wait(10)
    c.disconnect()
    c.loop_stop()
    publish_all(broker, payloads(N, stream="bare"))

    def on_message(cl: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got >= N:
            done.set()

    c2 = make()
    c2.on_message = on_message
    t0 = time.perf_counter()
    c2.connect(broker.host, broker.port, clean_start=False, properties=props)
    c2.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - t0
    c2.disconnect()
    c2.loop_stop()
    return N / elapsed


def press_to_commit(
    broker: MosquittoBroker, url: str, rate: int = 2000, seconds: float = 15.0
) -> list[float]:
    """Latency from publish (by a paced generator in another process) to commit."""
    import json
    import subprocess
    import sys

    prepared_db(url)
    engine = make_engine(url)
    committed: dict[tuple[str, int], float] = {}

    def on_commit(result: BatchResult) -> None:
        now = time.time()
        for device, _stream, seq in result.stored_keys:
            committed[(device, seq)] = now

    settings = Settings(  # the documented defaults
        database_url=url, mqtt_url=broker.url, mqtt_client_id=f"bench-latency-{rate}"
    )
    ing = Ingest(settings, Store(session_factory(engine)), Metrics(), on_commit=on_commit)
    ing.start()
    ing.wait_until_subscribed(20)
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            broker.host,
            str(broker.port),
            str(rate),
            str(seconds),
            "lat",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    sent = json.loads(gen.stdout)
    ing.wait_for_messages(len(sent), timeout=120)
    ing.stop()
    engine.dispose()
    lat = []
    for key, t in sent.items():
        device, seq = key.split()
        done = committed.get((device, int(seq)))
        if done is not None:
            lat.append((done - t) * 1000)
    if len(lat) != len(sent):
        raise RuntimeError(f"only {len(lat)} of {len(sent)} events committed")
    return lat


def pg_url() -> str | None:
    url = os.environ.get(
        "GNAHAT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    try:
        e = create_engine(url)
        with e.connect() as c:
            c.execute(text("SELECT 1"))
        e.dispose()
        return url
    except Exception:
        return None


def pg_schema(base: str, name: str) -> str:
    e = create_engine(base)
    with e.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        c.execute(text(f'CREATE SCHEMA "{name}"'))
    e.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{name}"


def run(results: Results) -> None:
    base = pg_url()
    with tempfile.TemporaryDirectory(prefix="gnahat-bench-") as d:
        work = Path(d)
        # The bare subscriber and ingest share one broker, in the same run.
        with MosquittoBroker(work / "broker", autosave_interval=1800) as broker:
            bare = bare_rate(broker)
            results.add("collector.bare_subscriber_msgs_per_s", bare, "msgs/s")
            sqlite = ingest_rate(broker, f"sqlite:///{work / 'ingest.db'}", "bench-sqlite")
            results.add("collector.ingest_sqlite_events_per_s", sqlite, "events/s", goal=">= 10000")
            results.add("collector.ingest_sqlite_vs_bare", sqlite / bare, "ratio", goal=">= 0.8")
            results.add("collector.ingest_start_s", LAST_START_S[0], "s")  # not in the rate
        # Fresh brokers below: no offline sessions from earlier phases to queue for.
        if base:
            with MosquittoBroker(work / "broker-pg", autosave_interval=1800) as broker:
                bare_pg = bare_rate(broker)
                pg = ingest_rate(broker, pg_schema(base, "bench_ingest"), "bench-pg")
                results.add("collector.ingest_postgres_events_per_s", pg, "events/s")
                results.add(
                    "collector.ingest_postgres_vs_bare", pg / bare_pg, "ratio", goal=">= 0.8"
                )
        else:
            results.missing("collector.ingest_postgres_*", "no PostgreSQL answers")
        # Press to commit with the documented defaults: idle (20/s) and busy (2 000/s).
        for rate, goal in ((20, "<= 20"), (2000, "<= 100")):
            targets = [("sqlite", f"sqlite:///{work / f'latency-{rate}.db'}")]
            if base:
                targets.append(("postgres", pg_schema(base, f"bench_latency_{rate}")))
            else:
                results.missing(f"collector.press_to_commit_{rate}_postgres_*", "no PostgreSQL")
            for label, url in targets:
                with MosquittoBroker(
                    work / f"broker-lat-{label}-{rate}", autosave_interval=1800
                ) as b:
                    lat = press_to_commit(b, url, rate=rate, seconds=15.0 if rate > 20 else 20.0)
                name = f"collector.press_to_commit_{rate}_{label}"
                results.add(f"{name}_p50_ms", percentile(lat, 50), "ms")
                results.add(f"{name}_p99_ms", percentile(lat, 99), "ms", goal=goal)

"""Soak: the database stalls for 60 s under a fleet publishing 2 000 events/s.

With the documented defaults (process receiver, `GNAHAT_INGEST_QUEUE_MAX`,
`GNAHAT_MQTT_RECEIVE_MAXIMUM`), the collector must hold at most its in-flight window
while the database is away, leave the rest in the broker, and store everything
exactly once when the database returns. Figures: peak RSS of the collector (its
process and the receiver child) above its idle RSS, messages held while stalled,
drain time, stored = published. ``GNAHAT_BENCH_SOAK_S`` shortens the stall.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, text

from bench.bench_collector import payloads, pg_schema, pg_url, prepared_db
from bench.common import Results
from collector.config import Settings
from collector.db import make_engine, session_factory
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Event
from simulator.broker import MosquittoBroker

RATE = 2000  # events/s
STALL_S = float(os.environ.get("GNAHAT_BENCH_SOAK_S", "60"))


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def collector_rss(ing: Ingest) -> float:
    child = ing._receiver.pid if ing._receiver is not None else None
    return rss_mb(os.getpid()) + (rss_mb(child) if child else 0.0)


def publish_paced(host: str, port: int, seconds: float, out: Any) -> None:
    """Publish RATE events/s across the fleet for ``seconds``; sends how many to ``out``.

    Run in a process of its own: the fleet's messages and the client's bookkeeping are
    not the collector's memory, and the figure is the collector's."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-pub", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(host, port)
    pub.loop_start()
    msgs = payloads(int(RATE * seconds) + RATE, "soak")  # the fleet's presses, in order
    sent, infos = 0, []
    t0 = time.monotonic()
    tick = 0.05
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0 + tick) * RATE) - sent
        for _ in range(max(0, min(due, len(msgs) - sent))):
            topic, body = msgs[sent]
            infos.append(pub.publish(topic, body, qos=1))
            sent += 1
        time.sleep(tick)
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()
    out.send(sent)


def soak(broker: MosquittoBroker, url: str, label: str, results: Results) -> None:
    prepared_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    settings = Settings(database_url=url, mqtt_url=broker.url, mqtt_client_id=f"soak-{label}")
    ing = Ingest(settings, Store(sessions), Metrics())
    ing.start()
    ing.wait_until_subscribed(20)
    idle = collector_rss(ing)
    blocker = sessions()
    if url.startswith("sqlite"):
        blocker.execute(text("BEGIN EXCLUSIVE"))
    else:
        blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
    ctx = multiprocessing.get_context("spawn")
    got, out = ctx.Pipe(duplex=False)
    pub = ctx.Process(target=publish_paced, args=(broker.host, broker.port, STALL_S, out))
    pub.start()
    peak, held = idle, 0
    while pub.is_alive():
        peak = max(peak, collector_rss(ing))
        held = max(held, ing.taken - ing.messages_committed)
        pub.join(0.5)
    if pub.exitcode != 0 or not got.poll(10):
        raise RuntimeError(f"the publishing fleet failed (exit code {pub.exitcode})")
    published = int(got.recv())
    blocker.rollback()
    blocker.close()
    t0 = time.perf_counter()
    ok = ing.wait_for_messages(published, timeout=900)
    drain = time.perf_counter() - t0
    peak = max(peak, collector_rss(ing))
    ing.stop()
    with sessions() as s:
        stored = s.scalar(select(func.count()).select_from(Event)) or 0
    engine.dispose()
    window = settings.mqtt_receive_maximum
    results.add(f"soak.{label}.published_during_stall", published, "events")
    results.add(
        f"soak.{label}.held_in_collector_max", held, "msgs", goal=f"<= {window} (receive maximum)"
    )
    results.add(f"soak.{label}.peak_rss_above_idle_mb", peak - idle, "MB", goal="<= 200")
    results.add(f"soak.{label}.peak_rss_mb", peak, "MB")
    results.add(f"soak.{label}.drain_s", drain if ok else float("nan"), "s")
    results.add(f"soak.{label}.stored_minus_published", stored - published, "events", goal="== 0")


def run(results: Results) -> None:
    print(f"# stall {STALL_S:.0f} s at {RATE} events/s, documented defaults")
    with tempfile.TemporaryDirectory(prefix="gnahat-soak-") as d:
        work = Path(d)
        with MosquittoBroker(work / "broker", autosave_interval=1800) as broker:
            soak(broker, f"sqlite:///{work / 'soak.db'}", "sqlite", results)
        base = pg_url()
        if base is None:
            results.missing("soak.postgres.*", "no PostgreSQL answers (GNAHAT_TEST_DATABASE_URL)")
            return
        with MosquittoBroker(work / "broker-pg", autosave_interval=1800) as broker:
            soak(broker, pg_schema(base, "bench_soak"), "postgres", results)

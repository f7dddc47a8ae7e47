"""Broker cluster figures: ingest through a three-node NATS cluster beside one Mosquitto
in the same run (anonymous, and with the accounts provisioning writes: one per unit,
each message stored in the unit's account and again in the collector's), and the time
from killing the collector's node to resumed ingest.

The collector runs with its documented defaults, MQTT 3.1.1 on both brokers (NATS
speaks no MQTT 5), into SQLite. NATS figures are reported missing when nats-server is
not installed.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_collector import ingest_rate, payloads, prepared_db
from bench.common import Results
from collector.config import Settings
from collector.db import make_engine, session_factory
from collector.intake.ingest import Ingest
from collector.intake.store import BatchResult, Store
from collector.metrics import Metrics
from simulator.broker import MosquittoBroker
from simulator.nats import NatsCluster, nats_binary

#: Messages queued, then drained, per broker.
N = 20_000
#: Steady publishing while a node is killed, messages per second.
KILL_RATE = 200


class _Node:
    """Publish to one node; the collector is given every node (its own first)."""

    def __init__(self, cluster: NatsCluster, publish_to: int, collector_first: int) -> None:
        self.host, self.port = cluster.mqtt_endpoints[publish_to]
        order = [collector_first] + [i for i in range(len(cluster.nodes)) if i != collector_first]
        self._url = ",".join(f"mqtt://{cluster.host}:{cluster.nodes[i].mqtt_port}" for i in order)

    @property
    def url(self) -> str:
        return self._url


def kill_to_resumed(cluster: NatsCluster, url: str) -> float:
    """Seconds from SIGKILL of the collector's node to the first commit of a message
    published after it (it can reach the collector only through another node)."""
    prepared_db(url)
    msgs = payloads(KILL_RATE * 20, stream="kill")
    kill_at = KILL_RATE * 5
    after_kill = {
        (json.loads(body)["device"], json.loads(body)["seq"]) for _, body in msgs[kill_at:]
    }
    commits: list[float] = []
    lock = threading.Lock()

    def on_commit(result: BatchResult) -> None:
        if any((d, q) in after_kill for d, _st, q in result.stored_keys):
            with lock:
                commits.append(time.monotonic())

    node = _Node(cluster, publish_to=1, collector_first=0)
    settings = Settings(
        database_url=url, mqtt_url=node.url, mqtt_client_id="bench-kill", mqtt_protocol="3.1.1"
    )
    engine = make_engine(url)
    ing = Ingest(settings, Store(session_factory(engine)), Metrics(), on_commit=on_commit)
    ing.start()
    if not ing.wait_until_subscribed(30):
        raise RuntimeError("the collector did not subscribe through NATS")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-kill-pub")
    pub.connect(node.host, node.port)
    pub.loop_start()
    killed_at = 0.0
    try:
        for i, (topic, body) in enumerate(msgs):
            if i == kill_at:
                killed_at = time.monotonic()
                cluster.kill(0)
            pub.publish(topic, body, qos=1)
            threading.Event().wait(1 / KILL_RATE)  # pacing the publisher, not a sync wait
        if not ing.wait_for_messages(len(msgs), timeout=120):
            raise RuntimeError(f"ingest stalled at {ing.messages_committed}/{len(msgs)}")
    finally:
        pub.disconnect()
        pub.loop_stop()
        ing.stop()
        engine.dispose()
        cluster.start_node(0)
    with lock:
        if not commits:
            raise RuntimeError("nothing published after the kill was committed")
        return commits[0] - killed_at


#: Units with accounts of their own in the provisioned layout (a publisher each).
ACCOUNT_UNITS = 20


def provisioned_rate(work: Path) -> float:
    """Ingest through the cluster with per-unit accounts (the production layout)."""
    from bench.bench_collector import DEVICES
    from simulator.processes import cluster_accounts

    devices = DEVICES[:ACCOUNT_UNITS]
    conf, collector_password, password_files = cluster_accounts(work / "accounts", devices)
    with NatsCluster(work / "nats-accounts", accounts_file=conf) as cluster:
        node = _Node(cluster, publish_to=0, collector_first=1)

        def publish(msgs: list[tuple[str, bytes]]) -> None:
            by_device: dict[str, list[tuple[str, bytes]]] = {}
            for topic, body in msgs:
                by_device.setdefault(topic.split("/")[3], []).append((topic, body))
            clients = []
            for device, own in by_device.items():
                c = mqtt.Client(
                    CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv311
                )
                c.username_pw_set(device, password_files[device].read_text())
                c.max_inflight_messages_set(1000)
                c.max_queued_messages_set(0)
                c.connect(node.host, node.port)
                c.loop_start()
                clients.append((c, [c.publish(t, b, qos=1) for t, b in own]))
            for c, infos in clients:
                for info in infos:
                    info.wait_for_publish(120)
                c.disconnect()
                c.loop_stop()

        return ingest_rate(
            node,
            f"sqlite:///{work / 'p.db'}",
            "bench-p",
            protocol="3.1.1",
            msgs=payloads(N, devices=devices),
            publish=publish,
            username="gnahat-collector",
            password=collector_password,
        )


def run(results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="gnahat-bench-cluster-") as d:
        work = Path(d)
        with MosquittoBroker(work / "mosquitto", autosave_interval=1800) as broker:
            rate = ingest_rate(
                broker, f"sqlite:///{work / 'm.db'}", "bench-m", protocol="3.1.1", n=N
            )
        results.add("cluster.ingest_mosquitto_events_per_s", rate, "events/s")
        if nats_binary() is None:
            results.missing("cluster.*nats*", "nats-server is not installed")
            return
        with NatsCluster(work / "nats") as cluster:
            node = _Node(cluster, publish_to=0, collector_first=1)
            rate = ingest_rate(node, f"sqlite:///{work / 'n.db'}", "bench-n", protocol="3.1.1", n=N)
            results.add("cluster.ingest_nats_3_nodes_events_per_s", rate, "events/s")
        rate = provisioned_rate(work)
        results.add("cluster.ingest_nats_3_nodes_per_unit_accounts_events_per_s", rate, "events/s")
        with NatsCluster(work / "nats-kill") as cluster:
            gap = kill_to_resumed(cluster, f"sqlite:///{work / 'k.db'}")
            results.add("cluster.node_kill_to_resumed_ingest_s", gap, "s")

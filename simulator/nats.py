"""A real NATS cluster on loopback: three ``nats-server`` processes, one cluster, JetStream
replicated three times, an MQTT listener on each node.

NATS speaks MQTT 3.1.1 with QoS 0/1, persistent sessions and retained messages, kept
in JetStream streams (``$MQTT_msgs``, ``$MQTT_sess``, ``$MQTT_rmsgs`` per account) that
the cluster replicates (nats-server's ``mqtt`` block: ``stream_replicas``,
``consumer_replicas``; a node needs ``server_name`` and JetStream for MQTT to start).
It has no ``$share/`` subscriptions. Configuration reference: the nats-server
documentation, "Configuring MQTT" and "JetStream Clustering".

``kill(i)`` / ``start(i)`` crash and revive one node on the same ports and storage,
which is how tests and scenarios take a node away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from simulator.broker import BrokerError, free_port


def nats_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in (
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """``size`` nats-server nodes on ``127.0.0.1`` forming one cluster.

    ``accounts_config``: text for the ``accounts``/``authorization`` part of every
    node's configuration; ``accounts_file``: a file every node includes instead (as
    provisioning writes ``nats-accounts.conf``; ``reload()`` makes the nodes re-read
    it). Without either, anonymous clients.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        size: int = 3,
        accounts_config: str = "",
        accounts_file: Path | None = None,
        cluster_name: str = "gnahat",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gnahat-nats-"))
        self.cluster_name = cluster_name
        self.accounts_config = accounts_config
        self.accounts_file = Path(accounts_file).resolve() if accounts_file else None
        self.tls = tls  # (certificate, key): the MQTT listeners take TLS only
        self.host = "127.0.0.1"
        self.nodes = [
            NatsNode(
                name=f"n{i + 1}",
                client_port=free_port(),
                cluster_port=free_port(),
                mqtt_port=free_port(),
                monitor_port=free_port(),
                workdir=self.workdir / f"n{i + 1}",
            )
            for i in range(size)
        ]

    # ------------------------------------------------------------ addresses

    @property
    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, n.mqtt_port) for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's MQTT listener, as ``GNAHAT_MQTT_URL`` takes a list."""
        return ",".join(f"mqtt://{self.host}:{n.mqtt_port}" for n in self.nodes)

    # ------------------------------------------------------------ configuration

    def config_text(self, node: NatsNode) -> str:
        routes = ", ".join(f"nats-route://{self.host}:{n.cluster_port}" for n in self.nodes)
        replicas = min(3, len(self.nodes))
        return "\n".join(
            [
                f"server_name: {node.name}",
                f"listen: {self.host}:{node.client_port}",
                f"http: {self.host}:{node.monitor_port}",
                f'jetstream {{ store_dir: "{node.workdir / "jetstream"}" }}',
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: {self.host}:{node.cluster_port}",
                f"  routes: [{routes}]",
                "}",
                "mqtt {",
                f"  listen: {self.host}:{node.mqtt_port}",
                f"  stream_replicas: {replicas}",
                f"  consumer_replicas: {replicas}",
                '  ack_wait: "30s"',
                "  max_ack_pending: 1024",
                *(
                    [
                        f"  tls {{ cert_file: {json.dumps(str(self.tls[0]))}, "
                        f"key_file: {json.dumps(str(self.tls[1]))} }}"
                    ]
                    if self.tls
                    else []
                ),
                "}",
                self.accounts_config,
                self._include(node),
                "",
            ]
        )

    def _include(self, node: NatsNode) -> str:
        if self.accounts_file is None:
            return ""
        # nats-server reads an include relative to the including file's folder
        rel = os.path.relpath(self.accounts_file, node.workdir.resolve())
        return f"include {json.dumps(rel)}"

    # ------------------------------------------------------------ life

    def start(self, timeout: float = 30.0) -> None:
        # A free port can be taken by another process between choosing it and the
        # node binding it: then every node gets new ports and the cluster starts again.
        for attempt in range(3):
            for i in range(len(self.nodes)):
                self.start_node(i, wait=False)
            try:
                for node in self.nodes:
                    self._wait_listening(node, timeout)
            except BrokerError as exc:
                # (its log may not say why yet when it exits: any exit is tried again)
                if "exited" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                for node in self.nodes:
                    node.client_port, node.cluster_port = free_port(), free_port()
                    node.mqtt_port, node.monitor_port = free_port(), free_port()
                continue
            break
        self.wait_ready(timeout)

    def start_node(self, i: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        node = self.nodes[i]
        if node.running:
            return
        binary = nats_binary()
        if binary is None:
            raise BrokerError("nats-server is not installed (apt-get install nats-server)")
        node.workdir.mkdir(parents=True, exist_ok=True)
        conf = node.workdir / "nats.conf"
        conf.write_text(self.config_text(node), encoding="utf-8")
        node.log.clear()
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        node.proc = proc

        def read() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                node.log.append(raw.decode("utf-8", "replace").rstrip())

        threading.Thread(target=read, name=f"nats-{node.name}-log", daemon=True).start()
        if wait:
            self._wait_listening(node, timeout)
            self.wait_ready(timeout)

    def _wait_listening(self, node: NatsNode, timeout: float) -> None:
        """The MQTT listener opens only once the node has JetStream: connect to it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise BrokerError(f"nats-server {node.name} exited:\n" + "\n".join(node.log[-20:]))
            try:
                with socket.create_connection((self.host, node.mqtt_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"nats-server {node.name} did not open MQTT:\n" + "\n".join(node.log[-20:])
                    ) from None
                threading.Event().wait(0.1)  # polling a port another process opens

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the running nodes see each other and JetStream has a meta leader."""
        import json
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.running]
        while True:
            ok = True
            for node in running:
                try:
                    with urllib.request.urlopen(
                        f"http://{self.host}:{node.monitor_port}/jsz", timeout=2
                    ) as r:
                        info = json.load(r)
                except OSError:
                    ok = False
                    break
                meta = info.get("meta_cluster") or {}
                if not meta.get("leader"):
                    ok = False
                    break
            if ok:
                return
            if time.monotonic() > deadline:
                raise BrokerError("the NATS cluster has no JetStream leader")
            threading.Event().wait(0.2)  # polling another process's state

    def reload(self) -> None:
        """SIGHUP every running node: it re-reads its configuration (accounts, users,
        permissions) without dropping connections that are still allowed."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGHUP)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash: nothing flushed that was not already)."""
        node = self.nodes[i]
        proc, node.proc = node.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            proc, node.proc = node.proc, None
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def logs(self) -> str:
        return "\n".join(f"{n.name}: {line}" for n in self.nodes for line in n.log[-30:])

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def endpoints_url(endpoints: Sequence[tuple[str, int]], scheme: str = "mqtt") -> str:
    return ",".join(f"{scheme}://{h}:{p}" for h, p in endpoints)

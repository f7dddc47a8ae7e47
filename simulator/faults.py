"""Network faults between units and the broker: a loopback TCP proxy that can cut, delay
and blackhole connections on command.

``cut()`` severs every connection and refuses new ones (a cable pulled);
``blackhole()`` keeps connections open but forwards nothing (a silent network);
``delay_ms`` adds latency to every chunk; ``restore()`` heals.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

log = logging.getLogger(__name__)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((self.host, listen_port))
        self.port = int(self._server.getsockname()[1])
        self._server.listen(128)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._black = threading.Event()
        self._refuse = threading.Event()
        self.delay_ms = 0
        self.connections = 0
        self.refused = 0
        """Connections answered with an MQTT refusal (``refuse``) so far."""
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    # ------------------------------------------------------------ faults

    def cut(self) -> None:
        """Sever all connections and refuse new ones until :meth:`restore`."""
        self._cut.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def refuse(self) -> None:
        """Sever every connection and answer each new one as a broker refusing the
        unit's credentials would: an MQTT 3.1.1 CONNACK "not authorised" (a rotated or
        revoked password), until :meth:`unrefuse`."""
        self._refuse.set()
        self.cut()
        self._cut.clear()

    def unrefuse(self) -> None:
        self._refuse.clear()

    def blackhole(self) -> None:
        """Keep connections up but forward nothing (packets silently dropped)."""
        self._black.set()

    def uncut(self) -> None:
        """Heal a cut only (another fault running at the same time stays)."""
        self._cut.clear()

    def unblackhole(self) -> None:
        """Heal a blackhole only."""
        self._black.clear()

    def undelay(self) -> None:
        """Heal added latency only."""
        self.delay_ms = 0

    def restore(self) -> None:
        """Heal everything (the end of a run)."""
        self._cut.clear()
        self._black.clear()
        self._refuse.clear()
        self.delay_ms = 0

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    # ------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            if self._refuse.is_set():
                threading.Thread(target=self._refuse_one, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _refuse_one(self, client: socket.socket) -> None:
        with self._lock:
            self.refused += 1
        try:
            client.settimeout(5)
            client.recv(4096)  # the CONNECT
            client.sendall(b"\x20\x02\x00\x05")  # CONNACK: not authorised
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if self._black.is_set():
                    continue
                if self.delay_ms:
                    time.sleep(self.delay_ms / 1000)  # injected latency
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]

    def close(self) -> None:
        self._stop.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(2)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Start a private MQTT broker for tests, benchmarks and the demo.

:class:`MosquittoBroker` runs the real ``mosquitto`` binary on a free loopback
port with a configuration written here (persistence on, raised queue limits,
optional password/ACL files or extra lines). :class:`EmbeddedBroker` runs the
pure-Python amqtt broker in a thread for machines without Mosquitto (MQTT 3.1.1
only, no shared subscriptions).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


class BrokerError(RuntimeError):
    """The broker could not be started or stopped."""


_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port, never one this process was given before (the kernel may hand the
    same one out twice in a row, and two listeners of one broker then collide)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class MosquittoBroker:
    """A real Mosquitto on ``127.0.0.1:port``, persisting into ``workdir``.

    ``stop()`` then ``start()`` restarts it on the same port with the same
    persistence file, which is how tests crash and revive the broker.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        allow_anonymous: bool | None = None,
        extra_config: Sequence[str] = (),
        max_queued_messages: int = 1_000_000,
        autosave_interval: int = 1,
        config_file: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gnahat-mqtt-"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.password_file = password_file
        self.acl_file = acl_file
        self.allow_anonymous = password_file is None if allow_anonymous is None else allow_anonymous
        self.extra_config = list(extra_config)
        self.max_queued_messages = max_queued_messages
        self.autosave_interval = autosave_interval
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_file = config_file  # a ready configuration (e.g. from provisioning)
        self._log: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.config_file or self.workdir / "mosquitto.conf"

    @property
    def log(self) -> list[str]:
        return list(self._log)

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_file is not None:
            return self.config_file
        lines = [
            # Mosquitto started as root drops to user "mosquitto", which cannot write
            # our persistence directory; keep the invoking user.
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            "persistent_client_expiration 14d",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        lines.extend(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.config_path

    def start(self, timeout: float = 15.0) -> None:
        if self._proc is not None:
            return
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError(
                "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)"
            )
        self.write_config()
        self._log.clear()
        proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                self._log.append(line)
                if line.endswith(" running"):
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, name="mosquitto-log", daemon=True)
        self._reader.start()
        self._proc = proc
        if not ready.wait(timeout) or proc.poll() is not None:
            self.stop()
            raise BrokerError("mosquitto did not start:\n" + "\n".join(self._log[-20:]))
        if self.config_file is None:
            self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> None:
        # The listener socket exists once "Opening ipv4 listen socket" is logged; one
        # connect proves it accepts.
        with socket.create_connection((self.host, self.port), timeout=timeout):
            pass

    def reload(self) -> None:
        """Re-read password and ACL files (SIGHUP), as in production."""
        if self._proc is None:
            raise BrokerError("broker is not running")
        self.write_config()
        self._proc.send_signal(signal.SIGHUP)

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EmbeddedBroker:
    """amqtt in a background thread: the demo's fallback when Mosquitto is absent."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._thread: threading.Thread | None = None
        self._stop: tuple[Any, Any] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        import asyncio

        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

        def run() -> None:
            loop = asyncio.new_event_loop()
            stop = asyncio.Event()

            async def main() -> None:
                broker = Broker(config, loop=loop)
                await broker.start()
                self._ready.set()
                await stop.wait()
                await broker.shutdown()

            self._stop = (loop, stop)
            try:
                loop.run_until_complete(main())
            except BaseException as exc:
                self._error = exc
                self._ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise BrokerError(f"embedded broker did not start: {self._error!r}")

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._stop is not None
        loop, stop = self._stop
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)
        self._thread = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

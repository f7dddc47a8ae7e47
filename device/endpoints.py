"""Broker endpoints: a unit and the collector take a list and fail over between them.

One broker (Mosquitto) is one endpoint; a broker cluster (NATS: every node speaks
MQTT and shares sessions through replicated storage) is one endpoint per node. A
client connects to the first; whenever a connection is lost, refused or cannot be
made, the next attempt goes to the next endpoint, round the list, with paho's own
back-off between attempts (the same back-off, TLS and credentials for every
endpoint). Nothing here knows which broker it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """``host``, ``host:port`` or ``[v6]:port``; a clear error for anything else."""
    text = text.strip()
    if not text:
        raise ValueError("an empty broker endpoint")
    parts = urlsplit("//" + text)
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or parts.path or parts.query:
        raise ValueError(f"{text!r} is not host or host:port")
    return parts.hostname, port


class Failover:
    """Round-robin over ``endpoints`` for one paho client.

    ``connect(host, port)`` (re)arms the client for an endpoint, normally
    ``client.connect_async(host, port, ...)`` with the client's own options: paho's
    loop makes its next attempt there. Wire ``lost`` to ``on_disconnect`` and
    ``failed`` to ``on_connect_fail``.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        connect: Callable[[str, int], None],
        *,
        quick: Callable[[], None] | None = None,
        first: int = 0,
    ) -> None:
        """``quick()``: make the next attempt after the shortest wait (the client's
        back-off reset); called when moving on to an endpoint not yet tried since the
        last good connection, so a dead node costs one short wait, not a doubling
        back-off. Once every endpoint has failed, the back-off grows as usual.
        ``first``: the endpoint tried first (a new client continuing round the list)."""
        if not endpoints:
            raise ValueError("no broker endpoint")
        self.endpoints = list(endpoints)
        self._connect = connect
        self._quick = quick
        self._index = first % len(self.endpoints)
        self._failed_since_ok = 0
        self._lock = threading.Lock()
        self.switches = 0

    def connected(self) -> None:
        """A connection was accepted (``on_connect`` without failure)."""
        with self._lock:
            self._failed_since_ok = 0

    @property
    def index(self) -> int:
        return self._index

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self._index]

    def start(self) -> None:
        self._connect(*self.current)

    def _advance(self, why: str) -> None:
        if len(self.endpoints) < 2:
            return  # one broker: paho retries it
        with self._lock:
            old = self.current
            self._index = (self._index + 1) % len(self.endpoints)
            self.switches += 1
            self._failed_since_ok += 1
            fresh = self._failed_since_ok < len(self.endpoints)
            host, port = self.current
        log.warning("broker %s:%d %s; next attempt at %s:%d", *old, why, host, port)
        self._connect(host, port)
        if fresh and self._quick is not None:
            self._quick()

    def lost(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        """``on_disconnect``: a lost or refused connection goes to the next endpoint; a
        disconnect we asked for (reason 0) does not."""
        if getattr(reason, "is_failure", bool(reason)):
            self._advance(f"lost ({reason})")

    def failed(self, client: Any, userdata: Any) -> None:
        """``on_connect_fail``: the endpoint could not be reached."""
        self._advance("unreachable")

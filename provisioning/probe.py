"""Ask the running broker whether it takes a unit's credentials.

Mosquitto applies a SIGHUP at the next turn of its main loop, not at once; after
``unit add``, ``rotate`` or ``revoke`` the provisioning tool asks the broker itself,
with the unit's own credentials, until the broker answers as intended. A technician
then knows the change is live, not merely written.
"""

from __future__ import annotations

import enum
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Answer(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Credentials:
    """How a unit logs in: a password on the TLS port, or a client certificate."""

    username: str
    password: str | None = None
    cert: tuple[Path, Path] | None = None  # (certificate, key)


def ask(
    host: str, port: int, ca_file: Path, creds: Credentials, *, timeout: float = 5.0
) -> tuple[Answer, str]:
    """One connection attempt: does the broker accept these credentials?"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from device.mqtt_loop import stop_loop

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"gnahat-provision-probe-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
    )
    if creds.cert is None:
        client.username_pw_set(creds.username, creds.password)
    client.tls_set(
        ca_certs=str(ca_file),
        certfile=str(creds.cert[0]) if creds.cert else None,
        keyfile=str(creds.cert[1]) if creds.cert else None,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    done = threading.Event()
    result: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append("Success" if not reason.is_failure else str(reason))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect(host, port, keepalive=10)
    except ssl.SSLError as exc:  # the handshake itself refused us
        return Answer.REFUSED, f"TLS: {exc.reason or exc}"
    except OSError as exc:
        return Answer.UNREACHABLE, f"{host}:{port}: {exc}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return Answer.REFUSED, "no answer to CONNECT"
        if result == ["Success"]:
            client.disconnect()
            return Answer.ACCEPTED, "connected"
        return Answer.REFUSED, result[0] if result else "connection closed before CONNACK"
    finally:
        stop_loop(client)


def wait_for(
    want: Answer,
    probe: Callable[[], tuple[Answer, str]],
    *,
    timeout: float = 15.0,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Answer, str]:
    """Ask until the broker gives ``want`` (or is unreachable, or time runs out)."""
    deadline = clock() + timeout
    while True:
        answer, detail = probe()
        if answer is want or answer is Answer.UNREACHABLE or clock() >= deadline:
            return answer, detail
        sleep(interval)  # the broker applies a reload on its next loop turn

"""Builders for crafted events and received messages."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.intake.store import Received
from device import protocol as p

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # 10:00 in Yerevan
DEV = "am-sh-gyumri1-d03"


def event(
    seq: int, *, device: str = DEV, stream: str = "s1", score: int = 4, at: datetime = T0, **kw: Any
) -> p.Event:
    fields: dict[str, Any] = dict(
        type=p.EventType.RATING,
        device=device,
        stream=stream,
        seq=seq,
        at=(at + timedelta(minutes=seq)).isoformat(),
        clock_synced=True,
        boot="b1",
        mono_ms=seq * 60_000,
        sent_mono_ms=seq * 60_000 + 5,
        sent_boot="b1",
        score=score,
        scale=4,
        staff=None,
    )
    fields.update(kw)
    return p.Event(**fields)


def msg(
    payload: bytes | p.Event | list[p.Event],
    *,
    device: str = DEV,
    kind: str = "event",
    at: datetime | None = None,
    topic: str | None = None,
) -> Received:
    if isinstance(payload, p.Event):
        payload = p.encode_event(payload)
    elif isinstance(payload, list):
        payload = p.encode_batch(payload)
    return Received(
        topic or f"gnahat/v1/dev/{device}/{kind}", payload, at or T0 + timedelta(hours=1)
    )


def replace(e: p.Event, **changes: Any) -> p.Event:
    return dataclasses.replace(e, **changes)


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port (as ``serve`` runs it: no
    ``server`` header, no forwarded headers believed); yields its base URL."""
    import uvicorn

    from simulator.broker import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            server_header=False,
            proxy_headers=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not server.started:
        assert thread.is_alive(), "the app did not start"
        started.wait(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

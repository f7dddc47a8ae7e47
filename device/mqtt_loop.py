"""Stopping paho's network thread safely.

paho's ``loop_stop()`` reads ``client._thread`` twice; when the network thread ends on
its own in between (as it does right after ``disconnect()``), the second read is
``None`` and ``loop_stop()`` raises ``AttributeError``. This wrapper keeps a reference
to the thread, asks paho to stop, and joins the thread itself.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


def stop_loop(client: Any, timeout: float | None = 10.0) -> None:
    """Stop ``client``'s ``loop_start()`` thread; a thread that already ended is fine."""
    thread: threading.Thread | None = getattr(client, "_thread", None)
    with contextlib.suppress(AttributeError):  # the thread cleared itself in between
        client.loop_stop()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)

"""Time sources of the unit, injectable for tests.

``Clock`` gives wall time (aware), monotonic milliseconds and whether the kernel
clock is synchronised (``adjtimex``: STA_UNSYNC clear and maxerror < 16 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

STA_UNSYNC = 0x0040
TIME_ERROR = 5


class Clock(Protocol):
    def now(self) -> datetime: ...
    def mono_ms(self) -> int: ...
    def synced(self) -> bool: ...


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool:
    """True when the kernel says NTP keeps the clock in sync (adjtimex, else timedatectl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
        if state >= 0:
            return state != TIME_ERROR and not tx.status & STA_UNSYNC
    except (OSError, AttributeError):
        pass
    try:
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
        return out.stdout.strip() == "yes"
    except (OSError, subprocess.SubprocessError):
        return False


class SystemClock:
    """The real clocks; ``synced()`` is cached for a few seconds."""

    def __init__(self, synced_check: object = kernel_clock_synced, cache_s: float = 10.0) -> None:
        self._check = synced_check
        self._cache_s = cache_s
        self._cached: tuple[float, bool] | None = None

    def now(self) -> datetime:
        return datetime.now().astimezone()

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def synced(self) -> bool:
        t = time.monotonic()
        if self._cached is None or t - self._cached[0] > self._cache_s:
            self._cached = (t, bool(self._check()))  # type: ignore[operator]
        return self._cached[1]


@dataclass
class FakeClock:
    """A clock tests move by hand."""

    wall: datetime
    mono: int = 1_000
    is_synced: bool = True

    def now(self) -> datetime:
        return self.wall

    def mono_ms(self) -> int:
        return self.mono

    def synced(self) -> bool:
        return self.is_synced

    def advance(self, ms: int) -> None:
        self.mono += ms
        self.wall = self.wall + timedelta(milliseconds=ms)

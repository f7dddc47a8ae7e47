"""Inputs of the unit: rating buttons, the staff arm button, the badge reader, a queue system.

Buttons come through gpiozero (``pin_factory`` injectable). Debounce is ours:
gpiozero's ``MockPin`` ignores ``bounce_time``, and contact bounce on real
buttons must never count twice. Serial devices come through pyserial (any URL:
``/dev/serial0``, a pty, ``loop://``).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from device.errors import BadgeFrameError

log = logging.getLogger(__name__)

STX, ETX = 0x02, 0x03
FRAME_LEN = 14  # STX + 10 data + 2 checksum + ETX
HEX = frozenset(b"0123456789ABCDEFabcdef")


class Debouncer:
    """Accepts an edge only if ``ms`` passed since the previous edge on the same input."""

    def __init__(self, ms: int, mono_ms: Callable[[], int]) -> None:
        self.ms = ms
        self._mono_ms = mono_ms
        self._last: dict[int, int] = {}
        self.bounces = 0

    def accept(self, key: int) -> bool:
        now = self._mono_ms()
        last = self._last.get(key)
        self._last[key] = now
        if last is not None and now - last < self.ms:
            self.bounces += 1
            return False
        return True


class RatingButtons:
    """``scale`` buttons, worst first; ``when_rated(score)`` fires once per clean press."""

    def __init__(
        self,
        pins: Sequence[int],
        *,
        debounce_ms: int,
        mono_ms: Callable[[], int],
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button

        self.when_rated: Callable[[int], object] | None = None
        self._debounce = Debouncer(debounce_ms, mono_ms)
        self.buttons = [
            Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory) for pin in pins
        ]
        for index, button in enumerate(self.buttons):
            button.when_pressed = self._handler(index + 1)

    def _handler(self, score: int) -> Callable[[], None]:
        def pressed() -> None:
            if self._debounce.accept(score) and self.when_rated is not None:
                self.when_rated(score)

        return pressed

    @property
    def bounces(self) -> int:
        return self._debounce.bounces

    def close(self) -> None:
        for b in self.buttons:
            b.close()


class ArmButton:
    def __init__(
        self, pin: int, *, debounce_ms: int, mono_ms: Callable[[], int], pin_factory: Any = None
    ) -> None:
        from gpiozero import Button

        self.when_armed: Callable[[], object] | None = None
        self._debounce = Debouncer(debounce_ms, mono_ms)
        self.button = Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        self.button.when_pressed = self._pressed

    def _pressed(self) -> None:
        if self._debounce.accept(0) and self.when_armed is not None:
            self.when_armed()

    def close(self) -> None:
        self.button.close()


class Rdm6300Parser:
    """Byte-stream parser for RDM6300 125 kHz readers.

    Frame: STX, 10 hex-ASCII data characters (version byte + 32-bit tag), 2
    hex-ASCII checksum characters (XOR of the 5 data bytes), ETX. Garbage and
    broken frames are skipped by resynchronising on the next STX.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors = 0

    @staticmethod
    def decode_frame(frame: bytes) -> str:
        if len(frame) != FRAME_LEN or frame[0] != STX or frame[-1] != ETX:
            raise BadgeFrameError("bad framing")
        body = frame[1:-1]
        if not all(c in HEX for c in body):
            raise BadgeFrameError("non-hex characters in frame")
        data = bytes.fromhex(body[:10].decode("ascii"))
        checksum = int(body[10:12], 16)
        x = 0
        for b in data:
            x ^= b
        if x != checksum:
            raise BadgeFrameError(f"checksum {checksum:02X} != {x:02X}")
        return body[:10].decode("ascii").upper()

    @staticmethod
    def encode_frame(badge: str) -> bytes:
        """The frame a reader sends for ``badge`` (10 hex characters); for tests and sims."""
        data = bytes.fromhex(badge)
        if len(data) != 5:
            raise ValueError("a badge id is 10 hex characters")
        x = 0
        for b in data:
            x ^= b
        return bytes([STX]) + badge.upper().encode() + f"{x:02X}".encode() + bytes([ETX])

    def feed(self, chunk: bytes) -> list[str]:
        self._buf.extend(chunk)
        out: list[str] = []
        while True:
            start = self._buf.find(bytes([STX]))
            if start < 0:
                if self._buf:
                    self.errors += 1 if any(self._buf) else 0
                self._buf.clear()
                return out
            if start > 0:
                self.errors += 1
                del self._buf[:start]
            if len(self._buf) < FRAME_LEN:
                return out
            frame = bytes(self._buf[:FRAME_LEN])
            try:
                out.append(self.decode_frame(frame))
                del self._buf[:FRAME_LEN]
            except BadgeFrameError:
                self.errors += 1
                del self._buf[:1]  # resynchronise on the next STX


class SerialListener(abc.ABC):
    """Reads a serial port on its own thread and hands every chunk to ``handle_bytes``.

    Give it an open ``port``, or an ``opener`` that opens one: then a port that is
    missing at start (an unplugged reader) or that fails while running is opened
    again and again, with back-off, on this thread — never taking the unit down.
    ``state`` says ``ok``, ``unplugged`` or ``closed``; ``last_error`` why.
    """

    name = "serial"
    #: Longest wait between attempts to open a missing port, seconds.
    REOPEN_MAX_S = 30.0

    def __init__(self, port: Any = None, *, opener: Callable[[], Any] | None = None) -> None:
        if port is None and opener is None:
            raise ValueError("give a port or an opener")
        self.port = port
        self.opener = opener
        self.state = "ok" if port is not None else "unplugged"
        self.last_error: str | None = None
        self.reopened = 0
        self._opening = threading.Lock()
        """One attempt to open at a time (the reader thread, a technician's check)."""
        self.changed = threading.Condition()
        """Notified whenever ``state`` changes (tests and status pages wait on it)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def handle_bytes(self, chunk: bytes) -> None:
        """Parse what arrived (may be part of a frame or line)."""

    def poll(self) -> None:
        """Read what is waiting on the port (one step of the reader thread)."""
        chunk = self.port.read(max(1, self.port.in_waiting))
        if chunk:
            self.handle_bytes(chunk)

    def try_open(self) -> bool:
        """One attempt to open the port; True when it is open.

        Serialised: an attempt that fails must not report "unplugged" over another
        attempt that has just opened the port.
        """
        with self._opening:
            if self.port is not None:
                return True
            if self.opener is None:
                return False
            try:
                self.port = self.opener()
            except Exception as exc:  # serial.SerialException, OSError, ...
                self._set("unplugged", str(exc) or type(exc).__name__)
                return False
            if self.last_error is not None:
                self.reopened += 1
                log.warning("%s is back", self.name)
            self._set("ok", None)
            return True

    def _set(self, state: str, error: str | None) -> None:
        with self.changed:
            self.state, self.last_error = state, error
            self.changed.notify_all()

    def wait_state(self, state: str, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.state == state, timeout)

    def _lost(self, exc: Exception) -> None:
        log.warning("%s failed (%s); reopening", self.name, exc)
        port, self.port = self.port, None
        self._set("unplugged", str(exc) or type(exc).__name__)
        with contextlib.suppress(Exception):
            port.close()

    def start(self) -> None:
        def loop() -> None:
            wait = 1.0
            while not self._stop.is_set():
                if not self.try_open():
                    self._stop.wait(wait)
                    wait = min(wait * 2, self.REOPEN_MAX_S)
                    continue
                wait = 1.0
                try:
                    self.poll()
                except Exception as exc:
                    if self.opener is None:
                        log.exception("%s failed; retrying", self.name)
                        self._stop.wait(1.0)
                    else:
                        self._lost(exc)

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._set("closed", self.last_error)
        if self.port is not None:
            with contextlib.suppress(Exception):
                self.port.close()


class BadgeReader(SerialListener):
    """Reads badges from a serial port; a badge held on the reader is reported once.

    The reader repeats frames while a card is held; a repeat of the same badge
    within ``hold_ms`` of its previous frame is the same tap.
    """

    name = "badge-reader"

    def __init__(
        self,
        port: Any = None,
        *,
        hold_ms: int,
        mono_ms: Callable[[], int],
        opener: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(port, opener=opener)
        self.hold_ms = hold_ms
        self._mono_ms = mono_ms
        self.parser = Rdm6300Parser()
        self.when_badge: Callable[[str], None] | None = None
        self._last: tuple[str, int] | None = None

    def handle_bytes(self, chunk: bytes) -> None:
        for badge in self.parser.feed(chunk):
            now = self._mono_ms()
            held = (
                self._last is not None
                and self._last[0] == badge
                and (now - self._last[1] < self.hold_ms)
            )
            self._last = (badge, now)
            if not held and self.when_badge is not None:
                self.when_badge(badge)


class QueueSerial(SerialListener):
    """A queue-management system arms the unit by sending ``ARM`` lines over serial."""

    name = "queue-serial"

    def __init__(self, port: Any = None, *, opener: Callable[[], Any] | None = None) -> None:
        super().__init__(port, opener=opener)
        self.when_armed: Callable[[str], None] | None = None
        self._buf = bytearray()
        self.ignored = 0

    def handle_bytes(self, chunk: bytes) -> None:
        self._buf.extend(chunk)
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf = bytearray(rest)
            text = line.decode("ascii", "replace").strip()
            word, _, arg = text.partition(" ")
            if word.upper() == "ARM":
                if self.when_armed is not None:
                    self.when_armed(arg.strip())
            elif text:
                self.ignored += 1
                log.warning("queue system sent %r; only ARM is understood", text)
        if len(self._buf) > 4096:
            self._buf.clear()

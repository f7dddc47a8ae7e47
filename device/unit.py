"""The unit: wires inputs, outbox, feedback and link, and holds the rating rules.

Rules (see docs/device.md):

- ``free`` mode: a press counts unless it comes within ``cooldown_s`` of the
  last counted press; then it is counted as suppressed (health), not sent.
- ``armed`` mode: staff arm the unit (arm button, a badge tap of the logged-in
  staff member, or ``ARM`` from the queue system); the prompt lights and one
  press within ``arm_window_s`` counts. Other presses are "not counted".
- Badge taps: nobody logged in → ``staff_login``; the same badge again →
  ``staff_logout`` (in armed mode, the same badge arms instead, and a second tap
  while armed logs out); another badge → logout then login. A session ends
  by itself after ``session_timeout_s``.
- Feedback comes only after the outbox's durable write; a full outbox or a
  storage error shows the fault pattern and the press is not acknowledged.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from device import protocol as p
from device.clock import Clock
from device.config import UnitConfig
from device.errors import OutboxFull
from device.feedback import Feedback
from device.outbox import Outbox

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    COUNTED = "counted"
    COOLDOWN = "cooldown"  # inside the cooldown after a counted press
    NOT_ARMED = "not_armed"  # armed mode, and nobody armed the unit
    REFUSED = "refused"  # the outbox cannot take it (full disk): the fault pattern shows
    NO_RATING = "no_rating"  # factors with no counted rating in the last FOLLOW_UP_S


#: How long after a counted rating its factors may follow (the kiosk asks for ~20 s).
FOLLOW_UP_S = 60


class Unit:
    def __init__(
        self,
        config: UnitConfig,
        *,
        clock: Clock,
        outbox: Outbox,
        feedback: Feedback,
        on_appended: Callable[[p.Event], None] | None = None,
        boot: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.outbox = outbox
        self.feedback = feedback
        self.on_appended = on_appended
        self.boot = boot or secrets.token_urlsafe(6)
        self._lock = threading.RLock()
        self.staff: str | None = None
        self._staff_since_ms: int | None = None
        self._last_counted_ms: int | None = None
        self._armed_until_ms: int | None = None
        self._last_rating: tuple[int, int] | None = None  # (seq, mono ms) of the last counted
        self.suppressed = 0
        self.not_armed = 0
        self.refused = 0
        self.acknowledged = 0

    # ------------------------------------------------------------ state

    @property
    def is_armed(self) -> bool:
        with self._lock:
            self._expire()
            return self._armed_until_ms is not None

    def _expire(self) -> None:
        now = self.clock.mono_ms()
        if self._armed_until_ms is not None and now >= self._armed_until_ms:
            self._armed_until_ms = None
            self.feedback.prompt_off()
        if (
            self.staff is not None
            and self._staff_since_ms is not None
            and now - self._staff_since_ms >= self.config.session_timeout_s * 1000
        ):
            self._staff_event(p.EventType.STAFF_LOGOUT, self.staff, reason="timeout")
            self.staff = None
            self._staff_since_ms = None

    def tick(self) -> None:
        """Run timers (arm window, session timeout); the daemon calls this every second."""
        with self._lock:
            self._expire()

    def health(self) -> dict[str, Any]:
        return {
            "suppressed_presses": self.suppressed + self.not_armed,
            "cooldown_suppressed": self.suppressed,
            "not_armed_presses": self.not_armed,
            "refused_presses": self.refused,
            "mode": self.config.mode,
            "staff_logged_in": self.staff is not None,
        }

    # ------------------------------------------------------------ events

    def _append(self, etype: p.EventType, **fields: Any) -> p.Event | None:
        mono = self.clock.mono_ms()
        at = self.clock.now().isoformat(timespec="milliseconds")
        synced = self.clock.synced()

        def make(seq: int) -> p.Event:
            return p.Event(
                type=etype,
                device=self.config.device_id,
                stream=self.outbox.stream,
                seq=seq,
                at=at,
                clock_synced=synced,
                boot=self.boot,
                mono_ms=mono,
                **fields,
            )

        try:
            event = self.outbox.append(make, mono_ms=mono)
        except OutboxFull as exc:
            log.error("press refused: %s", exc)
            self.refused += 1
            self.feedback.fault()
            return None
        except Exception:
            log.exception("outbox write failed; press refused")
            self.refused += 1
            self.feedback.fault()
            return None
        if self.on_appended is not None:
            self.on_appended(event)
        return event

    def _staff_event(self, etype: p.EventType, badge: str, reason: str = "tap") -> None:
        event = self._append(etype, staff=badge, extra={"reason": reason})
        if event is not None:
            (self.feedback.login if etype is p.EventType.STAFF_LOGIN else self.feedback.logout)()

    # ------------------------------------------------------------ inputs

    def press(self, score: int) -> bool:
        """A visitor pressed ``score``; True when it was counted and acknowledged."""
        return self.rate(score) is Outcome.COUNTED

    def rate(self, score: int) -> Outcome:
        """A visitor's rating from any input (buttons, kiosk): what became of it.

        ``COUNTED`` only after the durable write, and with the "thank you" feedback.
        """
        with self._lock:
            self._expire()
            now = self.clock.mono_ms()
            if self.config.mode == "armed":
                if self._armed_until_ms is None:
                    self.not_armed += 1
                    self.feedback.not_counted()
                    return Outcome.NOT_ARMED
            elif (
                self._last_counted_ms is not None
                and now - self._last_counted_ms < self.config.cooldown_s * 1000
            ):
                self.suppressed += 1
                self.feedback.not_counted()
                return Outcome.COOLDOWN
            event = self._append(
                p.EventType.RATING, score=score, scale=self.config.scale, staff=self.staff
            )
            if event is None:
                return Outcome.REFUSED
            self._last_counted_ms = now
            self._last_rating = (event.seq, now)
            if self._armed_until_ms is not None:
                self._armed_until_ms = None
                self.feedback.prompt_off()
            self.acknowledged += 1
            self.feedback.thanks(score)
            return Outcome.COUNTED

    def follow_up(self, answers: dict[str, Any], service: str | None = None) -> Outcome:
        """The assessment factors of the last counted rating (a kiosk asks them after the
        score): one ``factors`` event linked to it, at most once, within
        :data:`FOLLOW_UP_S`. ``answers`` must already be valid (checked by the caller
        with :func:`device.protocol.event_from_obj` rules)."""
        with self._lock:
            now = self.clock.mono_ms()
            last = self._last_rating
            if last is None or now - last[1] > FOLLOW_UP_S * 1000 or not answers:
                return Outcome.NO_RATING
            event = self._append(
                p.EventType.FACTORS,
                rating_seq=last[0],
                scale=self.config.scale,
                staff=self.staff,
                answers=answers,
                service=service,
            )
            if event is None:
                return Outcome.REFUSED
            self._last_rating = None
            return Outcome.COUNTED

    def arm(self, source: str = "button") -> None:
        with self._lock:
            self._expire()
            if self.config.mode != "armed":
                return
            self._armed_until_ms = self.clock.mono_ms() + int(self.config.arm_window_s * 1000)
            self.feedback.prompt_on()
            log.info("armed by %s", source)

    def badge(self, badge: str) -> None:
        with self._lock:
            self._expire()
            if self.staff is None:
                self._login(badge)
                if self.config.mode == "armed":
                    self.arm("badge")
            elif self.staff == badge:
                if self.config.mode == "armed" and self._armed_until_ms is None:
                    self.arm("badge")
                    return
                self._logout()
            else:
                self._logout()
                self._login(badge)

    def _login(self, badge: str) -> None:
        self.staff = badge
        self._staff_since_ms = self.clock.mono_ms()
        self._staff_event(p.EventType.STAFF_LOGIN, badge)

    def _logout(self) -> None:
        if self.staff is None:
            return
        badge, self.staff, self._staff_since_ms = self.staff, None, None
        if self._armed_until_ms is not None:
            self._armed_until_ms = None
            self.feedback.prompt_off()
        self._staff_event(p.EventType.STAFF_LOGOUT, badge)

    def on_command(self, command: p.Command, args: dict[str, Any]) -> None:
        if command is p.Command.IDENTIFY:
            seconds = args.get("seconds", 10)
            self.feedback.identify(float(seconds) if isinstance(seconds, int | float) else 10.0)

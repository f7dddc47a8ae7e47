"""What the visitor and staff see and hear: LEDs, buzzer and an optional spoken clip.

Each outcome has its own pattern so nobody is left guessing, and none relies on
colour alone (position, rhythm and sound differ too):

- ``thanks``: the pressed button's LED blinks twice, one short high beep, and
  the spoken «Շնորհակալություն» when voice is on;
- ``not_counted`` (cooldown, not armed): amber LED three quick blinks, two short beeps;
- ``fault`` (outbox full, no config, storage error): amber LED on steadily, one long beep;
- ``prompt`` (armed): the prompt ring lights until a press or the window ends;
- ``identify``: every LED blinks, for a technician finding the unit.
"""

from __future__ import annotations

import enum
import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from device.config import VoiceConfig

log = logging.getLogger(__name__)


class Pattern(enum.StrEnum):
    THANKS = "thanks"
    NOT_COUNTED = "not_counted"
    FAULT = "fault"
    PROMPT_ON = "prompt_on"
    PROMPT_OFF = "prompt_off"
    IDENTIFY = "identify"
    LOGIN = "login"
    LOGOUT = "logout"
    FOLLOW_UP = "follow_up"


class Voice:
    """Plays a short clip with a standard player, never blocking the caller."""

    def __init__(self, config: VoiceConfig, runner: Callable[[list[str]], Any] | None = None):
        self.config = config
        self._runner = runner or (
            lambda argv: subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        self._current: Any = None

    def play(self, file: str | None) -> None:
        if not self.config.enabled or not file:
            return
        argv = [part.replace("{file}", file) for part in self.config.command]
        try:
            if self._current is not None and getattr(self._current, "poll", lambda: 0)() is None:
                self._current.terminate()
            self._current = self._runner(argv)
        except OSError as exc:
            log.warning("cannot play %s: %s", file, exc)


class Feedback:
    """LEDs and buzzer through gpiozero, plus the voice. ``shown`` records every pattern."""

    def __init__(
        self,
        *,
        leds: Sequence[int],
        prompt_led: int | None,
        fault_led: int | None,
        buzzer: int | None,
        voice: Voice | None = None,
        pin_factory: Any = None,
        mono_ms: Callable[[], int] | None = None,
    ) -> None:
        from gpiozero import LED, Buzzer

        self.leds = [LED(p, pin_factory=pin_factory) for p in leds]
        self.prompt = LED(prompt_led, pin_factory=pin_factory) if prompt_led is not None else None
        self.fault_led = LED(fault_led, pin_factory=pin_factory) if fault_led is not None else None
        self.buzzer = Buzzer(buzzer, pin_factory=pin_factory) if buzzer is not None else None
        self.voice = voice
        self._mono_ms = mono_ms
        self.shown: list[tuple[Pattern, int | None]] = []
        self._listeners: list[Callable[[Pattern, int | None], None]] = []
        self._lock = threading.Lock()

    def on_shown(self, listener: Callable[[Pattern, int | None], None]) -> None:
        self._listeners.append(listener)

    def _record(self, pattern: Pattern, arg: int | None = None) -> None:
        with self._lock:
            self.shown.append((pattern, arg))
            del self.shown[:-1000]
        for listener in self._listeners:
            listener(pattern, arg)

    def thanks(self, score: int) -> None:
        if 1 <= score <= len(self.leds):
            self.leds[score - 1].blink(on_time=0.15, off_time=0.1, n=2, background=True)
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.08, off_time=0.05, n=1, background=True)
        if self.voice is not None:
            self.voice.play(self.voice.config.thanks_file)
        self._record(Pattern.THANKS, score)

    def follow_up(self) -> None:
        """The kiosk asks the assessment factors: read the question clip, if there is one."""
        if self.voice is not None:
            self.voice.play(self.voice.config.follow_up_file)
        self._record(Pattern.FOLLOW_UP)

    def not_counted(self) -> None:
        if self.fault_led is not None:
            self.fault_led.blink(on_time=0.08, off_time=0.08, n=3, background=True)
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.05, off_time=0.08, n=2, background=True)
        self._record(Pattern.NOT_COUNTED)

    def fault(self) -> None:
        if self.fault_led is not None:
            self.fault_led.on()
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.6, off_time=0.1, n=1, background=True)
        self._record(Pattern.FAULT)

    def clear_fault(self) -> None:
        if self.fault_led is not None:
            self.fault_led.off()

    def prompt_on(self) -> None:
        if self.prompt is not None:
            self.prompt.on()
        if self.voice is not None and self.voice.config.prompt_file:
            self.voice.play(self.voice.config.prompt_file)
        self._record(Pattern.PROMPT_ON)

    def prompt_off(self) -> None:
        if self.prompt is not None:
            self.prompt.off()
        self._record(Pattern.PROMPT_OFF)

    def login(self) -> None:
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.05, off_time=0.05, n=1, background=True)
        self._record(Pattern.LOGIN)

    def logout(self) -> None:
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.05, off_time=0.05, n=2, background=True)
        self._record(Pattern.LOGOUT)

    def identify(self, seconds: float = 10.0) -> None:
        n = max(1, int(seconds / 0.5))
        for led in [*self.leds, *(x for x in (self.prompt, self.fault_led) if x is not None)]:
            led.blink(on_time=0.25, off_time=0.25, n=n, background=True)
        self._record(Pattern.IDENTIFY)

    def close(self) -> None:
        for dev in [*self.leds, self.prompt, self.fault_led, self.buzzer]:
            if dev is not None:
                dev.close()

"""The unit's configuration: one TOML file written by provisioning.

Every problem is reported with the key and how to fix it, all at once.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device import pins
from device.endpoints import parse_endpoint
from device.errors import ConfigError
from device.protocol import DEVICE_ID_RE, SCALES


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    ack_timeout_s: float = 30.0
    batch_max: int = 256
    inflight_max: int = 4096
    health_interval_s: float = 60.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    brokers: tuple[tuple[str, int], ...] = ()
    """More brokers after ``host:port`` (the other nodes of a broker cluster): a lost or
    failed connection moves to the next, round the list."""

    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *self.brokers]

    def password(self) -> str | None:
        if not self.password_file:
            return None
        return Path(self.password_file).read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class PinConfig:
    buttons: tuple[int, ...] = pins.RATING_BUTTONS[:4]
    leds: tuple[int, ...] = pins.RATING_LEDS[:4]
    arm_button: int | None = pins.ARM_BUTTON
    prompt_led: int | None = pins.PROMPT_LED
    fault_led: int | None = pins.FAULT_LED
    buzzer: int | None = pins.BUZZER


@dataclass(frozen=True)
class SerialConfig:
    port: str
    baudrate: int = 9600


@dataclass(frozen=True)
class VoiceConfig:
    enabled: bool = False
    command: tuple[str, ...] = ("aplay", "-q", "{file}")
    thanks_file: str = "/usr/share/gnahat/thanks-hy.wav"
    prompt_file: str | None = None
    follow_up_file: str | None = None
    """A clip read when the kiosk asks the assessment factors after a score."""


@dataclass(frozen=True)
class KioskConfig:
    """A touch screen on the unit: a local page whose buttons rate like the real ones."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    language: str = "hy"
    phone_url: str = ""
    """The desk's phone page; with ``visit_key``, the screen shows the desk code and its QR."""
    visit_key: str = ""


@dataclass(frozen=True)
class UnitConfig:
    device_id: str
    mode: str = "free"
    scale: int = 4
    cooldown_s: float = 3.0
    debounce_ms: int = 40
    arm_window_s: float = 20.0
    session_timeout_s: float = 4 * 3600.0
    badge_hold_ms: int = 1500
    outbox_path: str = "/var/lib/gnahat/outbox.db"
    outbox_max_events: int = 200_000
    firmware: str = "0.1.0"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    pins: PinConfig = field(default_factory=PinConfig)
    badge_reader: SerialConfig | None = None
    queue_serial: SerialConfig | None = None
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, problem: str, fix: str) -> None:
        self.items.append(f"{key}: {problem} — {fix}")


def _get(
    data: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    default: Any,
    errs: _Errors,
    section: str,
    fix: str,
) -> Any:
    if key not in data:
        return default
    value = data[key]
    ok = isinstance(value, kind) and not (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    )
    if not ok:
        errs.add(f"{section}.{key}", f"{value!r} has the wrong type", fix)
        return default
    return value


def _brokers(m: dict[str, Any], errs: _Errors) -> tuple[tuple[str, int], ...]:
    fix = 'a list of "host:port", e.g. ["10.0.0.12:8883", "10.0.0.13:8883"]'
    listed = _get(m, "brokers", list, [], errs, "mqtt", fix)
    default_port = 8883 if m.get("tls") else 1883
    out = []
    for item in listed:
        if not isinstance(item, str):
            errs.add("mqtt.brokers", f"{item!r} is not text", fix)
            continue
        try:
            out.append(parse_endpoint(item, default_port))
        except ValueError as exc:
            errs.add("mqtt.brokers", str(exc), fix)
    return tuple(out)


def parse_config(data: dict[str, Any]) -> UnitConfig:
    errs = _Errors()
    known = {"unit", "mqtt", "outbox", "pins", "badge_reader", "queue_serial", "voice", "kiosk"}
    for section in data:
        if section not in known:
            errs.add(section, "unknown section", f"use one of {', '.join(sorted(known))}")
    unit = data.get("unit", {})
    if "device_id" not in unit:
        errs.add("unit.device_id", "missing", 'set it, e.g. device_id = "am-sh-gyumri1-d03"')
        device_id = ""
    else:
        device_id = _get(unit, "device_id", str, "", errs, "unit", "give a string")
        if device_id and not DEVICE_ID_RE.match(device_id):
            errs.add(
                "unit.device_id",
                f"{device_id!r} is not a device id",
                "use lower-case letters, digits and '-'",
            )
    mode = _get(unit, "mode", str, "free", errs, "unit", 'use "free" or "armed"')
    if mode not in ("free", "armed"):
        errs.add("unit.mode", f"{mode!r} is not a mode", 'use "free" or "armed"')
    scale = _get(unit, "scale", int, 4, errs, "unit", "use 3, 4 or 5")
    if scale not in SCALES:
        errs.add("unit.scale", f"{scale} buttons is not supported", "use 3, 4 or 5")
        scale = 4
    num = (int, float)
    cooldown = _get(unit, "cooldown_s", num, 3.0, errs, "unit", "seconds, e.g. 3")
    if cooldown < 0:
        errs.add("unit.cooldown_s", "negative", "use 0 or more seconds")
    window = _get(unit, "arm_window_s", num, 20.0, errs, "unit", "seconds, e.g. 20")
    if window <= 0:
        errs.add("unit.arm_window_s", "must be positive", "use e.g. 20")

    m = data.get("mqtt", {})
    mqtt_cfg = MqttConfig(
        host=_get(m, "host", str, "127.0.0.1", errs, "mqtt", "a host name"),
        port=_get(m, "port", int, 8883 if m.get("tls") else 1883, errs, "mqtt", "a port"),
        tls=_get(m, "tls", bool, False, errs, "mqtt", "true or false"),
        ca_file=_get(m, "ca_file", str, None, errs, "mqtt", "a path"),
        username=_get(m, "username", str, device_id or None, errs, "mqtt", "the device id"),
        password_file=_get(m, "password_file", str, None, errs, "mqtt", "a path"),
        cert_file=_get(m, "cert_file", str, None, errs, "mqtt", "a path"),
        key_file=_get(m, "key_file", str, None, errs, "mqtt", "a path"),
        keepalive_s=_get(m, "keepalive_s", int, 30, errs, "mqtt", "seconds"),
        ack_timeout_s=_get(m, "ack_timeout_s", num, 30.0, errs, "mqtt", "seconds"),
        batch_max=_get(m, "batch_max", int, 256, errs, "mqtt", "1..256"),
        inflight_max=_get(m, "inflight_max", int, 4096, errs, "mqtt", "events in flight"),
        health_interval_s=_get(m, "health_interval_s", num, 60.0, errs, "mqtt", "seconds"),
        reconnect_min_s=_get(m, "reconnect_min_s", num, 1.0, errs, "mqtt", "seconds"),
        reconnect_max_s=_get(m, "reconnect_max_s", num, 60.0, errs, "mqtt", "seconds"),
        brokers=_brokers(m, errs),
    )
    if not 1 <= mqtt_cfg.batch_max <= 256:
        errs.add("mqtt.batch_max", "out of range", "use 1..256 (the protocol's batch limit)")
    if mqtt_cfg.cert_file and not mqtt_cfg.key_file:
        errs.add("mqtt.key_file", "missing while cert_file is set", "give the client key path")
    if (mqtt_cfg.cert_file or mqtt_cfg.ca_file) and not mqtt_cfg.tls:
        errs.add("mqtt.tls", "certificates given but tls is off", "set tls = true")

    o = data.get("outbox", {})
    path = _get(o, "path", str, "/var/lib/gnahat/outbox.db", errs, "outbox", "a file path")
    max_events = _get(o, "max_events", int, 200_000, errs, "outbox", "a count")
    if max_events < 1:
        errs.add("outbox.max_events", "must be at least 1", "use e.g. 200000")

    pz = data.get("pins", {})
    buttons = tuple(
        _get(
            pz,
            "buttons",
            list,
            list(pins.RATING_BUTTONS[:scale]),
            errs,
            "pins",
            "a list of BCM numbers",
        )
    )
    leds = tuple(
        _get(
            pz, "leds", list, list(pins.RATING_LEDS[:scale]), errs, "pins", "a list of BCM numbers"
        )
    )
    k = data.get("kiosk", {})
    kiosk = KioskConfig(
        enabled=_get(k, "enabled", bool, False, errs, "kiosk", "true or false"),
        host=_get(k, "host", str, "127.0.0.1", errs, "kiosk", 'keep "127.0.0.1"'),
        port=_get(k, "port", int, 8765, errs, "kiosk", "a TCP port, e.g. 8765"),
        language=_get(k, "language", str, "hy", errs, "kiosk", '"hy", "en" or "ru"'),
        phone_url=_get(k, "phone_url", str, "", errs, "kiosk", "the desk's phone page address"),
        visit_key=_get(k, "visit_key", str, "", errs, "kiosk", "gnahat-provision cards writes it"),
    )
    if bool(kiosk.phone_url) != bool(kiosk.visit_key):
        errs.add("kiosk.visit_key", "phone_url and visit_key go together",
                 "copy both from the desk's kiosk file (gnahat-provision cards)")  # fmt: skip
    if kiosk.phone_url and not kiosk.phone_url.startswith(("https://", "http://")):
        errs.add("kiosk.phone_url", f"{kiosk.phone_url!r} is not an address", "https://...")
    if kiosk.visit_key:
        from device.visitcode import valid_key

        if not valid_key(kiosk.visit_key):
            errs.add("kiosk.visit_key", "not a base32 key", "gnahat-provision cards writes it")
    if kiosk.language not in ("hy", "en", "ru"):
        errs.add("kiosk.language", f"{kiosk.language!r} is not offered", 'use "hy", "en" or "ru"')
    if kiosk.host not in ("127.0.0.1", "localhost", "::1"):
        errs.add(
            "kiosk.host",
            f"{kiosk.host!r} is not loopback",
            "the kiosk page is for the unit's own screen",
        )
    if not 0 <= kiosk.port <= 65535:
        errs.add("kiosk.port", "out of range", "use e.g. 8765")
    if kiosk.enabled and not buttons:
        pass  # a touch-only kiosk: no physical rating buttons
    elif len(buttons) != scale:
        errs.add(
            "pins.buttons",
            f"{len(buttons)} pins for scale {scale}",
            f"give exactly {scale} BCM numbers, worst first",
        )
    if leds and len(leds) != scale and buttons:
        errs.add(
            "pins.leds",
            f"{len(leds)} pins for scale {scale}",
            f"give {scale} BCM numbers or an empty list",
        )

    def opt(key: str, default: int | None) -> int | None:
        value: int | None = _get(
            pz,
            key,
            (int, type(None)),
            default,
            errs,
            "pins",
            "a BCM number",
        )
        return value

    pin_cfg = PinConfig(
        buttons=buttons,
        leds=leds,
        arm_button=opt("arm_button", pins.ARM_BUTTON),
        prompt_led=opt("prompt_led", pins.PROMPT_LED),
        fault_led=opt("fault_led", pins.FAULT_LED),
        buzzer=opt("buzzer", pins.BUZZER),
    )
    used = [
        x
        for x in (
            *buttons,
            *leds,
            pin_cfg.arm_button,
            pin_cfg.prompt_led,
            pin_cfg.fault_led,
            pin_cfg.buzzer,
        )
        if x is not None
    ]
    dupes = sorted({x for x in used if used.count(x) > 1})
    if dupes:
        errs.add("pins", f"BCM {dupes} used twice", "give every input and output its own pin")
    if any(not isinstance(x, int) or not 0 <= x <= 27 for x in used):
        errs.add("pins", "a pin outside BCM 0..27", "see hardware/pinmap.md")

    def serial(section: str) -> SerialConfig | None:
        s = data.get(section)
        if s is None:
            return None
        port = _get(s, "port", str, "", errs, section, 'e.g. "/dev/serial0"')
        if not port:
            errs.add(f"{section}.port", "missing", 'give the serial device, e.g. "/dev/serial0"')
        return SerialConfig(
            port=port, baudrate=_get(s, "baudrate", int, 9600, errs, section, "e.g. 9600")
        )

    v = data.get("voice", {})
    voice = VoiceConfig(
        enabled=_get(v, "enabled", bool, False, errs, "voice", "true or false"),
        command=tuple(
            _get(
                v,
                "command",
                list,
                ["aplay", "-q", "{file}"],
                errs,
                "voice",
                'e.g. ["aplay", "-q", "{file}"]',
            )
        ),
        thanks_file=_get(v, "thanks_file", str, VoiceConfig.thanks_file, errs, "voice", "a path"),
        prompt_file=_get(v, "prompt_file", str, None, errs, "voice", "a path"),
        follow_up_file=_get(v, "follow_up_file", str, None, errs, "voice", "a path"),
    )
    cfg = UnitConfig(
        device_id=device_id,
        mode=mode,
        scale=scale,
        cooldown_s=float(cooldown),
        debounce_ms=_get(unit, "debounce_ms", int, 40, errs, "unit", "milliseconds"),
        arm_window_s=float(window),
        session_timeout_s=float(
            _get(unit, "session_timeout_s", num, 14400.0, errs, "unit", "seconds")
        ),
        badge_hold_ms=_get(unit, "badge_hold_ms", int, 1500, errs, "unit", "milliseconds"),
        outbox_path=path,
        outbox_max_events=max_events,
        firmware=_get(unit, "firmware", str, "0.1.0", errs, "unit", "a version string"),
        mqtt=mqtt_cfg,
        pins=pin_cfg,
        badge_reader=serial("badge_reader"),
        queue_serial=serial("queue_serial"),
        voice=voice,
        kiosk=kiosk,
    )
    if errs.items:
        raise ConfigError("configuration problems:\n  " + "\n  ".join(errs.items))
    return cfg


def load_config(path: str | Path) -> UnitConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file — provision the unit (gnahat-provision unit add)"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}) — fix the syntax") from None
    return parse_config(data)

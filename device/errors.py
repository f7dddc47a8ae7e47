"""The unit's exceptions; each also inherits the builtin it resembles."""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every unit error."""


class ConfigError(DeviceError, ValueError):
    """The unit's TOML configuration is missing or wrong; the message names key and fix."""


class OutboxFull(DeviceError, OSError):
    """The outbox reached its limit: new presses are refused, old ones are kept."""


class BadgeFrameError(DeviceError, ValueError):
    """A badge reader frame failed its checksum or framing."""

"""Acks (the collector's durable keep, by seq ranges) and commands to a unit."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from device.protocol.common import (
    MAX_EVENT_BYTES,
    PROTOCOL_VERSION,
    TOKEN_RE,
    ErrorCode,
    ProtocolError,
    _dumps,
    _load_json,
    _require,
    _str,
)

# --------------------------------------------------------------------------- ack


SeqRange = tuple[int, int]


def ranges_from_seqs(seqs: Iterable[int]) -> list[SeqRange]:
    """Collapse sequence numbers into sorted inclusive ranges: 1,2,3,5 → [(1,3),(5,5)]."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return [(a, b) for a, b in out]


@dataclass(frozen=True, slots=True)
class Ack:
    """Seq ranges of one stream that the collector has durably kept."""

    stream: str
    ranges: tuple[SeqRange, ...]

    def covers(self, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.ranges)

    def seqs(self) -> Iterable[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)


def encode_ack(ack: Ack) -> bytes:
    return _dumps({"stream": ack.stream, "ranges": [list(r) for r in ack.ranges]})


def decode_ack(payload: bytes) -> Ack:
    obj = _load_json(payload, limit=64 * 1024)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "an ack is a JSON object")
    stream = _str(obj, "stream", pattern=TOKEN_RE)
    raw_ranges = _require(obj, "ranges")
    if not isinstance(raw_ranges, list):
        raise ProtocolError(ErrorCode.WRONG_TYPE, "must be an array", field="ranges")
    ranges: list[SeqRange] = []
    for item in raw_ranges:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
        ):
            raise ProtocolError(ErrorCode.WRONG_TYPE, "each range is [from, to]", field="ranges")
        lo, hi = item
        if lo < 1 or hi < lo:
            raise ProtocolError(ErrorCode.BAD_SEQ, f"bad range [{lo}, {hi}]", field="ranges")
        ranges.append((lo, hi))
    return Ack(stream, tuple(ranges))


class Command(enum.StrEnum):
    IDENTIFY = "identify"
    RELOAD_CONFIG = "reload_config"


def encode_cmd(command: Command, **args: Any) -> bytes:
    return _dumps({"v": PROTOCOL_VERSION, "cmd": Command(command).value, **args})


def decode_cmd(payload: bytes) -> tuple[Command, dict[str, Any]]:
    obj = _load_json(payload, limit=MAX_EVENT_BYTES)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_OBJECT, "a command is a JSON object")
    name = _str(obj, "cmd")
    try:
        command = Command(name)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_VALUE, f"unknown command {name!r}", field="cmd") from None
    return command, {k: v for k, v in obj.items() if k not in ("v", "cmd")}

"""Failover round a list of brokers: who is tried next, and when the back-off may grow."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from device.endpoints import Failover, parse_endpoint

A, B, C = ("a", 1883), ("b", 1883), ("c", 1884)
LOST = SimpleNamespace(is_failure=True)
NORMAL = SimpleNamespace(is_failure=False)


def make() -> tuple[Failover, list[tuple[str, int]], list[str]]:
    armed: list[tuple[str, int]] = []
    quick: list[str] = []
    f = Failover([A, B, C], lambda h, p: armed.append((h, p)), quick=lambda: quick.append("q"))
    f.start()
    return f, armed, quick


def test_each_lost_or_failed_connection_moves_to_the_next_broker_round_the_list() -> None:
    f, armed, _ = make()
    f.lost(None, None, None, LOST, None)
    f.failed(None, None)
    f.failed(None, None)
    assert armed == [A, B, C, A] and f.current == A and f.switches == 3


def test_a_disconnect_we_asked_for_stays() -> None:
    f, armed, _ = make()
    f.lost(None, None, None, NORMAL, None)
    assert armed == [A] and f.current == A


def test_untried_brokers_come_quickly_then_the_back_off_grows_until_one_answers() -> None:
    f, _, quick = make()
    f.lost(None, None, None, LOST, None)  # to B: not tried since the last good connection
    f.failed(None, None)  # to C: nor that one
    assert quick == ["q", "q"]
    f.failed(None, None)  # back to A: every broker failed once; paho's back-off grows
    f.failed(None, None)
    assert quick == ["q", "q"]
    f.connected()
    f.lost(None, None, None, LOST, None)
    assert quick == ["q", "q", "q"]


def test_one_broker_is_retried_by_paho_alone() -> None:
    armed: list[tuple[str, int]] = []
    f = Failover([A], lambda h, p: armed.append((h, p)))
    f.start()
    f.failed(None, None)
    f.lost(None, None, None, LOST, None)
    assert armed == [A] and f.switches == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a", ("a", 1883)), ("a:8883", ("a", 8883)), ("[::1]:1884", ("::1", 1884))],
)
def test_endpoints_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text, 1883) == expected


def test_no_broker_is_refused() -> None:
    with pytest.raises(ValueError, match="no broker endpoint"):
        Failover([], lambda h, p: None)

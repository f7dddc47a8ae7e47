"""Wire-contract encode/decode throughput."""

from __future__ import annotations

import time

from bench.common import Results
from device import protocol as p


def run(results: Results) -> None:
    events = [
        p.Event(
            type=p.EventType.RATING,
            device="am-er-avan-d01",
            stream="s1",
            seq=i,
            at="2026-11-24T10:00:00+04:00",
            clock_synced=True,
            boot="b",
            mono_ms=i,
            sent_mono_ms=i,
            score=1 + i % 4,
            scale=4,
            staff="0F00A1B2C3",
        )
        for i in range(1, 257)
    ]
    payload = p.encode_batch(events)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        p.decode_events(payload, topic_device="am-er-avan-d01")
    elapsed = time.perf_counter() - start
    results.add("protocol.decode_events_per_s", rounds * len(events) / elapsed, "events/s")

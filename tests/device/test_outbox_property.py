"""Property: over any interleaving of presses, acks, lost messages, disconnects and power
cuts, no acknowledged press is lost and no seq is ever reused."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from device import protocol as p
from device.outbox import Outbox

DEV = "am-er-avan-d01"


class UnitAndCollector(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="gnahat-prop-"))
        self.outbox = Outbox(self.dir / "outbox.db").open()
        self.stream = self.outbox.stream
        self.acknowledged: set[int] = set()  # presses shown "thank you" to a visitor
        self.in_network: list[int] = []  # published, not yet delivered to the collector
        self.stored: set[int] = set()  # collector's (device, stream, seq) rows
        self.pending_acks: list[int] = []  # acks on their way back
        self.max_seq = 0

    def teardown(self) -> None:
        self.outbox.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(score=st.integers(1, 4))
    def press(self, score: int) -> None:
        ev = self.outbox.append(
            lambda seq: p.Event(
                type=p.EventType.RATING,
                device=DEV,
                stream=self.stream,
                seq=seq,
                at="2026-11-24T10:00:00+04:00",
                clock_synced=True,
                boot="b",
                mono_ms=1,
                score=score,
                scale=4,
            ),
            mono_ms=1,
        )
        assert ev.seq > self.max_seq  # never reused, even after acks
        self.max_seq = ev.seq
        self.acknowledged.add(ev.seq)

    @rule(n=st.integers(1, 20))
    def publish(self, n: int) -> None:
        self.in_network.extend(seq for seq, _ in self.outbox.pending(limit=n))

    @precondition(lambda self: self.in_network)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.in_network) - 1))
        seq = self.in_network.pop(i)  # out of order, possibly duplicated
        self.stored.add(seq)  # dedup by the unique key
        self.pending_acks.append(seq)

    @precondition(lambda self: self.in_network)
    @rule()
    def lose_message(self) -> None:
        self.in_network.pop(0)  # broker crash before persisting

    @precondition(lambda self: self.pending_acks)
    @rule(data=st.data())
    def ack_arrives(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(1, len(self.pending_acks)))
        seqs, self.pending_acks = self.pending_acks[:k], self.pending_acks[k:]
        self.outbox.ack(p.ranges_from_seqs(seqs))

    @precondition(lambda self: self.pending_acks)
    @rule()
    def ack_lost(self) -> None:
        self.pending_acks.pop(0)

    @rule()
    def disconnect(self) -> None:
        self.in_network.clear()
        self.pending_acks.clear()

    @rule()
    def power_cut_and_restart(self) -> None:
        self.outbox.close()
        self.outbox = Outbox(self.dir / "outbox.db").open()
        assert self.outbox.stream == self.stream
        self.in_network.clear()

    @invariant()
    def nothing_acknowledged_is_lost(self) -> None:
        queued = {seq for seq, _ in self.outbox.pending(limit=1_000_000)}
        assert self.acknowledged <= queued | self.stored
        assert queued <= self.acknowledged
        assert self.outbox.last_seq == self.max_seq

    def final_drain(self) -> None:
        while True:
            rows = self.outbox.pending(limit=1000)
            if not rows:
                break
            seqs = [s for s, _ in rows]
            self.stored.update(seqs)
            self.outbox.ack(p.ranges_from_seqs(seqs))
        assert self.stored == self.acknowledged


class _Checked(UnitAndCollector):
    def teardown(self) -> None:
        self.final_drain()
        super().teardown()


TestOutboxInterleavings = _Checked.TestCase
TestOutboxInterleavings.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)

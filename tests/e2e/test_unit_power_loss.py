"""A unit process killed with SIGKILL mid-drain loses no acknowledged press, stores none twice."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from collector.models import Event
from simulator.broker import MosquittoBroker
from simulator.units import UnitProcess, unit_config
from tests.e2e.conftest import CollectorHandle

DEV = "am-lo-vanadzor-d02"


def test_sigkill_mid_drain_then_restart(
    broker: MosquittoBroker, collector: CollectorHandle, tmp_path: Path
) -> None:
    cfg = unit_config(
        tmp_path / "unit.toml",
        device_id=DEV,
        broker_host=broker.host,
        broker_port=broker.port,
        outbox=tmp_path / "outbox.db",
        ack_timeout_s=2,
    )
    unit = UnitProcess(cfg).start()
    acknowledged: set[int] = set()
    # Collector down: presses pile up in the unit's outbox.
    for i in range(300):
        seq = unit.press(1 + i % 4)
        assert seq is not None
        acknowledged.add(seq)
    assert int(unit.status()["depth"]) == 300
    ingest = collector.start()
    assert ingest.wait_for_messages(1)  # draining has begun
    unit.kill()  # power cut, mid-drain
    unit = UnitProcess(cfg).start()
    for i in range(50):
        seq = unit.press(1 + i % 4)
        assert seq is not None
        acknowledged.add(seq)
    assert unit.drain(60)
    unit.stop()
    ingest.wait_idle()
    with collector.sessions() as s:
        stored = [
            (st, q)
            for st, q in s.execute(select(Event.stream, Event.seq).where(Event.device == DEV))
        ]
        assert len(stored) == len(set(stored))  # exactly once
        assert {q for _, q in stored} == acknowledged == set(range(1, 351))
        assert s.scalar(select(func.count(func.distinct(Event.stream)))) == 1

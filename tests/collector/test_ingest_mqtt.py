"""Ingest against a real Mosquitto: crafted good and bad streams, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import DailyAggregate, DeviceState, Event, Quarantine
from collector.registry import import_registry
from device import protocol as p
from simulator.broker import MosquittoBroker
from tests.collector.helpers import DEV, event, replace
from tests.mqtt_helpers import Recorder, publisher

RETIRED = "am-sh-gyumri1-d04"
LATE = "am-sh-gyumri1-d05"  # assigned only from 2027


@pytest.fixture(params=["process", "thread"])
def ingest(
    request: pytest.FixtureRequest,
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
) -> Iterator[Ingest]:
    with sessions() as s, s.begin():
        import_registry(
            s,
            {
                "devices": f"device,kind,scale,retired_at\n{RETIRED},buttons,4,2026-06-01\n",
                "assignments": (
                    "device,centre,desk,valid_from,valid_to\n"
                    f"{LATE},SH-GYUMRI1,05,2026-01-01,2026-02-01\n"
                    f"{LATE},SH-GYUMRI1,05,2027-01-01,\n"
                ),
            },
        )
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-test",
        ingest_batch_ms=20,
        ingest_receiver=request.param,
    )
    ing = Ingest(settings, Store(sessions), Metrics())
    ing.start()
    assert ing.wait_until_subscribed()
    yield ing
    ing.stop()


def topic(device: str = DEV, kind: str = "event") -> str:
    return f"gnahat/v1/dev/{device}/{kind}"


GOOD = {k: v for k, v in event(1).to_dict().items()}


def bad(**changes: object) -> bytes:
    obj = {**GOOD, "seq": 900, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


# (topic, payload, expected quarantine reason, acked key or None)
BAD_MESSAGES: list[tuple[str, bytes, str, tuple[str, str, int] | None]] = [
    (topic(), b"\xff\xfe\x00", "not_utf8", None),
    (topic(), b"{not json", "not_json", None),
    (topic(), b"[]", "batch_empty", None),
    (topic(), b"[" + b",".join([bad()] * 257) + b"]", "batch_too_long", None),
    (topic(), bad(pad="x" * 3000), "oversize", None),
    (topic(), b"42", "not_object", None),
    (topic(), bad(seq=901, boot=...), "missing_field", (DEV, "s1", 901)),
    (topic(), bad(seq="902"), "wrong_type", None),
    (topic(), bad(seq=0), "bad_seq", None),
    (topic(), bad(seq=903, score=9), "score_out_of_range", (DEV, "s1", 903)),
    (topic(), bad(seq=904, scale=10), "bad_scale", (DEV, "s1", 904)),
    (topic(), bad(seq=905, type="complaint"), "unknown_type", (DEV, "s1", 905)),
    (topic(), bad(seq=906, v=2), "unsupported_version", (DEV, "s1", 906)),
    (topic(), bad(seq=907, at="2026-11-24 10:00"), "bad_timestamp", (DEV, "s1", 907)),
    (topic(), bad(seq=908, stream="no/slash"), "bad_value", None),
    (topic("am-sh-gyumri1-d02"), bad(seq=909), "device_mismatch", None),
    (
        topic("am-xx-ghost-d01"),
        bad(seq=910, device="am-xx-ghost-d01"),
        "unknown_device",
        ("am-xx-ghost-d01", "s1", 910),
    ),
    (topic(RETIRED), bad(seq=911, device=RETIRED), "retired_device", (RETIRED, "s1", 911)),
    (topic(LATE), bad(seq=912, device=LATE), "unassigned_device", (LATE, "s1", 912)),
    (topic(), bad(seq=913, device="BAD ID"), "bad_device_id", None),
    ("gnahat/v1/dev/UPPER/event", bad(seq=914), "bad_topic", None),
    (topic(kind="status"), b'{"v":1,"state":"sleeping"}', "bad_value", None),
    (topic(kind="health"), b'{"v":1,"device":"am-sh-gyumri1-d03"}', "missing_field", None),
    (
        topic(kind="health"),
        json.dumps(
            {
                "v": 1,
                "device": "am-sh-gyumri1-d09",
                "at": "2026-11-24T10:00:00+04:00",
                "queue_depth": 0,
                "uptime_s": 1,
                "firmware": "x",
                "clock_synced": True,
            }
        ).encode(),
        "device_mismatch",
        None,
    ),
]


def test_crafted_streams_give_exact_rows_quarantine_acks_and_metrics(
    broker: MosquittoBroker, ingest: Ingest, sessions: sessionmaker[Session]
) -> None:
    assert len(BAD_MESSAGES) >= 20
    acks = Recorder(broker, ["gnahat/v1/dev/+/ack"])
    pub = publisher(broker)
    # Good stream: seqs 1..30 with duplicates, reordering and a batch; seq 31 missing
    # then 32 (a gap); a second stream after a re-imaged card.
    evs = {i: event(i, score=1 + i % 4) for i in range(1, 33) if i != 31}
    order = [3, 1, 2, 2, 5, 4, 1]
    payloads = [p.encode_event(evs[i]) for i in order]
    payloads.append(p.encode_batch([evs[i] for i in range(6, 21)]))
    payloads.append(p.encode_batch([evs[i] for i in range(15, 31)] + [evs[32]]))  # overlap 15..20
    payloads.append(p.encode_event(replace(event(1, stream="s2"), staff="BADGE-UNKNOWN")))
    mixed = json.dumps(
        [GOOD | {"stream": "s3", "seq": 1}, GOOD | {"stream": "s3", "seq": 2, "score": 7}]
    ).encode()
    for payload in payloads:
        pub.publish(topic(), payload, qos=1)
    pub.publish(topic(), mixed, qos=1)
    for t, payload, _reason, _key in BAD_MESSAGES:
        pub.publish(t, payload, qos=1)
    status = p.encode_status(p.Presence.ONLINE, firmware="0.1.0")
    pub.publish(topic(kind="status"), status, qos=1, retain=False)
    total = len(payloads) + 1 + len(BAD_MESSAGES) + 1
    assert ingest.wait_for_messages(total)

    with sessions() as s:
        keys = {tuple(r) for r in s.execute(select(Event.device, Event.stream, Event.seq))}
        assert keys == {(DEV, "s1", i) for i in evs} | {(DEV, "s2", 1), (DEV, "s3", 1)}
        unknown_badge = s.scalars(select(Event).where(Event.stream == "s2")).one()
        assert unknown_badge.employee_id is None and unknown_badge.staff == "BADGE-UNKNOWN"
        q = {(e.reason, e.topic) for e in s.scalars(select(Quarantine))}
        expected_q = {(r, t) for t, _, r, _ in BAD_MESSAGES} | {("score_out_of_range", topic())}
        assert q == expected_q
        assert all(e.raw for e in s.scalars(select(Quarantine)))
        agg_n = s.scalar(select(func.sum(DailyAggregate.n)))
        assert agg_n == len(keys)
        state = s.get(DeviceState, DEV)
        assert state is not None and state.online and state.firmware == "0.1.0"

    expected_acks: dict[tuple[str, str], set[int]] = {}
    for d, st, seq in (
        {(DEV, "s1", i) for i in evs}
        | {(DEV, "s2", 1), (DEV, "s3", 1), (DEV, "s3", 2)}
        | {k for *_, k in BAD_MESSAGES if k is not None}
    ):
        expected_acks.setdefault((d, st), set()).add(seq)

    def acked(msgs: list[tuple[str, bytes]]) -> dict[tuple[str, str], set[int]]:
        out: dict[tuple[str, str], set[int]] = {}
        for t, payload in msgs:
            device, _ = p.parse_topic(t)
            a = p.decode_ack(payload)
            out.setdefault((device, a.stream), set()).update(a.seqs())
        return out

    assert acks.wait_for(lambda m: acked(m) == expected_acks), acked(acks.messages)
    reg = ingest.metrics.registry
    value = reg.get_sample_value
    n_good_copies = len(order) + 15 + 17 + 1 + 2
    assert value("gnahat_events_stored_total") == len(keys)
    assert value("gnahat_events_duplicate_total") == n_good_copies - len(keys) - 1
    quarantined = {
        r: value("gnahat_events_quarantined_total", {"reason": r})
        for r in {r for _, _, r, _ in BAD_MESSAGES}
    }
    assert sum(quarantined.values()) == len(BAD_MESSAGES) + 1
    assert quarantined["unknown_device"] == 1
    assert value("gnahat_ingest_batch_seconds_count") == ingest.batches
    acks.close()
    pub.loop_stop()


def test_collector_down_broker_queues_and_nothing_is_lost(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-restart",
        ingest_batch_ms=10,
    )
    first = make_ingest(settings, Store(sessions))
    first.start()
    assert first.wait_until_subscribed()
    first.stop()  # persistent session: the broker now queues for us
    pub = publisher(broker)
    for i in range(1, 51):
        pub.publish(topic(), p.encode_event(event(i)), qos=1).wait_for_publish(5)
    broker.restart()  # and keeps the queue across its own restart
    second = make_ingest(settings, Store(sessions))
    second.start()
    assert second.wait_for_messages(50)
    second.stop()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 50
    pub.loop_stop()


def test_failed_commit_is_retried_and_acked_only_after(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    mocker: object,
    make_ingest: Callable[..., Ingest],
) -> None:
    from sqlalchemy.exc import OperationalError

    store = Store(sessions)
    real = store.process
    calls = {"n": 0}

    def flaky(batch: list[object]) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(batch)  # type: ignore[arg-type]

    store.process = flaky  # type: ignore[method-assign]
    acks = Recorder(broker, ["gnahat/v1/dev/+/ack"], client_id="rec2")
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-flaky",
        ingest_batch_ms=10,
    )
    ing = make_ingest(settings, store)
    ing._commit_retry_delay = 0.0  # type: ignore[attr-defined]
    ing.start()
    assert ing.wait_until_subscribed()
    pub = publisher(broker)
    pub.publish(topic(), p.encode_event(event(1)), qos=1)
    assert ing.wait_for_messages(1)
    assert calls["n"] == 2
    assert ing.metrics.registry.get_sample_value("gnahat_ingest_db_errors_total") == 1
    assert acks.wait_for(lambda m: len(m) == 1)
    ing.stop()
    acks.close()
    pub.loop_stop()


def test_poison_message_is_quarantined_not_fatal(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    store = Store(sessions)
    real = store.event_row

    def explode(ev: p.Event, *a: object, **k: object) -> object:
        if ev.seq == 2:
            raise RuntimeError("bug")
        return real(ev, *a, **k)  # type: ignore[arg-type]

    store.event_row = explode  # type: ignore[method-assign]
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-poison",
        ingest_batch_ms=50,
    )
    ing = make_ingest(settings, store)
    ing.start()
    assert ing.wait_until_subscribed()
    pub = publisher(broker)
    for i in (1, 2, 3):
        pub.publish(topic(), p.encode_event(event(i)), qos=1)
    assert ing.wait_for_messages(3)
    ing.stop()
    with sessions() as s:
        assert set(s.scalars(select(Event.seq))) == {1, 3}
        assert s.scalars(select(Quarantine.reason)).all() == ["internal_error"]
    pub.loop_stop()


def test_a_dead_receiver_process_is_replaced_and_nothing_is_lost(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    import os
    import signal as sig

    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-respawn",
        ingest_batch_ms=10,
    )
    ing = make_ingest(settings, Store(sessions))
    ing.start()
    assert ing.wait_until_subscribed()
    pub = publisher(broker)
    for i in range(1, 11):
        pub.publish(topic(), p.encode_event(event(i)), qos=1).wait_for_publish(5)
    assert ing.wait_for_messages(10)
    assert ing._receiver is not None and ing._receiver.pid is not None
    ing.subscribed.clear()
    os.kill(ing._receiver.pid, sig.SIGKILL)  # the child dies
    for i in range(11, 21):  # the broker queues these for the persistent session
        pub.publish(topic(), p.encode_event(event(i)), qos=1).wait_for_publish(5)
    assert ing.wait_until_subscribed(30)  # a new receiver is up
    assert ing.wait_for_messages(20)
    assert ing.metrics.registry.get_sample_value("gnahat_receiver_restarts_total") == 1
    ing.stop()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 20
    pub.loop_stop()


def test_a_process_that_exits_without_stopping_ingest_does_not_hang(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Exiting with the receiver child still running (a crashed test, a bug in a caller)
    ends the child instead of waiting on it for ever."""
    script = tmp_path / "leave_running.py"
    script.write_text(
        "from collector.config import Settings\n"
        "from collector.db import migrate, make_engine, session_factory\n"
        "from collector.intake.ingest import Ingest\n"
        "from collector.metrics import Metrics\n"
        "from collector.intake.store import Store\n"
        "if __name__ == '__main__':\n"
        f"    url = 'sqlite:///{tmp_path}/left.db'\n"
        "    migrate(url)\n"
        f"    s = Settings(database_url=url, mqtt_url={broker.url!r}, mqtt_client_id='left')\n"
        "    ing = Ingest(s, Store(session_factory(make_engine(url))), Metrics())\n"
        "    ing.start()\n"
        "    assert ing.wait_until_subscribed(20)\n"
        "    print('subscribed', ing._receiver.pid, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,  # a hang is the failure this test exists to catch
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split()[1])
    assert "stopping it" in proc.stderr
    status = Path(f"/proc/{pid}/status")  # the child is gone too (or only a zombie)
    assert not status.exists() or "State:\tZ" in status.read_text()


class _AckChecker(Recorder):
    """Records acks and, the moment each arrives, reads from the database (on a
    connection of its own) which of the acked seqs are stored."""

    def __init__(self, broker: MosquittoBroker, sessions: sessionmaker[Session]) -> None:
        self.found: list[tuple[set[int], set[int]]] = []  # (acked, stored at that moment)
        self._sessions = sessions
        super().__init__(broker, [topic(kind="ack")], client_id="rec-idle")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        acked = set(p.decode_ack(bytes(msg.payload)).seqs())  # type: ignore[attr-defined]
        with self._sessions() as s:
            stored = set(
                s.scalars(select(Event.seq).where(Event.device == DEV, Event.seq.in_(acked)))
            )
        with self._cond:
            self.found.append((acked, stored))
        super()._on_message(client, userdata, msg)  # type: ignore[arg-type]


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_an_idle_writer_commits_each_press_alone_and_acks_it_only_once_stored(
    receiver: str,
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
) -> None:
    """Group commit, the default: with nothing else arriving a press is committed in a
    batch of its own (no window to wait out), and its ack leaves only after the commit:
    whoever reads the database when the ack arrives finds the press there."""
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-idle",
        ingest_receiver=receiver,  # type: ignore[arg-type]
    )
    assert settings.ingest_batch_ms == 0  # the documented default is what is tested
    acks = _AckChecker(broker, sessions)
    ing = Ingest(settings, Store(sessions), Metrics())
    ing.start()
    pub = publisher(broker)
    try:
        assert ing.wait_until_subscribed()
        for seq in (1, 2, 3):  # one at a time: each waits for the one before
            pub.publish(topic(), p.encode_event(event(seq)), qos=1)
            assert acks.wait_for(lambda m, n=seq: len(m) >= n)
        assert ing.wait_for_messages(3)  # counted just after the acks leave
        assert ing.batches == 3
        assert [a for a, _ in acks.found] == [{1}, {2}, {3}]
        assert all(acked <= stored for acked, stored in acks.found), acks.found
    finally:
        ing.stop()
        acks.close()
        pub.loop_stop()

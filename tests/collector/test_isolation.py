"""One bad message, one bad element, a refusing database: the fault stays with its source.

Real Mosquitto, real SQLite and PostgreSQL. A database refusal is made real with a
trigger that refuses one seq (what a value the contract lets through but a column
cannot hold does), not with a mock.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.models import DeviceState, Event, Quarantine
from device import protocol as p
from simulator.broker import MosquittoBroker
from tests.collector.helpers import DEV, event
from tests.mqtt_helpers import Recorder, publisher

OTHER = "am-sh-gyumri1-d02"
REFUSED_SEQ = 666


def topic(device: str = DEV, kind: str = "event") -> str:
    return f"gnahat/v1/dev/{device}/{kind}"


def refuse_seq_in_database(sessions: sessionmaker[Session], database_url: str) -> None:
    """Make the database itself refuse one row, as it refuses a value no column can hold."""
    with sessions() as s, s.begin():
        if database_url.startswith("sqlite"):
            s.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON events "
                    f"WHEN NEW.seq = {REFUSED_SEQ} BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            s.execute(
                text(f"ALTER TABLE events ADD CONSTRAINT refuse_one CHECK (seq <> {REFUSED_SEQ})")
            )


def started(
    make_ingest: Callable[..., Ingest],
    store: Store,
    broker: MosquittoBroker,
    database_url: str,
    client_id: str,
    **settings: object,
) -> Ingest:
    """An ingest on ``store`` with its own client id, subscribed and taking messages."""
    config = Settings(
        database_url=database_url, mqtt_url=broker.url, mqtt_client_id=client_id, **settings
    )
    ing = make_ingest(config, store)
    ing.start()
    assert ing.wait_until_subscribed()
    return ing


def acked(msgs: list[tuple[str, bytes]]) -> set[tuple[str, str, int]]:
    out = set()
    for t, payload in msgs:
        device, _ = p.parse_topic(t)
        a = p.decode_ack(payload)
        out |= {(device, a.stream, s) for s in a.seqs()}
    return out


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_a_row_the_database_refuses_is_quarantined_alone_and_the_rest_flows(
    receiver: str,
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    refuse_seq_in_database(sessions, database_url)
    ing = started(
        make_ingest,
        Store(sessions),
        broker,
        database_url,
        "collector-isolation",
        ingest_batch_ms=200,  # the poison and the good messages share one batch
        ingest_receiver=receiver,
    )
    acks = Recorder(broker, ["gnahat/v1/dev/+/ack"], client_id="rec-iso")
    pub = publisher(broker)
    # One unit's backlog of 5 with the refused element in the middle; another unit's
    # events in the same batch; then more from both after the poison.
    batch = [event(i) for i in (1, 2)] + [event(REFUSED_SEQ)] + [event(i) for i in (3, 4)]
    pub.publish(topic(), p.encode_batch(batch), qos=1)
    for i in (1, 2, 3):
        pub.publish(topic(OTHER), p.encode_event(event(i, device=OTHER)), qos=1)
    assert ing.wait_for_messages(4)
    pub.publish(topic(), p.encode_event(event(5)), qos=1)
    pub.publish(topic(OTHER), p.encode_event(event(4, device=OTHER)), qos=1)
    assert ing.wait_for_messages(6)

    with sessions() as s:
        keys = {tuple(r) for r in s.execute(select(Event.device, Event.stream, Event.seq))}
        q = s.scalars(select(Quarantine)).all()
    assert keys == {(DEV, "s1", i) for i in range(1, 6)} | {(OTHER, "s1", i) for i in range(1, 5)}
    assert [(e.reason, e.device, e.seq) for e in q] == [("refused_by_database", DEV, REFUSED_SEQ)]
    assert "refused" in q[0].detail.lower() or "check" in q[0].detail.lower()
    assert p.decode_event(q[0].raw).seq == REFUSED_SEQ  # its own bytes, re-processable
    want = keys | {(DEV, "s1", REFUSED_SEQ)}
    assert acks.wait_for(lambda m: acked(m) >= want), acked(acks.messages)
    value = ing.metrics.registry.get_sample_value
    assert value("gnahat_ingest_isolated_total", {"reason": "refused_by_database"}) == 1
    assert value("gnahat_ingest_db_errors_total") in (None, 0)
    acks.close()
    pub.loop_stop()


# Values the contract now refuses at decode; each once stopped all ingest on PostgreSQL.
def _ev(seq: int, **changes: object) -> dict[str, object]:
    return {**event(seq).to_dict(), **changes}


POISON_EVENTS: list[tuple[str, dict[str, object], str]] = [
    (
        "at with 13 fractional digits and more",
        _ev(101, at="2026-11-24T10:00:00.1234567890123456+04:00"),
        "bad_timestamp",
    ),
    ("mono_ms beyond 2^63", _ev(102, mono_ms=2**63), "bad_value"),
    ("NaN in an unknown field", _ev(103, note=float("nan")), "bad_value"),
    ("Infinity in an unknown field", _ev(104, note=float("inf")), "bad_value"),
    ("NUL in an unknown field", _ev(105, note="a\x00b"), "bad_value"),
    ("year 1 with an offset", _ev(106, at="0001-01-01T00:00:00+04:00"), "bad_timestamp"),
    ("year 9999 with an offset", _ev(107, at="9999-12-31T23:59:59-04:00"), "bad_timestamp"),
    ("huge send delay", _ev(108, sent_mono_ms=2**53 - 1, mono_ms=0), "stored"),
]


def test_values_the_database_cannot_hold_are_refused_per_element_and_acked(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    ing = started(
        make_ingest,
        Store(sessions),
        broker,
        database_url,
        "collector-poison-values",
        ingest_batch_ms=100,
    )
    acks = Recorder(broker, ["gnahat/v1/dev/+/ack"], client_id="rec-poison")
    pub = publisher(broker)
    # A status the broker retains, and health figures, that PostgreSQL once refused.
    pub.publish(topic(kind="status"), b'{"v":1,"state":"online","firmware":"1.0\\u0000"}', qos=1)
    health = {
        "v": 1,
        "device": DEV,
        "at": "2026-11-24T10:00:00+04:00",
        "queue_depth": 0,
        "uptime_s": 5,
        "firmware": "1.0",
        "clock_synced": True,
    }
    pub.publish(
        topic(kind="health"), json.dumps({**health, "cpu_temp_c": float("nan")}).encode(), qos=1
    )
    # One backlog: good, every poison, good.
    items = [_ev(1)] + [obj for _, obj, _ in POISON_EVENTS] + [_ev(2)]
    pub.publish(topic(), json.dumps(items).encode(), qos=1)
    pub.publish(topic(OTHER), p.encode_event(event(1, device=OTHER)), qos=1)
    assert ing.wait_for_messages(4)

    with sessions() as s:
        seqs = set(s.scalars(select(Event.seq).where(Event.device == DEV)))
        q = {
            e.seq: e.reason
            for e in s.scalars(select(Quarantine).where(Quarantine.seq.is_not(None)))
        }
        keyless = {
            (e.topic, e.reason)
            for e in s.scalars(select(Quarantine).where(Quarantine.seq.is_(None)))
        }
        other = s.scalars(select(Event).where(Event.device == OTHER)).one()
        state = s.get(DeviceState, DEV)
    stored = {obj["seq"] for _, obj, r in POISON_EVENTS if r == "stored"}
    assert seqs == {1, 2} | stored
    assert q == {obj["seq"]: r for _, obj, r in POISON_EVENTS if r != "stored"}
    assert keyless == {(topic(kind="status"), "bad_value"), (topic(kind="health"), "bad_value")}
    assert other.seq == 1
    assert state is not None and state.firmware is None
    every = {(DEV, "s1", int(obj["seq"])) for obj in items} | {(OTHER, "s1", 1)}  # type: ignore[call-overload]
    assert acks.wait_for(lambda m: acked(m) >= every), every - acked(acks.messages)
    acks.close()
    pub.loop_stop()


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_a_stalled_database_leaves_the_backlog_in_the_broker(
    receiver: str,
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    window = 40
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-backpressure",
        ingest_batch_ms=5,
        ingest_receiver=receiver,
        mqtt_receive_maximum=window,
    )
    ing = make_ingest(settings, Store(sessions))
    ing._commit_retry_delay = 0.05  # type: ignore[attr-defined]
    ing.start()
    assert ing.wait_until_subscribed()
    pub = publisher(broker, client_id="pub-bp")
    blocker = sessions()
    # Stall the database for real: another session holds a lock ingest must wait for.
    if database_url.startswith("sqlite"):
        blocker.execute(text("BEGIN EXCLUSIVE"))
    else:
        blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
    total = 2000
    infos = [
        pub.publish(topic(), p.encode_event(event(i, at=event(1).at_datetime)), qos=1)
        for i in range(1, total + 1)
    ]
    for info in infos:
        info.wait_for_publish(30)  # the broker has every message
    assert ing.wait_taken(window)
    # The broker sends no more than the window until something is committed: whatever
    # arrived so far, the collector holds at most `window` messages.
    assert ing.messages_committed == 0
    assert ing.taken <= window, ing.taken
    assert ing.queue_depth <= window
    blocker.rollback()
    blocker.close()
    assert ing.wait_for_messages(total, timeout=120)
    assert ing.taken == total  # each delivered once: nothing lost, nothing re-sent
    with sessions() as s:
        n = s.scalar(select(text("count(*)")).select_from(Event))
    assert n == total
    pub.loop_stop()


def test_a_late_commit_of_an_older_message_never_moves_unit_state_back(
    sessions: sessionmaker[Session],
) -> None:
    from datetime import timedelta

    from tests.collector.helpers import T0, msg

    store = Store(sessions)
    online = p.encode_status(p.Presence.ONLINE, firmware="2.0")
    offline = p.encode_status(p.Presence.OFFLINE)
    store.process([msg(online, kind="status", at=T0 + timedelta(minutes=10))])
    # Another worker commits, after it, what it received earlier.
    store.process([msg(offline, kind="status", at=T0 + timedelta(minutes=5))])
    with sessions() as s:
        state = s.get(DeviceState, DEV)
        assert state is not None
        assert state.online and state.firmware == "2.0"
        assert state.last_seen == T0 + timedelta(minutes=10)
        assert state.status_at == T0 + timedelta(minutes=10)
    store.process([msg(offline, kind="status", at=T0 + timedelta(minutes=11))])
    with sessions() as s:
        state = s.get(DeviceState, DEV)
        assert state is not None and not state.online
        assert state.last_seen == T0 + timedelta(minutes=11)


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_a_retained_event_is_not_replayed_at_every_new_session(
    receiver: str,
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        mqtt_client_id="collector-retained",
        ingest_batch_ms=5,
        ingest_receiver=receiver,
    )
    first = make_ingest(settings, Store(sessions))
    first.start()
    assert first.wait_until_subscribed()
    pub = publisher(broker, client_id="pub-retain")
    pub.publish(topic(), p.encode_event(event(1)), qos=1, retain=True).wait_for_publish(5)
    assert first.wait_for_messages(1)  # the live copy (retain flag cleared) is stored
    first.stop()
    for _ in range(2):  # every new subscription gets the retained copy again
        again = make_ingest(settings, Store(sessions))
        again.start()
        assert again.wait_until_subscribed()
        pub.publish(topic(), p.encode_event(event(2)), qos=1).wait_for_publish(5)
        assert again.wait_for_messages(1)
        value = again.metrics.registry.get_sample_value
        assert value("gnahat_retained_events_ignored_total") == 1
        assert value("gnahat_events_duplicate_total") in (None, 0, 1)  # event 2's re-runs
        again.stop()
    with sessions() as s:
        assert sorted(s.scalars(select(Event.seq))) == [1, 2]
    pub.loop_stop()


def test_stopping_while_the_database_is_down_does_not_spin(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    """The database refuses every commit (a link error, as when it is down); on stop
    the writer gives up at once instead of retrying as fast as it can."""
    from sqlalchemy.exc import OperationalError

    store = Store(sessions)
    calls = {"n": 0}

    def down(batch: list[object]) -> object:
        calls["n"] += 1
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    store.process = down  # type: ignore[method-assign]
    ing = started(make_ingest, store, broker, database_url, "collector-down")
    acks = Recorder(broker, ["gnahat/v1/dev/+/ack"], client_id="rec-down")
    pub = publisher(broker, client_id="pub-down")
    for i in range(1, 21):
        pub.publish(topic(), p.encode_event(event(i)), qos=1)
    assert ing.commit_failed.wait(10)
    before = calls["n"]
    ing.stop()
    assert calls["n"] - before <= 2  # one last try at most, then the broker keeps it all
    assert acks.messages == []  # nothing acknowledged: the units and the broker hold it
    acks.close()
    pub.loop_stop()


def test_a_receiver_that_keeps_dying_is_given_up_on_with_a_reason(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    import os
    import signal as sig
    import threading

    from collector.intake.ingest import RECEIVER_MAX_QUICK_DEATHS
    from collector.metrics import Metrics

    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, mqtt_client_id="collector-dying"
    )
    gave_up = threading.Event()
    ing = make_ingest(settings, Store(sessions), Metrics())
    ing.on_fatal = lambda why: gave_up.set()
    ing.receiver_backoff_s = 0.01
    ing.start()
    for death in range(1, RECEIVER_MAX_QUICK_DEATHS + 1):
        assert ing.wait_until_subscribed(30)
        assert ing._receiver is not None and ing._receiver.pid is not None
        ing.subscribed.clear()
        os.kill(ing._receiver.pid, sig.SIGKILL)
        if death < RECEIVER_MAX_QUICK_DEATHS:
            assert ing.wait_until_subscribed(30)  # started again, after a back-off
    assert gave_up.wait(30)
    assert ing.fatal is not None and "died 5 times" in ing.fatal
    restarts = ing.metrics.registry.get_sample_value("gnahat_receiver_restarts_total")
    assert restarts == RECEIVER_MAX_QUICK_DEATHS - 1


def test_a_mistyped_ca_path_is_named_before_anything_starts(
    tmp_path: object, database_url: str, sessions: sessionmaker[Session]
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        "PATH": "/usr/bin:/bin",
        "GNAHAT_DATABASE_URL": database_url,
        "GNAHAT_MQTT_URL": "mqtts://127.0.0.1:1",
        "GNAHAT_MQTT_CA_FILE": "/etc/gnahat/ca.pmm",
    }
    for command in ("ingest", "serve"):
        r = subprocess.run(
            [sys.executable, "-m", "collector.cli", command],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, r.stderr
        assert "GNAHAT_MQTT_CA_FILE: /etc/gnahat/ca.pmm does not exist" in r.stderr


def test_a_flood_of_junk_from_one_unit_keeps_the_database_bounded_and_others_flowing(
    broker: MosquittoBroker,
    database_url: str,
    sessions: sessionmaker[Session],
    make_ingest: Callable[..., Ingest],
) -> None:
    import os

    from collector.intake.store import QUARANTINE_RAW_MAX

    ing = started(make_ingest, Store(sessions), broker, database_url, "collector-flood")
    pub = publisher(broker, client_id="pub-flood")
    junk_n, size = 60, 400_000  # under the broker's packet limit, far over an event
    infos = []
    for i in range(junk_n):
        infos.append(pub.publish(topic(), os.urandom(size), qos=1))  # not even UTF-8
        if i % 2 == 0:
            infos.append(
                pub.publish(topic(OTHER), p.encode_event(event(i // 2 + 1, device=OTHER)), qos=1)
            )
    for info in infos:
        info.wait_for_publish(30)
    assert ing.wait_for_messages(len(infos), timeout=120)
    with sessions() as s:
        others = s.scalars(select(Event.seq).where(Event.device == OTHER)).all()
        q = s.scalars(select(Quarantine)).all()
    assert sorted(others) == list(range(1, junk_n // 2 + 1))  # the other unit flowed on
    assert len(q) == junk_n
    assert all(len(e.raw) <= QUARANTINE_RAW_MAX and f"payload {size} bytes" in e.detail for e in q)
    stored_bytes = sum(len(e.raw) for e in q)
    assert stored_bytes <= junk_n * QUARANTINE_RAW_MAX  # not junk_n * size
    cut = ing.metrics.registry.get_sample_value("gnahat_quarantine_bytes_cut_total")
    assert cut == junk_n * (size - QUARANTINE_RAW_MAX)
    pub.loop_stop()

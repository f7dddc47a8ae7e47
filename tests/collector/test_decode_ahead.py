"""The receiver process decodes event payloads ahead of the writer: what it hands over
is exactly what the writer would have decoded, and anything wrong is left to the
writer (which quarantines it with the reason)."""

from __future__ import annotations

import pickle

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.receiver import decode_ahead
from collector.intake.store import Received, Store
from collector.models import Event, Quarantine
from device import protocol as p
from tests.collector.helpers import DEV, T0, event, msg

TOPIC = p.event_topic(DEV)


def factors(seq: int, rating_seq: int) -> p.Event:
    return event(
        seq,
        type=p.EventType.FACTORS,
        score=None,
        rating_seq=rating_seq,
        answers={"procedure": 3, "solved": "partly", "conduct": 4, "competence": 4},
    )


def rebuilt(ahead: object) -> p.DecodedPayload:
    # as the parent gets it: through a pipe (pickled), then made events again
    is_batch, events = pickle.loads(pickle.dumps(ahead))
    return p.DecodedPayload([p.event_from_tuple(e) for e in events], [], is_batch)


def test_what_is_decoded_ahead_equals_what_the_writer_decodes() -> None:
    payloads = [
        p.encode_event(event(1, staff="B-17", service="PENSION")),
        p.encode_event(factors(3, 2)),
        p.encode_batch([event(4), event(5, score=1), factors(6, 5)]),
    ]
    for payload in payloads:
        ahead = decode_ahead(TOPIC, payload)
        assert ahead is not None
        assert rebuilt(ahead) == p.decode_payload(payload, topic_device=DEV)


def test_anything_wrong_is_left_to_the_writer() -> None:
    good = p.encode_event(event(1))
    assert decode_ahead(TOPIC, b"\xff\xfe") is None  # not UTF-8
    assert decode_ahead(TOPIC, b"{") is None  # not JSON
    assert decode_ahead(p.event_topic("am-er-avan-d01"), good) is None  # device mismatch
    assert decode_ahead("gnahat/v1/dev/x y/event", good) is None  # no topic of ours
    assert decode_ahead(p.status_topic(DEV), b'{"presence":"online"}') is None  # not an event
    bad_element = b"[" + good + b',{"v":1,"type":"rating"}]'
    assert decode_ahead(TOPIC, bad_element) is None  # one bad element: all to the writer


def test_the_store_keeps_the_same_rows_and_quarantines_the_same(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    good = [event(1, staff="B-17"), event(2, score=1)]
    bad = b"[" + p.encode_event(event(3)) + b',{"v":1,"type":"rating"}]'
    messages = []
    for e in good:
        m = msg(e)
        ahead = decode_ahead(m.topic, m.payload)
        messages.append(Received(m.topic, m.payload, T0, decoded=rebuilt(ahead) if ahead else None))
    messages.append(Received(TOPIC, bad, T0, decoded=decode_ahead(TOPIC, bad)))  # None
    result = store.process(messages)
    assert result.stored == 3  # both good ones and the good element of the bad batch
    with sessions() as s:
        rows = s.execute(select(Event.seq, Event.score, Event.staff).order_by(Event.seq)).all()
        assert [tuple(r) for r in rows] == [(1, 4, "B-17"), (2, 1, None), (3, 4, None)]
        assert s.scalars(select(Quarantine.reason)).all() == [p.ErrorCode.MISSING_FIELD.value]

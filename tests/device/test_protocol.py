"""The v1 wire contract: round trips, refusals, topics, and the doc's examples."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device import protocol as p
from device.protocol import ErrorCode
from device.protocol import ErrorCode as E

ROOT = Path(__file__).resolve().parents[2]

device_ids = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z")
tokens = st.from_regex(r"\A[A-Za-z0-9_-]{1,24}\Z")
badges = st.from_regex(r"\A[A-Za-z0-9_-]{1,16}\Z")
offsets = st.sampled_from(["+04:00", "Z", "+00:00", "-03:30"])
timestamps = st.builds(
    lambda d, o: d.isoformat() + o,
    st.datetimes(
        min_value=__import__("datetime").datetime(2020, 1, 1),
        max_value=__import__("datetime").datetime(2040, 1, 1),
    ),
    offsets,
)
extras = st.dictionaries(
    st.text(alphabet="abcdefghijklmnop_", min_size=3, max_size=8).filter(
        lambda k: k not in p._KNOWN_FIELDS
    ),
    st.one_of(
        st.integers(-1000, 1000),
        st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=10),
        st.booleans(),
        st.none(),
    ),
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn, device: str | None = None) -> p.Event:
    etype = draw(st.sampled_from(list(p.EventType)))
    kwargs: dict[str, Any] = {}
    if etype is p.EventType.RATING:
        scale = draw(st.sampled_from([3, 4, 5]))
        kwargs.update(
            scale=scale,
            score=draw(st.integers(1, scale)),
            staff=draw(st.one_of(st.none(), badges)),
        )
    elif etype is p.EventType.STAFF_LOGIN:
        kwargs["staff"] = draw(badges)
    elif etype is p.EventType.FACTORS:
        scale = draw(st.sampled_from([3, 4, 5]))
        answers = {
            name: draw(st.integers(1, scale)) for name in p.SCALED_FACTORS if draw(st.booleans())
        }
        if draw(st.booleans()) or not answers:
            answers["solved"] = draw(st.sampled_from(p.SOLVED_ANSWERS))
        kwargs.update(
            scale=scale,
            staff=draw(st.one_of(st.none(), badges)),
            answers={k: answers[k] for k in p.FACTORS if k in answers},
        )
    else:
        kwargs["staff"] = draw(st.one_of(st.none(), badges))
    if etype in (p.EventType.RATING, p.EventType.FACTORS):
        kwargs["service"] = draw(st.one_of(st.none(), st.from_regex(p.SERVICE_RE, fullmatch=True)))
        kwargs["channel"] = draw(st.one_of(st.none(), st.sampled_from(p.CHANNELS)))
    seq = draw(st.integers(2 if etype is p.EventType.FACTORS else 1, p.MAX_SEQ))
    if etype is p.EventType.FACTORS:
        kwargs["rating_seq"] = draw(st.integers(1, seq - 1))
    return p.Event(
        type=etype,
        device=device or draw(device_ids),
        stream=draw(tokens),
        seq=seq,
        at=draw(timestamps),
        clock_synced=draw(st.booleans()),
        boot=draw(tokens),
        mono_ms=draw(st.integers(0, 2**40)),
        sent_mono_ms=draw(st.one_of(st.none(), st.integers(0, 2**40))),
        sent_boot=draw(st.one_of(st.none(), tokens)),
        extra=draw(extras),
        **kwargs,
    )


@given(events())
def test_event_round_trip(event: p.Event) -> None:
    data = p.encode_event(event)
    assert p.decode_event(data, topic_device=event.device) == event
    decoded = p.decode_payload(data, topic_device=event.device)
    assert decoded.events == [event] and not decoded.errors and not decoded.is_batch


@given(device_ids.flatmap(lambda d: st.lists(events(device=d), min_size=1, max_size=20)))
def test_batch_round_trip(batch: list[p.Event]) -> None:
    data = p.encode_batch(batch)
    assert p.decode_events(data, topic_device=batch[0].device) == batch


@given(st.lists(st.integers(1, 500), max_size=60))
def test_ack_ranges_round_trip(seqs: list[int]) -> None:
    ack = p.Ack("s1", tuple(p.ranges_from_seqs(seqs)))
    back = p.decode_ack(p.encode_ack(ack))
    assert back == ack
    assert sorted(back.seqs()) == sorted(set(seqs))
    assert all(back.covers(s) for s in seqs)


def test_armenian_round_trips_as_utf8() -> None:
    event = p.Event(
        type=p.EventType.RATING,
        device="am-sh-gyumri1-d03",
        stream="s",
        seq=1,
        at="2026-11-24T10:00:00+04:00",
        clock_synced=True,
        boot="b",
        mono_ms=1,
        score=4,
        scale=4,
        extra={"note": "Շնորհակալություն։ և"},
    )
    data = p.encode_event(event)
    assert "Շնորհակալություն։ և".encode() in data  # raw UTF-8, not \u escapes
    assert p.decode_event(data).extra["note"] == "Շնորհակալություն։ և"


GOOD: dict[str, Any] = {
    "v": 1,
    "type": "rating",
    "device": "am-er-avan-d01",
    "stream": "s1",
    "seq": 5,
    "at": "2026-11-24T10:00:00+04:00",
    "clock_synced": True,
    "boot": "b1",
    "mono_ms": 100,
    "sent_mono_ms": 150,
    "score": 3,
    "scale": 4,
    "staff": None,
}


def with_(**changes: Any) -> bytes:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def without(name: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD.items() if k != name}).encode()


MALFORMED: list[tuple[str, bytes, ErrorCode, str | None]] = [
    ("not utf-8", b'{"v":1,"x":"\xff\xfe"}', E.NOT_UTF8, None),
    ("latin-1 text", '{"note": "caf\u00e9"}'.encode("latin-1"), E.NOT_UTF8, None),
    ("not json", b"score=4", E.NOT_JSON, None),
    ("truncated json", with_()[:-5], E.NOT_JSON, None),
    ("empty payload", b"", E.NOT_JSON, None),
    ("json string", b'"rating"', E.NOT_OBJECT, None),
    ("json number", b"4", E.NOT_OBJECT, None),
    ("json null", b"null", E.NOT_OBJECT, None),
    ("array of numbers", b"[1,2]", E.NOT_OBJECT, None),
    ("empty batch", b"[]", E.BATCH_EMPTY, None),
    ("batch too long", b"[" + b",".join([with_()] * 257) + b"]", E.BATCH_TOO_LONG, None),
    ("oversize event", with_(pad="x" * 3000), E.OVERSIZE, None),
    ("oversize payload", b" " * (p.MAX_PAYLOAD_BYTES + 1), E.OVERSIZE, None),
    ("unknown version", with_(v=2), E.UNSUPPORTED_VERSION, "v"),
    ("version as string", with_(v="1"), E.WRONG_TYPE, "v"),
    ("missing v", without("v"), E.MISSING_FIELD, "v"),
    ("unknown type", with_(type="complaint"), E.UNKNOWN_TYPE, "type"),
    ("missing device", without("device"), E.MISSING_FIELD, "device"),
    ("device upper case", with_(device="AM-ER-AVAN"), E.BAD_DEVICE_ID, "device"),
    ("device is number", with_(device=7), E.WRONG_TYPE, "device"),
    ("missing stream", without("stream"), E.MISSING_FIELD, "stream"),
    ("stream with slash", with_(stream="a/b"), E.BAD_VALUE, "stream"),
    ("seq zero", with_(seq=0), E.BAD_SEQ, "seq"),
    ("seq negative", with_(seq=-3), E.BAD_SEQ, "seq"),
    ("seq huge", with_(seq=2**60), E.BAD_SEQ, "seq"),
    ("seq float", with_(seq=5.0), E.WRONG_TYPE, "seq"),
    ("seq string", with_(seq="5"), E.WRONG_TYPE, "seq"),
    ("seq bool", with_(seq=True), E.WRONG_TYPE, "seq"),
    ("missing at", without("at"), E.MISSING_FIELD, "at"),
    ("at not iso", with_(at="yesterday"), E.BAD_TIMESTAMP, "at"),
    ("at naive", with_(at="2026-11-24T10:00:00"), E.BAD_TIMESTAMP, "at"),
    ("clock_synced string", with_(clock_synced="yes"), E.WRONG_TYPE, "clock_synced"),
    ("clock_synced int", with_(clock_synced=1), E.WRONG_TYPE, "clock_synced"),
    ("missing boot", without("boot"), E.MISSING_FIELD, "boot"),
    ("mono negative", with_(mono_ms=-1), E.BAD_VALUE, "mono_ms"),
    ("sent_mono string", with_(sent_mono_ms="x"), E.WRONG_TYPE, "sent_mono_ms"),
    ("sent_boot number", with_(sent_boot=3), E.WRONG_TYPE, "sent_boot"),
    ("score zero", with_(score=0), E.SCORE_OUT_OF_RANGE, "score"),
    ("score above scale", with_(score=5, scale=4), E.SCORE_OUT_OF_RANGE, "score"),
    ("score missing", without("score"), E.MISSING_FIELD, "score"),
    ("score float", with_(score=2.5), E.WRONG_TYPE, "score"),
    ("scale seven", with_(scale=7), E.BAD_SCALE, "scale"),
    ("missing staff", without("staff"), E.MISSING_FIELD, "staff"),
    ("staff number", with_(staff=1234), E.WRONG_TYPE, "staff"),
    ("staff with space", with_(staff="A B"), E.BAD_VALUE, "staff"),
    ("login without badge", with_(type="staff_login", staff=None), E.BAD_VALUE, "staff"),
]


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_payload_gives_precise_error(
    payload: bytes, code: ErrorCode, field: str | None
) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_events(payload, topic_device="am-er-avan-d01")
    assert info.value.code is code, info.value
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert info.value.message


def test_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 25


def test_device_mismatch_between_topic_and_payload() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_events(with_(), topic_device="am-er-avan-d02")
    assert info.value.code is E.DEVICE_MISMATCH and info.value.field == "device"


def test_batch_judges_each_element_and_keeps_raw_bytes() -> None:
    good = json.loads(with_(seq=1))
    bad = json.loads(with_(seq=2, score=9))
    worse = "just text"
    decoded = p.decode_payload(json.dumps([good, bad, worse]).encode(), topic_device=GOOD["device"])
    assert [e.seq for e in decoded.events] == [1]
    assert [(x.index, x.error.code, x.key) for x in decoded.errors] == [
        (1, E.SCORE_OUT_OF_RANGE, ("am-er-avan-d01", "s1", 2)),
        (2, E.NOT_OBJECT, None),
    ]
    assert json.loads(decoded.errors[0].raw) == bad


def test_unknown_fields_are_kept() -> None:
    event = p.decode_event(with_(kiosk_lang="hy", layout={"rows": 2}))
    assert event.extra == {"kiosk_lang": "hy", "layout": {"rows": 2}}
    assert json.loads(p.encode_event(event))["layout"] == {"rows": 2}


@pytest.mark.parametrize("kind", list(p.TopicKind))
def test_topics_round_trip(kind: p.TopicKind) -> None:
    t = p.topic("am-sh-gyumri1-d03", kind)
    assert t == f"gnahat/v1/dev/am-sh-gyumri1-d03/{kind.value}"
    assert p.parse_topic(t) == ("am-sh-gyumri1-d03", kind)


@pytest.mark.parametrize(
    "bad",
    [
        "gnahat/v2/dev/a/event",
        "gnahat/v1/dev/a/b/event",
        "gnahat/v1/dev/A/event",
        "gnahat/v1/dev/a/bogus",
        "gnahat/v1/dev//event",
        "other",
    ],
)
def test_bad_topics(bad: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_topic(bad)
    assert info.value.code is E.BAD_TOPIC


def test_shared_subscription() -> None:
    assert p.subscription("event") == "gnahat/v1/dev/+/event"
    assert p.subscription("event", share_group="gnahat") == "$share/gnahat/gnahat/v1/dev/+/event"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ranges":[[1,2]]}',
        b'{"stream":"s","ranges":[[2,1]]}',
        b'{"stream":"s","ranges":[[0,1]]}',
        b'{"stream":"s","ranges":[1]}',
        b'{"stream":"s","ranges":"1-2"}',
        b"[]",
    ],
)
def test_bad_acks(payload: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_ack(payload)


def test_health_round_trip_and_mismatch() -> None:
    h = p.Health(
        device="am-er-avan-d01",
        at="2026-11-24T10:00:00+04:00",
        queue_depth=3,
        oldest_unacked_s=1.5,
        uptime_s=10.0,
        firmware="0.1.0",
        clock_synced=False,
        extra={"wifi_rssi": -60},
    )
    assert p.decode_health(p.encode_health(h), topic_device="am-er-avan-d01") == h
    with pytest.raises(p.ProtocolError) as info:
        p.decode_health(p.encode_health(h), topic_device="am-er-avan-d02")
    assert info.value.code is E.DEVICE_MISMATCH


def test_status_and_cmd_round_trip() -> None:
    assert p.decode_status(p.encode_status(p.Presence.ONLINE, boot="b")) == (
        p.Presence.ONLINE,
        {"boot": "b"},
    )
    assert p.decode_cmd(p.encode_cmd(p.Command.IDENTIFY, seconds=5)) == (
        p.Command.IDENTIFY,
        {"seconds": 5},
    )
    with pytest.raises(p.ProtocolError):
        p.decode_cmd(b'{"cmd":"self_destruct"}')


# ---------------------------------------------------------------- the doc cannot drift

DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```json example=(\S+)\n(.*?)```", DOC, re.S)


def test_doc_has_examples_of_every_kind() -> None:
    kinds = {k.split(":")[0] for k, _ in EXAMPLES}
    assert kinds >= {"event", "batch", "ack", "status", "health", "cmd", "invalid"}


@pytest.mark.parametrize(("kind", "body"), EXAMPLES, ids=[k for k, _ in EXAMPLES])
def test_doc_example_parses(kind: str, body: str) -> None:
    data = body.encode()
    if kind == "event":
        event = p.decode_event(json.dumps(json.loads(body), ensure_ascii=False).encode())
        assert p.decode_event(p.encode_event(event)) == event
    elif kind == "batch":
        assert len(p.decode_events(data)) >= 2
    elif kind == "ack":
        p.decode_ack(data)
    elif kind == "status":
        p.decode_status(data)
    elif kind == "health":
        p.decode_health(data)
    elif kind == "cmd":
        p.decode_cmd(data)
    elif kind.startswith("invalid:"):
        with pytest.raises(p.ProtocolError) as info:
            p.decode_events(data)
        assert info.value.code.value == kind.split(":", 1)[1]
    else:
        pytest.fail(f"unknown example kind {kind}")


def test_doc_topic_table_matches_code() -> None:
    rows = re.findall(r"^\| `gnahat/v1/dev/\{d\}/(\w+)` \| (.+?) \| (\d) \| (yes|no) \|", DOC, re.M)
    table = {p.TopicKind(k): (d, int(q), r == "yes") for k, d, q, r in rows}
    assert table == p.TOPIC_TABLE


def test_doc_lists_every_error_code() -> None:
    for code in p.ErrorCode:
        assert f"| `{code.value}` |" in DOC, code


def test_protocol_imports_with_standard_library_only() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import device.protocol;"
        "import sys as s; bad=[m for m in s.modules if m.split('.')[0] not in s.stdlib_module_names"
        " and m.split('.')[0] not in ('device', '__main__')]; assert not bad, bad"
    )
    # -I: isolated (no user site, no env); -S: no site-packages at all.
    subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)], check=True)


_BASE = {
    "v": 1,
    "type": "rating",
    "device": "am-sh-gyumri1-d03",
    "stream": "s1",
    "seq": 1,
    "at": "2026-11-30T10:00:00+04:00",
    "clock_synced": True,
    "boot": "b1",
    "mono_ms": 5,
    "score": 3,
    "scale": 5,
    "staff": None,
}


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"note": float("nan")}, p.ErrorCode.BAD_VALUE, "note"),
        ({"note": float("-inf")}, p.ErrorCode.BAD_VALUE, "note"),
        ({"note": {"deep": [1, "x\x00"]}}, p.ErrorCode.BAD_VALUE, "note.deep[1]"),
        ({"note": "\ud800"}, p.ErrorCode.BAD_VALUE, "note"),
        ({"note": 2**64}, p.ErrorCode.BAD_VALUE, "note"),
        ({"mono_ms": 2**53}, p.ErrorCode.BAD_VALUE, "mono_ms"),
        ({"sent_mono_ms": 2**53}, p.ErrorCode.BAD_VALUE, "sent_mono_ms"),
        ({"at": "2026-11-30T10:00:00." + "1" * 20 + "+04:00"}, p.ErrorCode.BAD_TIMESTAMP, "at"),
        ({"at": "0001-01-01T00:00:00+04:00"}, p.ErrorCode.BAD_TIMESTAMP, "at"),
        ({"at": "9999-12-31T23:59:59-04:00"}, p.ErrorCode.BAD_TIMESTAMP, "at"),
    ],
)
def test_values_no_database_column_holds_are_refused(
    change: dict[str, object], code: p.ErrorCode, field: str
) -> None:
    payload = json.dumps({**_BASE, **change}).encode()
    with pytest.raises(p.ProtocolError) as err:
        p.decode_event(payload)
    assert err.value.code is code and err.value.field == field
    # In a batch only that element is refused, with its key to acknowledge it.
    batch = json.dumps([{**_BASE, "seq": 1}, {**_BASE, "seq": 2, **change}]).encode()
    decoded = p.decode_payload(batch)
    assert [e.seq for e in decoded.events] == [1]
    assert decoded.errors[0].key == ("am-sh-gyumri1-d03", "s1", 2)


def test_the_unit_cannot_encode_what_the_collector_refuses() -> None:
    event = p.decode_event(json.dumps(_BASE).encode())
    with pytest.raises(p.ProtocolError):
        p.encode_event(dataclasses.replace(event, extra={"note": float("nan")}))


def test_health_and_status_refuse_non_finite_figures_and_nul() -> None:
    health = {
        "v": 1,
        "device": "am-sh-gyumri1-d03",
        "at": "2026-11-30T10:00:00+04:00",
        "queue_depth": 0,
        "uptime_s": 1.0,
        "firmware": "1.0",
        "clock_synced": True,
    }
    for bad in ({"uptime_s": float("nan")}, {"cpu_temp_c": 1e400}, {"firmware": "1\x00"}):
        with pytest.raises(p.ProtocolError):
            p.decode_health(json.dumps({**health, **bad}).encode())
    with pytest.raises(p.ProtocolError):
        p.decode_status(b'{"v":1,"state":"online","firmware":"1.0\\u0000"}')

"""The feed's NDJSON, made by the database, is byte for byte what orjson makes of the
same rows (real SQLite and PostgreSQL): key order, nulls, booleans, UTF-8, and times in
UTC with microseconds only when there are any."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.store import Store
from collector.reading import feed
from tests.collector.helpers import T0, event, msg, replace


@pytest.mark.parametrize("employee", [True, False])
def test_the_database_writes_the_feed_as_orjson_would(
    store: Store, sessions: sessionmaker[Session], employee: bool
) -> None:
    us = timedelta(microseconds=1)
    events = [
        event(1, at=T0),  # whole seconds
        event(2, at=T0 + 123_456 * us),  # microseconds
        event(3, at=T0 + 500_000 * us, score=1),
        replace(
            event(4),
            at="1970-01-01T00:00:00.000001+00:00",
            clock_synced=False,
            boot="cold",
            sent_boot="cold2",
        ),
        event(5, device="am-sh-gyumri1-d02", stream="s2"),  # another desk
    ]
    results = [
        store.process([msg(e, device=e.device, at=T0 + timedelta(hours=1) + i * 7 * us)])
        for i, e in enumerate(events)
    ]
    assert [r.stored for r in results] == [1] * 5
    horizon = T0 + timedelta(days=2)
    with sessions() as s:
        want = feed.records(s, 0, horizon, 100, employee=employee)
        assert len(want) == 5
        named = {r["employee"] for r in want} - {None}
        assert bool(named) == employee  # the desks' staff, when the feed may name them
        expected = b"".join(orjson.dumps(r) + b"\n" for r in want)
        body, cursor = feed.ndjson(s, 0, horizon, 100, employee=employee)
        assert body == expected
        assert cursor == want[-1]["id"]
        # Paging: after the first row, two at a time, and nothing past the end.
        body, cursor = feed.ndjson(s, want[0]["id"], horizon, 2, employee=employee)
        assert (
            body
            == expected.split(b"\n", 1)[1].split(b"\n")[0]
            + b"\n"
            + expected.split(b"\n")[2]
            + b"\n"
        )
        assert cursor == want[2]["id"]
        assert feed.ndjson(s, want[-1]["id"], horizon, 10, employee=employee) == (
            b"",
            want[-1]["id"],
        )
        # The horizon holds back what came after it.
        early = want[0]["received_at"]
        body, _ = feed.ndjson(s, 0, early, 100, employee=employee)
        assert body == orjson.dumps(want[0]) + b"\n"

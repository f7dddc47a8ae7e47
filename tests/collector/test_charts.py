"""The hour x weekday picture: read from the hourly counts, equal to the presses' own
local weekday and hour, in a fixed zone and across a daylight-saving change."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.intake.store import Store
from collector.models import Centre, Event, Flag
from collector.reading.charts import hour_counts
from tests.collector.helpers import event, msg


@pytest.mark.parametrize("zone", ["Asia/Yerevan", "Europe/Berlin"])
def test_the_heatmap_counts_each_counted_press_at_its_local_weekday_and_hour(
    sessions: sessionmaker[Session], zone: str
) -> None:
    tz = ZoneInfo(zone)
    store = Store(sessions, timezone=zone)
    rng = random.Random(5)
    # Opening hours around Berlin's change back to winter time (2026-10-25, 03:00 local).
    presses = []
    for i in range(300):
        day = date(2026, 10, 12) + timedelta(days=rng.randrange(28))
        local = datetime(day.year, day.month, day.day, rng.randrange(8, 19), rng.randrange(60))
        at = local.replace(tzinfo=tz) - timedelta(minutes=i + 1)  # event() adds seq minutes
        presses.append(msg(event(i + 1, at=at, score=rng.randint(1, 4))))
    burst_at = datetime(2026, 10, 20, 10, 0, tzinfo=tz)
    presses += [msg(event(1000 + i, at=burst_at - timedelta(minutes=1000 + i))) for i in range(12)]
    store.process(presses)
    with sessions() as s:
        centre_id = s.scalars(select(Centre.id).where(Centre.code == "SH-GYUMRI1")).one()
        expected = [[0] * 24 for _ in range(7)]
        counted = 0
        for e in s.scalars(select(Event).where(Event.centre_id == centre_id)):
            if e.flags & Flag.BURST:
                continue  # left out of scores, so out of the picture
            local = e.pressed_at.astimezone(tz)
            expected[local.weekday()][local.hour] += 1
            counted += 1
        assert counted == 300
        grid = hour_counts(s, centre_id, date(2026, 10, 1), date(2026, 11, 30), tz)
        assert grid == expected
        # A period inside one offset takes the grouped path; it agrees too.
        inside = hour_counts(s, centre_id, date(2026, 10, 26), date(2026, 11, 30), tz)
        first_after = [[0] * 24 for _ in range(7)]
        for e in s.scalars(
            select(Event).where(Event.centre_id == centre_id, Event.day >= date(2026, 10, 26))
        ):
            if not e.flags & Flag.BURST:
                local = e.pressed_at.astimezone(tz)
                first_after[local.weekday()][local.hour] += 1
        assert inside == first_after and sum(map(sum, inside)) > 50

"""The analysts' aggregate series (JSON, CSV read with pandas, SDMX-CSV read with sdmx1)
and the open data package (validated with frictionless), over HTTP, on both databases."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import frictionless
import httpx
import pandas as pd
import pytest
import sdmx
from sdmx.model import common
from sdmx.model import v30 as sdmx_model
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, create_token
from collector.intake.store import Store
from collector.main import create_app
from collector.reading import series
from tests.collector.helpers import DEV, T0, event, msg, served

AVAN = "am-er-avan-d01"
WHEN = [T0]  # the store's clock: stamps changed_at


@pytest.fixture
def url(database_url: str, sessions: sessionmaker[Session]) -> Iterator[str]:
    app = create_app(Settings(database_url=database_url, feed_settle_s=0))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=3)
    with served(app) as base:
        yield base


@pytest.fixture
def analyst(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as s, s.begin():
        return {"Authorization": f"Bearer {create_token(s, name='a', role=Role.ANALYST)[1]}"}


def fill(sessions: sessionmaker[Session]) -> Store:
    """Gyumri on the 23rd (Monday of week 48 is the 23rd) and 24th, Avan on the 24th, and
    one Gyumri press on Sunday the 22nd (week 47)."""
    WHEN[0] = T0
    store = Store(sessions, clock=lambda: WHEN[0])
    store.process([msg(event(i, score=4, at=T0 - timedelta(days=1))) for i in range(1, 5)])
    store.process([msg(event(i, score=1, at=T0)) for i in range(5, 7)])
    store.process([msg(event(i, score=3, at=T0)) for i in range(7, 9)])
    store.process([msg(event(9, score=2, at=T0 - timedelta(days=2)))])
    store.process(
        [msg(event(i, score=4, device=AVAN, stream="a", at=T0), device=AVAN) for i in range(1, 4)]
    )
    return store


def get(url: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    params = {"start": "2026-11-01", "end": "2026-11-30", **params}
    r = httpx.get(url + "/api/v1/feeds/aggregates", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r


def test_days_weeks_and_months_by_centre_marz_service_and_country(
    url: str, analyst: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    fill(sessions)
    days = get(url, analyst).json()["rows"]
    gy24 = next(r for r in days if r["period"] == "2026-11-24" and r["group"] == "SH-GYUMRI1")
    assert (gy24["n"], gy24["n1"], gy24["n3"], gy24["n4"], gy24["n5"]) == (4, 2, 2, 0, None)
    assert gy24["csat"] == 0.5 and gy24["csat_low"] < 0.5 < gy24["csat_high"]
    weeks = {
        (r["period"], r["group"]): r["n"] for r in get(url, analyst, grain="week").json()["rows"]
    }
    assert weeks == {("2026-W47", "SH-GYUMRI1"): 1, ("2026-W48", "SH-GYUMRI1"): 8,
                     ("2026-W48", "ER-AVAN"): 3}  # fmt: skip
    marz = get(url, analyst, grain="month", by="marz").json()["rows"]
    assert {(r["period"], r["group"]): r["n"] for r in marz} == {
        ("2026-11", "AM-SH"): 9,
        ("2026-11", "AM-ER"): 3,
    }
    nation = get(url, analyst, grain="month", by="national").json()["rows"]
    assert [(r["group"], r["n"], r["n4"]) for r in nation] == [("AM", 12, 7)]
    by_service = get(url, analyst, grain="month", by="service").json()["rows"]
    assert sum(r["n"] for r in by_service) == 12
    # Only the days inside start..end count, even in a week that reaches past them.
    cut = get(url, analyst, grain="week", start="2026-11-24", end="2026-11-24").json()["rows"]
    assert sorted(r["n"] for r in cut) == [3, 4]


def test_updated_since_brings_back_whole_rows_touched_by_late_events(
    url: str, analyst: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    store = fill(sessions)
    first = get(url, analyst)
    assert (
        first.headers["X-Next-Updated-Since"]
        == (T0 + timedelta(days=3) - timedelta(minutes=10)).isoformat()
    )
    WHEN[0] = T0 + timedelta(days=5)  # a unit back after days, with a press of the 23rd
    store.process([msg(event(20, score=1, at=T0 - timedelta(days=1)))])
    since = (T0 + timedelta(days=4)).isoformat()
    rows = get(url, analyst, updated_since=since).json()["rows"]
    assert [(r["period"], r["group"], r["n"]) for r in rows] == [("2026-11-23", "SH-GYUMRI1", 5)]
    naive = get(url, analyst, updated_since=since.replace("+00:00", "")).json()["rows"]
    assert naive == rows  # without a zone: UTC
    later = (T0 + timedelta(days=6)).isoformat()
    assert get(url, analyst, updated_since=later).json()["rows"] == []


def test_csv_reads_with_pandas_and_sdmx_csv_with_an_sdmx_library(
    url: str, analyst: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    fill(sessions)
    frame = pd.read_csv(io.StringIO(get(url, analyst, format="csv").text))
    assert list(frame.columns) == list(series.COLUMNS)
    assert int(frame["n"].sum()) == 12 and frame["n5"].isna().all()
    gy = frame[(frame["group"] == "SH-GYUMRI1") & (frame["period"] == "2026-11-23")]
    assert int(gy["n4"].iloc[0]) == 4 and float(gy["csat"].iloc[0]) == 1.0
    r = get(url, analyst, format="sdmx-csv", grain="month", by="marz")
    assert r.headers["content-type"].startswith("application/vnd.sdmx.data+csv; version=2.0.0")
    agency, ident, version = series.DSD
    dsd = sdmx_model.DataStructureDefinition(
        id=ident, maintainer=common.Agency(id=agency), version=version
    )
    for dim in series.SDMX_DIMENSIONS:
        dsd.dimensions.getdefault(dim)
    dsd.measures.getdefault("OBS_VALUE")
    message = sdmx.read_sdmx(io.BytesIO(r.content), format="csv", structure=dsd)
    values = {
        (o.key["REF_AREA"].value, o.key["MEASURE"].value): float(o.value)
        for o in message.data[0].obs
    }
    assert values[("AM-SH", "N")] == 9 and values[("AM-ER", "N4")] == 3
    assert values[("AM-ER", "CSAT")] == 1.0 and ("AM-ER", "N5") not in values
    assert {o.key["TIME_PERIOD"].value for o in message.data[0].obs} == {"2026-11"}


def test_bad_parameters_are_refused(url: str, analyst: dict[str, str]) -> None:
    base = url + "/api/v1/feeds/aggregates"
    for params in (
        {"grain": "year"},
        {"by": "employee"},
        {"format": "xlsx"},
        {"updated_since": "yesterday"},
        {"updated_since": "0.5"},  # a number is not a time
        {"updated_since": "1999-12-31T00:00:00Z"},
        {"start": "2026-12-01", "end": "2026-11-01"},
    ):
        assert httpx.get(base, params=params, headers=analyst).status_code == 422, params
    assert httpx.get(base).status_code == 401


def test_the_open_data_package_validates_with_frictionless(
    url: str, sessions: sessionmaker[Session], database_url: str
) -> None:
    store = Store(sessions)
    now = datetime.now(UTC)
    store.process(
        [msg(event(i, score=1 + i % 4, at=now - timedelta(hours=3))) for i in range(1, 25)]
    )
    store.process(
        [msg(event(i, score=4, device=AVAN, stream="a", at=now - timedelta(hours=3)), device=AVAN)
         for i in range(1, 4)]
    )  # fmt: skip
    # The served app's clock is fixed in the past: this check uses one on the wall clock.
    app = create_app(Settings(database_url=database_url))
    with served(app) as live:
        package = httpx.get(live + "/api/v1/open/datapackage.json").json()
        assert package["resources"][0]["path"] == "centres.csv"
        report = frictionless.validate(live + "/api/v1/open/datapackage.json")
        assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
        rows = list(csv_rows(httpx.get(live + "/api/v1/open/centres.csv").text))
    assert {r["centre"] for r in rows} == {"SH-GYUMRI1", "ER-AVAN"}
    assert next(r for r in rows if r["centre"] == "ER-AVAN")["n"] == ""  # suppressed: 3 < 10
    # A schema that lies is caught: the same data against a stricter bound fails.
    strict = frictionless.Schema.from_descriptor(package["resources"][0]["schema"])
    strict.get_field("n").constraints["minimum"] = 1000
    resource = frictionless.Resource(
        data=[list(r.values()) for r in [dict(zip(rows[0], rows[0], strict=True)), *rows]],
        schema=strict,
    )
    assert not frictionless.validate(resource).valid
    _ = DEV


def csv_rows(text: str) -> Iterator[dict[str, str]]:
    import csv

    yield from csv.DictReader(io.StringIO(text))

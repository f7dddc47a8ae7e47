"""The fake M&E IS behaves like DHIS2's dataValueSets import: upsert, summaries, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from simulator.me_is import FakeMeIs, FakeMeIsServer

URL = "/api/dataValueSets?importStrategy=CREATE_AND_UPDATE&idScheme=code"


@pytest.fixture
def server() -> Iterator[FakeMeIsServer]:
    fake = FakeMeIs(org_units={"SH-GYUMRI1", "ER-AVAN"}, username="gnahat", password="pw")
    with FakeMeIsServer(fake) as s:
        yield s


def client(server: FakeMeIsServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=("gnahat", "pw"), timeout=10)


def body(value: int, org: str = "SH-GYUMRI1") -> dict[str, object]:
    return {
        "period": "20261124",
        "orgUnit": org,
        "dataValues": [
            {
                "dataElement": "GNAHAT_RATING_4",
                "categoryOptionCombo": "EMPLOYMENT",
                "value": str(value),
            },
            {"dataElement": "GNAHAT_RATING_1", "categoryOptionCombo": "EMPLOYMENT", "value": "1"},
        ],
    }


def test_upsert_replaces_rather_than_adds(server: FakeMeIsServer) -> None:
    with client(server) as c:
        r1 = c.post(URL, json=body(10), headers={"Idempotency-Key": "batch-1"})
        assert r1.json()["response"]["importCount"] == {
            "imported": 2,
            "updated": 0,
            "ignored": 0,
            "deleted": 0,
        }
        r2 = c.post(URL, json=body(12), headers={"Idempotency-Key": "batch-1"})
        assert r2.json()["response"]["importCount"]["updated"] == 2
        values = c.get("/api/dataValueSets", params={"orgUnit": "SH-GYUMRI1"}).json()
        assert {v["dataElement"]: v["value"] for v in values["dataValues"]} == {
            "GNAHAT_RATING_4": "12",
            "GNAHAT_RATING_1": "1",
        }
        keys = [r["idempotency_key"] for r in c.get("/_fake/requests").json()]
        assert keys == ["batch-1", "batch-1"]


def test_unknown_org_unit_is_a_conflict(server: FakeMeIsServer) -> None:
    with client(server) as c:
        r = c.post(URL, json=body(3, org="NOWHERE")).json()
        assert r["response"]["status"] == "WARNING"
        assert r["response"]["importCount"]["ignored"] == 2
        assert r["response"]["conflicts"][0]["object"] == "NOWHERE"


def test_injected_failures_throttling_and_auth(server: FakeMeIsServer) -> None:
    with client(server) as c:
        c.post("/_fake/faults", json={"fail": 1, "status": 503, "throttle": 1, "retry_after": 7})
        first = c.post(URL, json=body(1))
        assert first.status_code == 429 and first.headers["Retry-After"] == "7"
        assert c.post(URL, json=body(1)).status_code == 503
        assert c.post(URL, json=body(1)).status_code == 200
        assert c.post(URL, content=b"{bad").status_code == 400
    assert httpx.post(server.url + URL, json=body(1), auth=("gnahat", "no")).status_code == 401

"""The fake M&E IS answers as DHIS2 2.41 does (dhis2-core at tag 2.41.9; see its module):
counts, zeros, deletes, conflicts with codes, whole-set aborts, periods, auth, shapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from collector.outbound import mapping
from simulator.me_is import FakeMeIs
from simulator.me_is_access import Account
from simulator.me_is_server import FakeMeIsServer

URL = "/api/dataValueSets?importStrategy=CREATE_AND_UPDATE&idScheme=code"
TODAY = date(2026, 11, 25)
GROUP = "GnahatGrp01"  # the import account's user group, named in the mapping


@pytest.fixture
def server() -> Iterator[FakeMeIsServer]:
    m = mapping.derive([("SH-GYUMRI1", "Gyumri"), ("ER-AVAN", "Avan")], [("EMPLOYMENT", "Jobs")])
    m.options["expiry_days"] = "5"
    m.options["user_group"] = GROUP
    fake = FakeMeIs(username="gnahat", password="pw", today=lambda: TODAY)
    fake.tokens["d2pat_writer"] = Account({"F_DATAVALUE_ADD"}, groups={GROUP})
    fake.tokens["d2pat_reader"] = {"F_VIEW_DATA"}
    fake.load_metadata(mapping.metadata_package(m, org_units=True))
    with FakeMeIsServer(fake) as s:
        yield s


def client(server: FakeMeIsServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=("gnahat", "pw"), timeout=10)


def body(*values: tuple[str, str | None], org: str = "SH-GYUMRI1", pe: str = "20261124") -> Any:
    return {
        "dataSet": "GNAHAT_DAILY",
        "period": pe,
        "orgUnit": org,
        "dataValues": [
            {"dataElement": de, "categoryOptionCombo": "GNAHAT_SVC_EMPLOYMENT", "value": v}
            for de, v in values
        ],
    }


def counts(r: httpx.Response) -> dict[str, int]:
    return dict(r.json()["response"]["importCount"])


def test_an_unchanged_value_is_ignored_and_a_change_updated(server: FakeMeIsServer) -> None:
    with client(server) as c:
        first = c.post(URL, json=body(("GNAHAT_R4_4", "10"), ("GNAHAT_R4_1", "1")))
        assert first.status_code == 200 and first.json()["status"] == "OK"
        assert counts(first) == {"imported": 2, "updated": 0, "ignored": 0, "deleted": 0}
        again = c.post(URL, json=body(("GNAHAT_R4_4", "12"), ("GNAHAT_R4_1", "1")))
        # dataValueUpdateShouldBeIgnored: the same value again is ignored, not updated.
        assert counts(again) == {"imported": 0, "updated": 1, "ignored": 1, "deleted": 0}
        assert again.status_code == 200 and again.json()["response"]["conflicts"] == []
        read = c.get(
            "/api/dataValueSets",
            params={
                "dataSet": "GNAHAT_DAILY",
                "period": "20261124",
                "orgUnit": "SH-GYUMRI1",
                "idScheme": "code",
            },
        ).json()
        assert {v["dataElement"]: v["value"] for v in read["dataValues"]} == {
            "GNAHAT_R4_4": "12",
            "GNAHAT_R4_1": "1",
        }
        # A read-back without a data set, period or org unit is refused as DHIS2 does.
        bare = c.get("/api/dataValueSets", params={"orgUnit": "SH-GYUMRI1"})
        assert bare.status_code == 409 and bare.json()["errorCode"] == "E2001"


def test_zeros_follow_zero_is_significant_and_deleted_values_go(server: FakeMeIsServer) -> None:
    fake = server.fake
    element = next(o for o in fake.data_elements.values() if o.code == "GNAHAT_R4_2")
    with client(server) as c:
        sig = c.post(URL, json=body(("GNAHAT_R4_1", "0")))
        assert counts(sig)["imported"] == 1  # the package makes zeros significant
        element.attrs["zeroIsSignificant"] = False
        skipped = c.post(URL, json=body(("GNAHAT_R4_2", "0")))
        assert counts(skipped) == {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
        c.post(URL, json=body(("GNAHAT_R4_2", "3")))
        dropped = c.post(URL, json=body(("GNAHAT_R4_2", "0")))  # a zero over a value deletes it
        assert counts(dropped)["deleted"] == 1
        gone = body(("GNAHAT_R4_1", None))
        gone["dataValues"][0]["deleted"] = True
        assert counts(c.post(URL, json=gone))["deleted"] == 1
    assert fake.held() == {}
    with client(server) as c:
        element.attrs["valueType"] = "INTEGER_POSITIVE"
        refused = c.post(URL, json=body(("GNAHAT_R4_2", "0")))
        assert refused.status_code == 409
        assert refused.json()["response"]["conflicts"][0]["errorCode"] == "E7619"


def test_unknown_objects_are_coded_conflicts_and_outer_ones_abort(server: FakeMeIsServer) -> None:
    with client(server) as c:
        r = c.post(URL, json=body(("GNAHAT_R4_4", "3"), ("NOPE", "1")))
        assert r.status_code == 409 and r.json()["status"] == "WARNING"
        summary = r.json()["response"]
        assert summary["importCount"]["ignored"] == 1 and summary["importCount"]["imported"] == 1
        assert summary["conflicts"][0]["errorCode"] == "E7610"
        assert summary["conflicts"][0]["indexes"] == [1] and summary["rejectedIndexes"] == [1]
        aborted = c.post(URL, json=body(("GNAHAT_R4_4", "3"), org="NOWHERE"))
        assert aborted.status_code == 409 and aborted.json()["status"] == "ERROR"
        inner = aborted.json()["response"]
        assert inner["status"] == "ERROR" and inner["conflicts"][0]["errorCode"] == "E7603"
        assert inner["importCount"] == {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
        # Before API version 38 the bare summary comes with HTTP 200.
        old = c.post(
            "/api/37/dataValueSets?idScheme=code", json=body(("NOPE", "1"), org="SH-GYUMRI1")
        )
        assert old.status_code == 200 and old.json()["responseType"] == "ImportSummary"


def test_periods_open_and_lock_by_the_servers_clock(server: FakeMeIsServer) -> None:
    with client(server) as c:
        # openFuturePeriods 1: today (the server's) is open, tomorrow is not.
        assert c.post(URL, json=body(("GNAHAT_R4_1", "1"), pe="20261125")).status_code == 200
        ahead = c.post(URL, json=body(("GNAHAT_R4_1", "1"), pe="20261126")).json()
        assert ahead["response"]["conflicts"][0]["errorCode"] == "E7641"
        # expiryDays 5: the 20th is open until the 25th, the 19th is locked.
        assert c.post(URL, json=body(("GNAHAT_R4_1", "1"), pe="20261120")).status_code == 200
        old = c.post(URL, json=body(("GNAHAT_R4_1", "1"), pe="20261119")).json()
        assert old["response"]["conflicts"][0]["errorCode"] == "E7640"
        server.fake.approved.add(
            (next(iter(o.uid for o in server.fake.org_units.values() if o.code == "ER-AVAN")),
             "20261124")
        )  # fmt: skip
        approved = c.post(URL, json=body(("GNAHAT_R4_1", "1"), org="ER-AVAN")).json()
        assert approved["response"]["conflicts"][0]["errorCode"] == "E7642"


def test_uids_work_as_well_as_codes(server: FakeMeIsServer) -> None:
    m = mapping.derive([("SH-GYUMRI1", "Gyumri")], [("EMPLOYMENT", "Jobs")])
    assert m.data_set is not None
    payload = {
        "dataSet": m.data_set.uid,
        "period": "20261124",
        "orgUnit": m.org_units["SH-GYUMRI1"].uid,
        "dataValues": [
            {
                "dataElement": m.data_elements[(4, 2)].uid,
                "categoryOptionCombo": m.services["EMPLOYMENT"].uid,
                "value": "7",
            }
        ],
    }
    with client(server) as c:
        r = c.post("/api/dataValueSets?idScheme=uid", json=payload)
        assert counts(r)["imported"] == 1
        # A code where a UID is expected is unknown.
        assert c.post("/api/dataValueSets?idScheme=uid", json=body(("GNAHAT_R4_1", "1"))).json()[
            "response"
        ]["conflicts"][0]["errorCode"] in ("E7600", "E7603")
    assert server.fake.held() == {
        ("GNAHAT_R4_2", "20261124", "SH-GYUMRI1", "GNAHAT_SVC_EMPLOYMENT"): "7"
    }


def test_api_tokens_basic_auth_and_the_write_authority(server: FakeMeIsServer) -> None:
    payload = body(("GNAHAT_R4_1", "1"))
    writer = {"Authorization": "ApiToken d2pat_writer"}
    reader = {"Authorization": "ApiToken d2pat_reader"}
    assert httpx.post(server.url + URL, json=payload, headers=writer).status_code == 200
    denied = httpx.post(server.url + URL, json=payload, headers=reader)
    assert denied.status_code == 403 and denied.json()["message"] == "Access is denied"
    wrong = {"Authorization": "ApiToken d2pat_nobody"}
    assert httpx.post(server.url + URL, json=payload, headers=wrong).status_code == 401
    assert httpx.post(server.url + URL, json=payload, auth=("gnahat", "no")).status_code == 401


def test_injected_failures_and_throttling(server: FakeMeIsServer) -> None:
    with client(server) as c:
        c.post("/_fake/faults", json={"fail": 1, "status": 503, "throttle": 1, "retry_after": 7})
        first = c.post(URL, json=body(("GNAHAT_R4_1", "1")))
        assert first.status_code == 429 and first.headers["Retry-After"] == "7"
        assert c.post(URL, json=body(("GNAHAT_R4_1", "1"))).status_code == 503
        assert c.post(URL, json=body(("GNAHAT_R4_1", "1"))).status_code == 200
        assert c.post(URL, content=b"{bad").status_code == 400

"""The mapping file (errors by line and field), the metadata package made from it, and
`forward check` against the fake M&E IS (read-only calls), through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from collector.cli import main
from collector.db import make_engine, session_factory
from collector.outbound import mapping
from simulator.me_is import FakeMeIs
from simulator.me_is_server import FakeMeIsServer

GOOD = """kind,key,uid,code,name,value
option,id_scheme,,,,uid
option,zeros,,,,omit
data_set,,aBcDeFgHiJ1,MOLSA_RATINGS,Ratings,
data_element,R4_1,bBcDeFgHiJ1,,Level 1,
data_element,R4_2,bBcDeFgHiJ2,,Level 2,
service,EMPLOYMENT,cBcDeFgHiJ1,,Employment,
org_unit,SH-GYUMRI1,dBcDeFgHiJ1,,Gyumri centre,
"""


def test_a_ministry_mapping_with_uids_reads() -> None:
    m = mapping.parse(GOOD, "mapping.csv")
    assert m.id_scheme == "uid" and not m.zeros_significant
    assert m.ident(m.org_units["SH-GYUMRI1"]) == "dBcDeFgHiJ1"
    assert m.element(4, 2) is not None and m.element(5, 1) is None
    assert mapping.parse(mapping.to_csv(m)).digest() == m.digest()  # round trip


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("data_element,R9_1,bBcDeFgHiJ3,,x,", "line 9, field key: 'R9_1' is not R<scale>_<level>"),
        ("org_unit,ER-AVAN,12345678901,,x,", "line 9, field uid: '12345678901' is not a DHIS2 UID"),
        ("org_unit,ER-AVAN,,OU_AVAN,x,", "line 9, field uid: id_scheme is uid, so org_unit"),
        ("option,zeros,,,,sometimes", "line 9, field key: option 'zeros' already on line 3"),
        ("option,colour,,,,blue", "line 9, field key: unknown option 'colour'"),
        ("service,EMPLOYMENT,cBcDeFgHiJ2,,x,", "line 9, field key: service 'EMPLOYMENT' already"),
        (
            "org_unit,ER-AVAN,dBcDeFgHiJ1,,x,",
            "line 9, field uid: 'dBcDeFgHiJ1' already used on line 8",
        ),
        ("widget,x,,,,", "line 9, field kind: 'widget' is not one of"),
    ],
)
def test_errors_name_the_line_and_the_field(line: str, want: str) -> None:
    with pytest.raises(mapping.MappingError) as caught:
        mapping.parse(GOOD + line + "\n", "mapping.csv")
    assert want in str(caught.value)
    assert str(caught.value).startswith("mapping.csv line 9")


def test_every_problem_at_once_and_a_missing_column() -> None:
    text = GOOD.replace("option,zeros,,,,omit", "option,zeros,,,,never") + "org_unit,,x,,,\n"
    with pytest.raises(mapping.MappingError) as caught:
        mapping.parse(text)
    assert [(n, f) for n, f, _ in caught.value.problems] == [(3, "value"), (9, "key"), (9, "uid")]
    with pytest.raises(mapping.MappingError, match="line 1, field value: missing column"):
        mapping.parse("kind,key,uid,code,name\n")


def test_the_package_is_consistent_with_the_mapping() -> None:
    m = mapping.derive([("SH-GYUMRI1", "Gyumri")], [("EMPLOYMENT", "Employment")], [4])
    package = mapping.metadata_package(m)
    assert package == mapping.metadata_package(mapping.parse(mapping.to_csv(m)))  # stable
    [ds] = package["dataSets"]
    assert ds["periodType"] == "Daily" and ds["openFuturePeriods"] == 1 and ds["expiryDays"] == 0
    assert ds["organisationUnits"] == [{"id": m.org_units["SH-GYUMRI1"].uid}]
    assert "organisationUnits" not in package  # the ministry's own, only referenced
    elements = {e["code"]: e for e in package["dataElements"]}
    expected = [f"GNAHAT_{m}4_{n}" for m in ("R", "ONLINE_R") for n in range(1, 5)]
    expected += [
        f"GNAHAT_F_{f}_4_{n}" for f in ("PROCEDURE", "CONDUCT", "COMPETENCE") for n in range(1, 5)
    ]
    expected += [f"GNAHAT_F_SOLVED_3_{n}" for n in (1, 2, 3)]  # no, partly, yes
    assert sorted(elements) == sorted(expected)
    assert all(
        e["valueType"] == "INTEGER_ZERO_OR_POSITIVE" and e["zeroIsSignificant"]
        for e in elements.values()
    )
    assert {e["dataElement"]["id"] for e in ds["dataSetElements"]} == {
        e["id"] for e in elements.values()
    }
    combos = {c["code"]: c for c in package["categoryOptionCombos"]}
    assert set(combos) == {"GNAHAT_SVC_EMPLOYMENT", "GNAHAT_SVC_NONE"}
    cc = package["categoryCombos"][0]["id"]
    assert all(c["categoryCombo"]["id"] == cc for c in combos.values())
    assert all(mapping.UID_RE.match(e["id"]) for e in package["dataElements"])


@pytest.fixture
def cli_env(
    database_url: str, store: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Path:
    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    monkeypatch.setenv("GNAHAT_FORWARD_USERNAME", "gnahat")
    monkeypatch.setenv("GNAHAT_FORWARD_PASSWORD", "pw")
    return tmp_path


def test_forward_mapping_metadata_and_check_from_the_cli(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forward", "mapping"]) == 0
    path = cli_env / "mapping.csv"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    monkeypatch.setenv("GNAHAT_FORWARD_MAPPING", str(path))
    assert main(["forward", "metadata", "--org-units"]) == 0
    package = json.loads(capsys.readouterr().out)
    fake = FakeMeIs(username="gnahat", password="pw")
    fake.load_metadata(package)
    with FakeMeIsServer(fake) as server:
        monkeypatch.setenv("GNAHAT_FORWARD_URL", server.url)
        assert main(["forward", "check"]) == 0
        out = capsys.readouterr().out
        assert "OK      DHIS2 2.41.9" in out and "mapped objects exist and are assigned" in out
        fake.forget("dataElements", "GNAHAT_R4_3")  # an administrator skipped one
        assert main(["forward", "check"]) == 1
        out = capsys.readouterr().out
        assert "ERROR   data element GNAHAT_R4_3 (R4_3) not found (E7610)" in out
        assert "mapped objects exist" not in out
        fake.load_metadata(package)
        fake.accounts["gnahat"].authorities = {"F_VIEW_DATA"}
        assert main(["forward", "check"]) == 1
        assert "lacks the F_DATAVALUE_ADD authority" in capsys.readouterr().out
        fake.accounts["gnahat"].authorities = {"ALL"}
        fake.data_elements[next(iter(fake.data_elements))].attrs["zeroIsSignificant"] = False
        assert main(["forward", "check"]) == 1
        assert "is not zeroIsSignificant" in capsys.readouterr().out
        fake.load_metadata(package)
        fake.data_elements[next(iter(fake.data_elements))].attrs["zeroIsSignificant"] = True
        # The registry gains a service and a centre the mapping file does not have yet.
        from collector.registry import import_registry

        engine = make_engine(os.environ["GNAHAT_DATABASE_URL"])
        with session_factory(engine)() as s, s.begin():
            import_registry(s, {
                "services": "code,name_hy,name_en\nHOUSING,Բնակարան,Housing\n",
                "centres": "code,name_hy,name_en,marz,community\n"
                           "LO-STEPANAVAN,Ստեփանավան,Stepanavan,AM-LO,Ստեփանավան\n",
                "devices": "device,kind,scale\nam-lo-stepanavan-d01,buttons,4\n",
                "assignments": "device,centre,desk,valid_from\n"
                               "am-lo-stepanavan-d01,LO-STEPANAVAN,01,2026-01-01\n",
            })  # fmt: skip
        engine.dispose()
        assert main(["forward", "check"]) == 1
        out = capsys.readouterr().out
        assert "service HOUSING is in the registry but has no service row" in out
        assert "centre LO-STEPANAVAN is in the registry but has no org_unit row" in out
    path.write_text(path.read_text().replace("option,id_scheme,,,,code", "option,id_scheme,,,,urn"))
    assert main(["forward", "mapping"]) == 2
    assert "line 2, field value: id_scheme is code or uid" in capsys.readouterr().err


GROUP = "GnahatGrp01"  # the ministry's user group that holds the import account


def test_the_package_shares_data_write_and_check_names_each_gap_of_an_account_without_all(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An import account as a ministry sets one up (F_DATAVALUE_ADD, a user group, data
    capture under the centres' parent): the package without a user group gives it E7601
    and E7614 on every push, and `forward check` names both; with the mapping's
    user_group it writes; a centre outside its capture org units is E7617, named too."""
    assert main(["forward", "mapping"]) == 0
    path = cli_env / "mapping.csv"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    monkeypatch.setenv("GNAHAT_FORWARD_MAPPING", str(path))
    assert main(["forward", "metadata", "--org-units"]) == 0
    captured = capsys.readouterr()
    assert "no user_group in the mapping" in captured.err
    bare = json.loads(captured.out)
    assert bare["dataSets"][0]["sharing"]["userGroups"] == {}
    fake = FakeMeIs()
    fake.account("gnahat", "pw", {"F_DATAVALUE_ADD", "M_dhis-web-dataentry"}, groups={GROUP},
                 capture={mapping.TEST_ROOT_UID})  # fmt: skip
    fake.load_metadata(bare)
    m = mapping.load(path)
    one = {
        "dataSet": "GNAHAT_DAILY", "period": "20261124", "orgUnit": "SH-GYUMRI1",
        "dataValues": [{"dataElement": "GNAHAT_R4_1", "categoryOptionCombo":
                        m.services["EMPLOYMENT"].code, "value": "1"}],
    }  # fmt: skip
    url = "/api/dataValueSets?idScheme=code"
    with FakeMeIsServer(fake) as server:
        monkeypatch.setenv("GNAHAT_FORWARD_URL", server.url)
        r = httpx.post(server.url + url, json=one, auth=("gnahat", "pw"))
        assert r.status_code == 409 and r.json()["response"]["status"] == "ERROR"
        assert r.json()["response"]["conflicts"][0]["errorCode"] == "E7601"
        assert main(["forward", "check"]) == 1
        out = capsys.readouterr().out
        assert "may not write data into data set GNAHAT_DAILY" in out and "(E7601)" in out
        assert "category option GNAHAT_SVC_EMPLOYMENT (service EMPLOYMENT)" in out
        # The data set alone shared: each value is refused for its category option.
        fake.data_sets[m.data_set.uid].attrs["sharing"] = {  # type: ignore[union-attr]
            "public": "r-------", "userGroups": {GROUP: {"id": GROUP, "access": "r-rw----"}}
        }  # fmt: skip
        r = httpx.post(server.url + url, json=one, auth=("gnahat", "pw"))
        [conflict] = r.json()["response"]["conflicts"]
        assert conflict["errorCode"] == "E7614" and conflict["indexes"] == [0]
        # The mapping names the group: the package shares both, and the account writes.
        path.write_text(path.read_text().replace("option,user_group,,,,",
                                                 f"option,user_group,,,,{GROUP}"))  # fmt: skip
        assert main(["forward", "metadata", "--org-units"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        fake.load_metadata(json.loads(captured.out))
        assert main(["forward", "check"]) == 0, capsys.readouterr().out
        capsys.readouterr()
        r = httpx.post(server.url + url, json=one, auth=("gnahat", "pw"))
        assert r.status_code == 200 and r.json()["response"]["importCount"]["imported"] == 1
        # Data capture narrowed to one centre: the others are outside its hierarchy.
        gyumri = m.org_units["SH-GYUMRI1"].uid
        fake.accounts["gnahat"].capture = {gyumri}
        assert main(["forward", "check"]) == 1
        out = capsys.readouterr().out
        assert "centre SH-GYUMRI1" not in out
        assert "(centre ER-AVAN) is outside the account's data capture org units" in out
        other = {**one, "orgUnit": "ER-AVAN"}
        [conflict] = httpx.post(server.url + url, json=other, auth=("gnahat", "pw")).json()[
            "response"]["conflicts"]  # fmt: skip
        assert conflict["errorCode"] == "E7617" and "not in hierarchy" in conflict["value"]
        # A superuser bypasses sharing, never the hierarchy (DHIS2 makes no exception).
        fake.accounts["gnahat"].authorities = {"ALL"}
        [conflict] = httpx.post(server.url + url, json=other, auth=("gnahat", "pw")).json()[
            "response"]["conflicts"]  # fmt: skip
        assert conflict["errorCode"] == "E7617"


def test_centres_map_to_the_ministrys_own_org_units_by_code(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ministry's instance has its org units already, under its own UIDs and parents:
    `forward org-units` finds each centre's by code and writes their UIDs into the
    mapping, so the package assigns the data set to them and a push by UID lands."""
    assert main(["forward", "mapping"]) == 0
    centres = sorted(mapping.parse(capsys.readouterr().out).org_units)
    theirs = {code: mapping.stable_uid("ministry", code) for code in centres}
    fake = FakeMeIs(username="gnahat", password="pw")
    fake.load_metadata({"organisationUnits": [
        {"id": "ArmRoot0001", "code": "AM", "name": "Armenia"},
        *({"id": "Marz" + code[:2] + "00001", "code": "AM-" + code[:2], "name": code[:2],
           "parent": {"id": "ArmRoot0001"}} for code in centres),
        *({"id": theirs[code], "code": code, "name": f"{code} ISSC",
           "parent": {"id": "Marz" + code[:2] + "00001"}}
          for code in centres if code != "ER-AVAN"),
    ]})  # fmt: skip
    with FakeMeIsServer(fake) as server:
        monkeypatch.setenv("GNAHAT_FORWARD_URL", server.url)
        assert main(["forward", "org-units"]) == 1  # Avan is not there yet
        captured = capsys.readouterr()
        assert "ERROR   centre ER-AVAN: no org unit with code ER-AVAN" in captured.err
        gyumri = theirs["SH-GYUMRI1"]
        assert f"OK      centre SH-GYUMRI1: org unit {gyumri} (SH-GYUMRI1 ISSC)" in captured.err
        fake.load_metadata({"organisationUnits": [
            {"id": theirs["ER-AVAN"], "code": "ER-AVAN", "name": "Avan ISSC",
             "parent": {"id": "MarzER00001"}},
        ]})  # fmt: skip
        assert main(["forward", "org-units"]) == 0
        text = capsys.readouterr().out
        path = cli_env / "mapping.csv"
        path.write_text(text.replace("option,id_scheme,,,,code", "option,id_scheme,,,,uid"))
        monkeypatch.setenv("GNAHAT_FORWARD_MAPPING", str(path))
        m = mapping.load(path)
        assert {k: e.uid for k, e in m.org_units.items()} == theirs
        assert main(["forward", "metadata"]) == 0
        package = json.loads(capsys.readouterr().out)
        assert "organisationUnits" not in package  # the ministry's own, only referenced
        assigned = package["dataSets"][0]["organisationUnits"]
        assert assigned == [{"id": theirs[code]} for code in centres]
        fake.load_metadata(package)
        assert main(["forward", "check"]) == 0, capsys.readouterr().out
        capsys.readouterr()
        assert fake.path(gyumri) == f"/ArmRoot0001/MarzSH00001/{gyumri}"


def test_a_test_instances_org_units_have_a_parent() -> None:
    m = mapping.derive([("SH-GYUMRI1", "Gyumri"), ("ER-AVAN", "Avan")], [("EMPLOYMENT", "Jobs")])
    own = mapping.metadata_package(m, org_units=True)["organisationUnits"]
    assert own[0]["id"] == mapping.TEST_ROOT_UID and "parent" not in own[0]
    assert {ou["parent"]["id"] for ou in own[1:]} == {mapping.TEST_ROOT_UID}
    under = mapping.metadata_package(m, org_units=True, org_unit_parent="ShirakMarz1")
    assert [ou["parent"]["id"] for ou in under["organisationUnits"]] == ["ShirakMarz1"] * 2

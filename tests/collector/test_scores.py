"""Scores: statistics, disclosure control, and the API that serves them (real database)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.edge.auth import Role, TokenError, create_token
from collector.intake.store import Store
from collector.main import create_app
from collector.reading.scores import Counts, posterior_top_two, suppress, wilson
from tests.collector.helpers import T0, event, msg

# ---------------------------------------------------------------- statistics


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and 0.72 < lo < 0.73


def test_counts_summary() -> None:
    c = Counts(4, [2, 0, 3, 5])
    s = c.summary()
    assert (s["n"], s["mean"], s["csat"]) == (10, 3.1, 0.8)
    assert s["csat_ci95"] == [0.4902, 0.9433]
    assert Counts(5).summary()["mean"] is None


def test_three_perfect_ratings_do_not_top_three_thousand_good_ones() -> None:
    prior = 0.7
    few_mean, few_lo, _ = posterior_top_two(3, 3, prior, 15)
    many_mean, many_lo, many_hi = posterior_top_two(2400, 3000, prior, 15)
    assert few_mean < many_mean  # 3/3 raw is 1.0, but shrunk towards 0.7
    assert many_hi - many_lo < 0.04 < (1 - few_lo)  # and far less certain
    assert posterior_top_two(0, 0, prior, 15)[0] == pytest.approx(prior)


def test_complementary_suppression_leaves_nothing_derivable() -> None:
    table = {
        ("SH", "EMP"): 3, ("SH", "SOC"): 12, ("SH", "ASS"): 6,
        ("AV", "EMP"): 11, ("AV", "SOC"): 20,
        ("LO", "EMP"): 14, ("LO", "SOC"): 15,
    }  # fmt: skip
    hidden = suppress(table)
    assert {("SH", "EMP"), ("SH", "ASS")} <= hidden  # primary: n < 10
    # EMP column had one hidden cell; then AV's row; then SOC's column: each now holds 0 or >= 2.
    assert hidden == {("SH", "EMP"), ("SH", "ASS"), ("AV", "EMP"), ("AV", "SOC"), ("SH", "SOC")}
    for axis in (0, 1):
        lines: dict[str, list[tuple[str, str]]] = {}
        for k in table:
            lines.setdefault(k[axis], []).append(k)
        for cells in lines.values():
            n_hidden = sum(k in hidden for k in cells)
            assert n_hidden != 1 or len(cells) == 1


# ---------------------------------------------------------------- API

SH = ["am-sh-gyumri1-d01", "am-sh-gyumri1-d02", "am-sh-gyumri1-d03"]


@pytest.fixture
def client(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    def press(device: str, scores: list[int]) -> None:
        store.process(
            [msg(event(i + 1, device=device, score=s), device=device) for i, s in enumerate(scores)]
        )

    press(SH[0], [4] * 12)  # SOC_SECURITY, employee E01
    press(SH[1], [4] * 3)  # EMPLOYMENT, E02: too few to show
    press(SH[2], [4] * 6)  # SOC_ASSISTANCE, E03
    press("am-er-avan-d01", [4] * 10 + [1] * 10)
    press("am-er-avan-d02", [3] * 11)
    press("am-lo-vanadzor-d01", [1] * 15)
    press("am-lo-vanadzor-d02", [1] * 14)
    press("am-ar-artashat-d01", [4] * 2)  # two perfect ratings
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with TestClient(app) as c:
        yield c


def tok(
    sessions: sessionmaker[Session], role: Role, centres: list[str] | None = None
) -> dict[str, str]:
    with sessions() as s, s.begin():
        plain = create_token(s, name="t", role=role, centres=centres)[1]
    return {"Authorization": f"Bearer {plain}"}


def test_a_manager_sees_their_own_centre_only(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    mgr = tok(sessions, Role.MANAGER, ["SH-GYUMRI1"])
    r = client.get("/api/v1/scores/centres", headers=mgr)
    assert r.status_code == 200
    body = r.json()
    assert [c["centre"] for c in body["centres"]] == ["SH-GYUMRI1"]
    sh = body["centres"][0]
    assert sh["name_hy"] == "Տարածքային կենտրոն «Գյումրի 1»"  # Armenian, intact
    assert r.headers["content-type"].startswith("application/json")
    assert sh["total"][0]["n"] == 21 and sh["total"][0]["csat"] == 1.0
    assert {s["service"]: s["n"] for s in sh["services"]} == {
        "SOC_SECURITY": 12,
        "EMPLOYMENT": 3,
        "SOC_ASSISTANCE": 6,
    }
    assert (body["start"], body["end"]) == ("2026-10-27", "2026-11-25")  # 30 days to today
    assert client.get("/api/v1/scores/centres/ER-AVAN/employees", headers=mgr).status_code == 403


def test_staff_figures_only_from_five_ratings_and_not_as_a_league(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    mgr = tok(sessions, Role.MANAGER, ["SH-GYUMRI1"])
    r = client.get("/api/v1/scores/centres/SH-GYUMRI1/employees", headers=mgr)
    assert r.status_code == 200
    staff = r.json()["employees"]
    by_code = {e["employee"]: e for e in staff}
    assert by_code["SH-GYUMRI1-E01"]["n"] == 12 and by_code["SH-GYUMRI1-E01"]["csat"] == 1.0
    assert by_code["SH-GYUMRI1-E02"] == {
        "employee": "SH-GYUMRI1-E02",
        "name": "Աշխատակից 02",
        "position": "Սոցիալական աշխատող",
        "n": 3,
        "figure": "not enough ratings",
    }
    assert "csat" in by_code["SH-GYUMRI1-E03"]
    assert [e["employee"] for e in staff] == sorted(e["employee"] for e in staff)
    # Analysts never see staff; every manager view is audited.
    analyst = tok(sessions, Role.ANALYST)
    assert (
        client.get("/api/v1/scores/centres/SH-GYUMRI1/employees", headers=analyst).status_code
        == 403
    )
    from sqlalchemy import select

    from collector.models import AuditLog

    with sessions() as s:
        assert "scores.employees" in set(s.scalars(select(AuditLog.action)))


def test_rankings_shrink_small_centres(client: TestClient, sessions: sessionmaker[Session]) -> None:
    r = client.get("/api/v1/rankings/centres", headers=tok(sessions, Role.ANALYST))
    ranked = r.json()["centres"]
    order = [c["centre"] for c in ranked]
    # Artashat's 2 perfect ratings rank below Gyumri's 21 and even below Avan's 21 of 31.
    assert order == ["SH-GYUMRI1", "ER-AVAN", "AR-ARTASHAT", "LO-VANADZOR"]
    artashat, avan = ranked[2], ranked[1]
    assert artashat["csat_raw"] == 1.0 > avan["csat_raw"] and artashat["score"] < avan["score"]
    assert artashat["score_ci95"][1] - artashat["score_ci95"][0] > 0.3
    assert [c["rank"] for c in ranked] == [1, 2, 3, 4]


def test_open_data_needs_no_token_and_hides_small_cells(client: TestClient) -> None:
    r = client.get("/api/v1/open/centres")
    assert r.status_code == 200
    cells = {(c["centre"], c["service"]): c for c in r.json()["cells"]}
    shown = {k for k, c in cells.items() if not c["suppressed"]}
    assert shown == {("LO-VANADZOR", "SOC_SECURITY"), ("LO-VANADZOR", "EMPLOYMENT")}
    hidden = cells[("SH-GYUMRI1", "EMPLOYMENT")]
    assert hidden == {"centre": "SH-GYUMRI1", "service": "EMPLOYMENT", "suppressed": True}
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/open/centres?format=csv").text)))
    assert {r["n"] for r in rows if r["centre"] == "SH-GYUMRI1"} == {""}
    assert {r["n"] for r in rows if r["centre"] == "LO-VANADZOR"} == {"15", "14"}


def test_periods_are_days_and_bounded(client: TestClient, sessions: sessionmaker[Session]) -> None:
    h = tok(sessions, Role.ANALYST)
    ok = client.get("/api/v1/scores/centres?start=2026-11-24&end=2026-11-24", headers=h)
    assert ok.status_code == 200 and len(ok.json()["centres"]) == 4
    assert (
        client.get("/api/v1/scores/centres?start=2026-11-25&end=2026-11-24", headers=h).status_code
        == 422
    )
    assert (
        client.get("/api/v1/scores/centres?start=2024-01-01&end=2026-11-24", headers=h).status_code
        == 422
    )
    assert (
        client.get("/api/v1/scores/centres?start=2026-11-24T10:00:00", headers=h).status_code == 422
    )
    assert client.get("/api/v1/scores/centres").status_code == 401


def test_manager_tokens_need_known_centres(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        with pytest.raises(TokenError, match="needs --centre"):
            create_token(s, name="m", role=Role.MANAGER)
        with pytest.raises(TokenError, match="unknown centre"):
            create_token(s, name="m", role=Role.MANAGER, centres=["XX-NOWHERE"])
        with pytest.raises(TokenError, match="only manager"):
            create_token(s, name="a", role=Role.ANALYST, centres=["SH-GYUMRI1"])


def test_token_cli_scopes_managers(
    database_url: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from collector.cli import main

    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    assert main(["token", "create", "--role", "manager", "--name", "Gyumri"]) == 2
    assert "needs --centre" in capsys.readouterr().err
    argv = ["token", "create", "--role", "manager", "--centre", "SH-GYUMRI1", "--name", "G"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("gnh_")
    assert main(["token", "list"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("\tG\tSH-GYUMRI1")


def test_open_data_is_cacheable_and_changes_its_etag_with_the_data(
    database_url: str, sessions: sessionmaker[Session], store: Store
) -> None:
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from collector.config import Settings
    from collector.main import create_app
    from tests.collector.helpers import T0, event, msg

    store.process([msg(event(i)) for i in range(1, 12)])
    app = create_app(Settings(database_url=database_url))
    app.state.gnahat.clock = lambda: T0 + timedelta(days=1)
    with TestClient(app) as c:
        first = c.get("/api/v1/open/centres")
        etag = first.headers["etag"]
        assert first.status_code == 200 and first.headers["cache-control"] == "public, max-age=60"
        again = c.get("/api/v1/open/centres", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert c.get("/api/v1/open/centres").json() == first.json()  # from memory, the same
        csv_tag = c.get("/api/v1/open/centres", params={"format": "csv"}).headers["etag"]
        assert csv_tag != etag
        store.process([msg(event(i)) for i in range(12, 15)])  # new ratings arrive
        changed = c.get("/api/v1/open/centres", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag

"""Forwarding to the M&E IS: an outbox of (centre, day) batches pushed to a DHIS2-style
dataValueSets import (the simulator's fake, over real HTTP), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import DailyAggregate, ForwardBatch
from collector.outbound import mapping
from collector.outbound.dhis2 import judge_response, retry_after_seconds
from collector.outbound.forward import Forwarder
from simulator.me_is import FakeMeIs
from simulator.me_is_server import FakeMeIsServer
from tests.collector.helpers import DEV, T0, event, msg

DAY = date(2026, 11, 24)
PERIOD = "20261124"
SVC = "GNAHAT_SVC_SOC_ASSISTANCE"  # the combo of the service at DEV's desk
OTHER = "am-sh-gyumri1-d02"  # same centre, EMPLOYMENT
EMPLOYMENT = "GNAHAT_SVC_EMPLOYMENT"


@dataclass
class Env:
    store: Store
    sessions: sessionmaker[Session]
    server: FakeMeIsServer
    now: list[datetime]
    metrics: Metrics
    database_url: str

    @property
    def fake(self) -> FakeMeIs:
        return self.server.fake

    def forwarder(self, **settings: Any) -> Forwarder:
        base: dict[str, Any] = {
            "database_url": self.database_url,
            "forward_url": self.server.url,
            "forward_username": "gnahat",
            "forward_password": "pw",
        }
        s = Settings(**{**base, **settings})
        fwd = Forwarder(
            self.sessions, s, metrics=self.metrics, clock=lambda: self.now[0], rng=lambda: 0.0
        )
        self._made.append(fwd)
        return fwd

    def __post_init__(self) -> None:
        self._made: list[Forwarder] = []

    def values(self, org: str = "SH-GYUMRI1") -> dict[tuple[str, str, str], str]:
        """What the M&E IS holds for ``org``, by codes."""
        return {(de, pe, coc): v for (de, pe, ou, coc), v in self.fake.held().items() if ou == org}

    def load_package(self, **options: str) -> dict[str, Any]:
        """Load into the fake what `forward metadata --org-units` makes (the mapping
        derived from the registry, with ``options``); return the package."""
        with self.sessions() as s:
            m = mapping.derive_from_db(s)
        m.options.update(options)
        package = mapping.metadata_package(m, org_units=True)
        self.fake.load_metadata(package)
        return package

    def advance(self, **delta: float) -> None:
        self.now[0] += timedelta(**delta)


@pytest.fixture
def env(store: Store, sessions: sessionmaker[Session], database_url: str) -> Iterator[Env]:
    fake = FakeMeIs(username="gnahat", password="pw")
    with FakeMeIsServer(fake) as server:
        e = Env(store, sessions, server, [T0 + timedelta(days=1)], Metrics(), database_url)
        fake.today = lambda: e.now[0].astimezone(UTC).date()  # the server's clock: UTC
        e.load_package()
        yield e
        for fwd in e._made:
            fwd.stop()


def press(
    env: Env,
    seqs: range,
    *,
    score: int = 4,
    device: str = DEV,
    at: datetime = T0,
    stream: str = "s1",
) -> None:
    env.store.process(
        [
            msg(event(i, score=score, device=device, at=at, stream=stream), device=device)
            for i in seqs
        ]
    )


def test_a_finished_day_is_pushed_once_as_absolute_counts(env: Env) -> None:
    press(env, range(1, 4), score=4)
    press(env, range(4, 6), score=1)
    press(env, range(1, 3), score=3, device=OTHER)
    env.now[0] = T0  # the day is still running: nothing goes out yet
    fwd = env.forwarder()
    assert fwd.run_once().planned == 0 and env.fake.requests == []
    env.now[0] = T0 + timedelta(days=1)
    report = fwd.run_once()
    assert report.planned == 1 and report.outcomes == {"sent": 1}
    assert env.values() == {
        ("GNAHAT_R4_1", PERIOD, SVC): "2",
        ("GNAHAT_R4_2", PERIOD, SVC): "0",
        ("GNAHAT_R4_3", PERIOD, SVC): "0",
        ("GNAHAT_R4_4", PERIOD, SVC): "3",
        ("GNAHAT_R4_1", PERIOD, EMPLOYMENT): "0",
        ("GNAHAT_R4_2", PERIOD, EMPLOYMENT): "0",
        ("GNAHAT_R4_3", PERIOD, EMPLOYMENT): "2",
        ("GNAHAT_R4_4", PERIOD, EMPLOYMENT): "0",
    }
    req = env.fake.requests[0]
    assert req["query"] == {"importStrategy": "CREATE_AND_UPDATE", "idScheme": "code"}
    assert req["idempotency_key"] == f"gnahat:SH-GYUMRI1/{PERIOD}:v1"
    env.advance(minutes=5)
    assert fwd.run_once().planned == 0  # unchanged: not sent again
    assert len(env.fake.requests) == 1
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert (b.state, b.version, b.sent_version, b.attempts) == ("sent", 1, 1, 1)


def test_a_late_event_requeues_its_day_and_the_push_replaces(env: Env) -> None:
    press(env, range(1, 4))
    fwd = env.forwarder()
    fwd.run_once()
    env.advance(days=6)  # a unit comes back after a week with presses of that day
    press(env, range(4, 6), at=T0 + timedelta(hours=2))
    report = fwd.run_once()
    assert report.planned == 1 and report.outcomes == {"sent": 1}
    assert env.values()[("GNAHAT_R4_4", PERIOD, SVC)] == "5"  # replaced, not 3 + 5
    assert env.fake.requests[-1]["idempotency_key"] == f"gnahat:SH-GYUMRI1/{PERIOD}:v2"


def test_server_errors_and_network_failures_are_retried_with_backoff(env: Env) -> None:
    press(env, range(1, 3))
    env.fake.faults.fail = 2  # two 500s
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"retry": 1}
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert b.state == "pending" and "HTTP 500" in (b.last_error or "")
        first_wait = b.next_attempt_at - env.now[0]  # type: ignore[operator]
    assert first_wait == timedelta(seconds=5)  # 10 s step, jitter 0 → half
    assert fwd.run_once().outcomes == {}  # not due yet: no request
    env.advance(seconds=5)
    assert fwd.run_once().outcomes == {"retry": 1}
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert b.next_attempt_at - env.now[0] == timedelta(seconds=10)  # type: ignore[operator]
    env.advance(seconds=10)
    assert fwd.run_once().outcomes == {"sent": 1}
    keys = {r["idempotency_key"] for r in env.fake.requests}
    assert keys == {f"gnahat:SH-GYUMRI1/{PERIOD}:v1"}  # one key across retries
    assert (
        env.metrics.registry.get_sample_value("gnahat_forward_pushes_total", {"outcome": "retry"})
        == 2
    )


def test_throttling_honours_retry_after(env: Env) -> None:
    press(env, range(1, 3))
    env.fake.faults.throttle, env.fake.faults.retry_after_s = 1, 120
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"retry": 1}
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert b.next_attempt_at - env.now[0] == timedelta(seconds=120)  # type: ignore[operator]
    env.advance(seconds=119)
    assert fwd.run_once().outcomes == {}
    env.advance(seconds=1)
    assert fwd.run_once().outcomes == {"sent": 1}


def test_refusals_are_parked_with_the_reason_and_retried_on_request(env: Env) -> None:
    press(env, range(1, 3))
    env.fake.faults.fail, env.fake.faults.fail_status = 1, 400
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"parked": 1}
    env.advance(days=1)
    assert fwd.run_once().outcomes == {}  # parked stays parked
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert b.state == "parked" and b.last_error == "HTTP 400: Injected failure"
    assert env.metrics.registry.get_sample_value("gnahat_forward_parked_batches") == 1
    assert fwd.retry() == 1
    assert fwd.run_once().outcomes == {"sent": 1}
    assert env.metrics.registry.get_sample_value("gnahat_forward_parked_batches") == 0


def test_wrong_credentials_are_named_and_retried_with_backoff(env: Env) -> None:
    press(env, range(1, 3))
    fwd = env.forwarder(forward_password="wrong")
    assert fwd.run_once().outcomes == {"retry": 1}
    with env.sessions() as s:
        b = s.scalars(select(ForwardBatch)).one()
        assert (b.state, b.problem) == ("pending", "auth")
        assert "HTTP 401: the M&E IS refused the credentials" in (b.last_error or "")
        assert b.next_attempt_at == env.now[0] + timedelta(seconds=5)


def test_a_mapping_conflict_stays_pending_and_goes_once_the_metadata_is_fixed(env: Env) -> None:
    press(env, range(1, 3))
    press(env, range(1, 3), device="am-er-avan-d01", stream="s2")
    env.fake.forget("dataElements", "GNAHAT_R4_4")  # an administrator left gaps
    env.fake.forget("organisationUnits", "ER-AVAN")
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"refused": 2}
    with env.sessions() as s:
        by_key = {b.batch_key: b for b in s.scalars(select(ForwardBatch))}
    gy, av = by_key[f"SH-GYUMRI1/{PERIOD}"], by_key[f"ER-AVAN/{PERIOD}"]
    assert (gy.state, gy.problem) == ("pending", "mapping")
    assert "E7610 GNAHAT_R4_4: Data element not found" in (gy.last_error or "")
    assert (av.state, av.problem) == ("pending", "mapping")
    assert "the whole set was refused: E7603 ER-AVAN" in (av.last_error or "")
    held = env.values()
    assert held[("GNAHAT_R4_1", PERIOD, SVC)] == "0"  # the values it could take are there
    assert ("GNAHAT_R4_4", PERIOD, SVC) not in held
    assert env.values("ER-AVAN") == {}
    env.advance(seconds=30)
    assert fwd.run_once().outcomes == {}  # it waits rather than hammering
    env.load_package()  # the administrator imports the package: the gaps are closed
    env.advance(minutes=2)
    assert fwd.run_once().outcomes == {"sent": 2}  # nothing else was done here
    assert env.values()[("GNAHAT_R4_4", PERIOD, SVC)] == "2"
    assert sum(int(v) for v in env.values("ER-AVAN").values()) == 2
    # Only the refused value went the second time: the rest was confirmed already.
    assert [dv["dataElement"] for dv in env.fake.requests[-2]["body"]["dataValues"]] in (
        ["GNAHAT_R4_4"],
        ["GNAHAT_R4_1", "GNAHAT_R4_2", "GNAHAT_R4_3", "GNAHAT_R4_4"],
    )
    assert sum(1 for r in env.fake.requests if r.get("conflicts")) == 2


def test_an_me_is_down_for_a_week_loses_nothing(env: Env) -> None:
    env.server.stop()  # connection refused for a week
    fwd = env.forwarder(forward_backoff_max_s=3600)
    for day in range(7):
        at = T0 + timedelta(days=day)
        press(env, range(1 + 10 * day, 4 + 10 * day), at=at, score=1 + day % 4)
        env.now[0] = at + timedelta(days=1)
        for _ in range(24):  # every hour of that day, the forwarder tries
            fwd.run_once()
            env.advance(hours=1)
    with env.sessions() as s:
        states = set(s.scalars(select(ForwardBatch.state)))
        attempts = max(s.scalars(select(ForwardBatch.attempts)))
    assert states == {"pending"} and attempts > 10
    oldest = env.metrics.registry.get_sample_value("gnahat_forward_oldest_pending_seconds")
    assert oldest is not None and oldest >= 6 * 86400  # retries do not reset the age
    env.server.start()  # back on the same address
    env.advance(hours=2)  # past the capped backoff (1 h)
    while fwd.run_once().outcomes.get("sent"):
        pass  # one batch per run until the outbox is empty
    with env.sessions() as s:
        assert set(s.scalars(select(ForwardBatch.state))) == {"sent"}
        cells = s.scalars(select(DailyAggregate)).all()
        expected = {
            (f"GNAHAT_R4_{lvl}", c.day.strftime("%Y%m%d"), SVC): str(getattr(c, f"n{lvl}"))
            for c in cells
            for lvl in range(1, 5)
        }
    assert len({pe for _de, pe, _c in expected}) == 7
    assert env.values() == expected


def test_employees_stay_out_unless_configured_and_then_pseudonymous(env: Env) -> None:
    press(env, range(1, 3))
    env.forwarder().run_once()
    body = str(env.fake.requests[-1]["body"])
    assert "SH-GYUMRI1-E" not in body and "attributeOptionCombo" not in body
    env.fake.reset()
    with env.sessions() as s, s.begin():
        s.query(ForwardBatch).delete()
    fwd = env.forwarder(forward_employee_level=True, pseudonym_key="k" * 32)
    # The ministry created an attribute option combo per pseudonym (and "UNATTRIBUTED").
    pseudonyms = [fwd._pseudonym("SH-GYUMRI1-E03"), "UNATTRIBUTED"]
    env.fake.load_metadata(
        {
            "categoryOptionCombos": [
                {"id": mapping.stable_uid("aoc", p), "code": p} for p in pseudonyms
            ]
        }
    )
    fwd.plan()  # same day, now per employee: new content, a new version
    assert fwd.send_due() == {"sent": 1}
    body = str(env.fake.requests[-1]["body"])
    assert "SH-GYUMRI1-E03" not in body
    combos = {env.fake.cocs[aoc].code for (_de, _pe, _ou, _coc, aoc) in env.fake.values}
    assert combos == {fwd._pseudonym("SH-GYUMRI1-E03")}  # stable for one key
    assert fwd._pseudonym("SH-GYUMRI1-E03").startswith("E")
    # Rotating the session secret (after a leak) must not re-identify anyone upstream.
    rotated = env.forwarder(
        forward_employee_level=True, pseudonym_key="k" * 32, secret_key="r" * 32
    )
    assert rotated._pseudonym("SH-GYUMRI1-E03") == fwd._pseudonym("SH-GYUMRI1-E03")
    other_key = env.forwarder(forward_employee_level=True, pseudonym_key="q" * 32)
    assert other_key._pseudonym("SH-GYUMRI1-E03") != fwd._pseudonym("SH-GYUMRI1-E03")


def test_dry_run_checks_the_mapping_and_changes_nothing(env: Env) -> None:
    press(env, range(1, 3))
    env.fake.forget("organisationUnits", "SH-GYUMRI1")
    results = env.forwarder().dry_run(DAY)
    assert [(c, o.kind) for c, o in results] == [("SH-GYUMRI1", "refused")]
    assert "E7603 SH-GYUMRI1: Org unit not found" in results[0][1].detail
    assert env.fake.requests[-1]["query"]["dryRun"] == "true"
    assert env.fake.values == {}
    with env.sessions() as s:
        assert s.scalars(select(ForwardBatch)).all() == []


def test_the_resend_window_pushes_recent_days_again_once_a_day(env: Env) -> None:
    for day in range(3):
        press(env, range(1 + 10 * day, 3 + 10 * day), at=T0 + timedelta(days=day))
    env.now[0] = T0 + timedelta(days=3)
    fwd = env.forwarder(forward_resend_days=3)
    assert fwd.run_once().outcomes == {"sent": 3}
    env.advance(hours=1)
    assert fwd.run_once().outcomes == {}  # same local day: no second sweep
    env.advance(days=1)  # next day: the last 3 finished days (27th, 26th, 25th) go again
    assert fwd.run_once().outcomes == {"sent": 2}  # the 27th had no ratings
    keys = sorted(r["idempotency_key"] for r in env.fake.requests[-2:])
    assert keys == [
        "gnahat:SH-GYUMRI1/20261125:v1:resend-2026-11-28",
        "gnahat:SH-GYUMRI1/20261126:v1:resend-2026-11-28",
    ]


def test_a_stuck_me_is_does_not_hold_up_ingest(env: Env) -> None:
    press(env, range(1, 3))
    env.fake.hold = threading.Event()
    fwd = env.forwarder()
    pushing = threading.Thread(target=fwd.run_once)
    pushing.start()
    assert env.fake.arrived.wait(10)  # the push is in flight, the M&E IS sits on it
    press(env, range(3, 10))  # ingest commits meanwhile (SQLite: no lock held by the push)
    with env.sessions() as s:
        assert s.scalar(select(DailyAggregate.n)) == 9
    env.fake.hold.set()
    pushing.join(30)
    assert not pushing.is_alive()


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind"),
    [
        # 2.3x: the bare import summary with HTTP 200.
        (
            200,
            {},
            b'{"status":"SUCCESS","importCount":{"imported":2,"updated":0,"ignored":0}}',
            "sent",
        ),
        # Unchanged values count ignored (2.38.6+), a zero that is not significant is
        # skipped: counts alone never make a push fail.
        (200, {}, b'{"status":"SUCCESS","importCount":{"imported":0,"ignored":8}}', "sent"),
        (
            200,
            {},
            b'{"status":"OK","response":{"status":"SUCCESS","importCount":{"ignored":4}}}',
            "sent",
        ),
        # 2.38+: a WebMessage, 409 for WARNING and ERROR, conflicts with an errorCode.
        (
            409,
            {},
            b'{"status":"WARNING","response":{"status":"WARNING","importCount":{"imported":1,'
            b'"ignored":1},"conflicts":[{"object":"X","value":"bad","errorCode":"E7610",'
            b'"indexes":[1]}]}}',
            "refused",
        ),
        (
            409,
            {},
            b'{"response":{"status":"ERROR","importCount":{"ignored":0},'
            b'"conflicts":[{"object":"OU","value":"not found","errorCode":"E7603"}]}}',
            "refused",
        ),
        (
            409,
            {},
            b'{"response":{"status":"WARNING","importCount":{"ignored":2},'
            b'"conflicts":[{"object":"20261124","value":"expired","errorCode":"E7640"}]}}',
            "locked",
        ),
        (
            409,
            {},
            b'{"response":{"status":"WARNING","importCount":{"ignored":2},'
            b'"conflicts":[{"object":"20261124","value":"approved","errorCode":"E7642"}]}}',
            "locked",
        ),
        # 2.3x conflicts carry no code: refused values, retried.
        (
            200,
            {},
            b'{"status":"WARNING","importCount":{"ignored":1},'
            b'"conflicts":[{"object":"X","value":"Data element not found"}]}',
            "refused",
        ),
        (200, {}, b"<html>login</html>", "parked"),
        (302, {"location": "/login"}, b"", "parked"),
        (404, {}, b'{"message":"Not found"}', "parked"),
        (409, {}, b'{"httpStatusCode":409,"message":"conflict"}', "parked"),
        (401, {}, b"", "retry"),
        (403, {}, b'{"message":"Access is denied"}', "retry"),
        (503, {}, b"down", "retry"),
        (429, {"retry-after": "30"}, b"", "retry"),
    ],
)
def test_answers_are_judged(status: int, headers: dict[str, str], body: bytes, kind: str) -> None:
    assert judge_response(status, headers, body).kind == kind


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("30", now) == 30
    assert retry_after_seconds("Tue, 24 Nov 2026 12:01:00 GMT", now) == 60
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_serve_runs_the_forwarder_beside_the_api(env: Env) -> None:
    from fastapi.testclient import TestClient

    from collector.main import create_app

    press(env, range(1, 3))
    settings = Settings(
        database_url=env.database_url,
        forward_url=env.server.url,
        forward_username="gnahat",
        forward_password="pw",
    )
    app = create_app(settings, forward_clock=lambda: env.now[0])
    with TestClient(app) as client:
        assert env.fake.arrived.wait(20)  # the first round starts with the app
        assert client.get("/healthz").status_code == 200
        forwarder = app.state.gnahat.forwarder
        forwarder.wake()
        done = threading.Event()

        def sent() -> bool:
            with env.sessions() as s:
                return s.scalar(select(ForwardBatch.state)) == "sent"

        for _ in range(600):  # the round in flight finishes (polled, bounded)
            if sent():
                break
            done.wait(0.05)
        assert sent()
    assert env.values()[("GNAHAT_R4_4", PERIOD, SVC)] == "2"


def test_forward_commands(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from collector.cli import main

    # A month before T0: finished by the wall clock these commands use, whatever the date.
    press(env, range(1, 3), at=T0 - timedelta(days=30))
    monkeypatch.setenv("GNAHAT_DATABASE_URL", env.database_url)
    monkeypatch.setenv("GNAHAT_FORWARD_URL", env.server.url)
    monkeypatch.setenv("GNAHAT_FORWARD_USERNAME", "gnahat")
    monkeypatch.setenv("GNAHAT_FORWARD_PASSWORD", "pw")
    env.fake.forget("organisationUnits", "SH-GYUMRI1")
    assert main(["forward", "dry-run", "--day", "2026-10-25"]) == 1
    out = capsys.readouterr().out
    assert "SH-GYUMRI1\tREFUSED\tthe whole set was refused: E7603 SH-GYUMRI1" in out
    assert main(["forward", "run"]) == 0
    assert "1 refused" in capsys.readouterr().out
    assert main(["forward", "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 pending") and "SH-GYUMRI1/20261025\tpending" in out
    assert "values refused: a mapping or metadata gap - the whole set was refused" in out
    env.load_package()  # fixed on the M&E IS side
    assert main(["forward", "retry"]) == 2
    assert main(["forward", "retry", "--all"]) == 0  # now, rather than at the next try
    assert "1 batch(es) re-queued" in capsys.readouterr().out
    assert main(["forward", "run"]) == 0
    assert "1 sent" in capsys.readouterr().out
    assert main(["forward", "status"]) == 0
    assert capsys.readouterr().out.startswith("1 sent")
    monkeypatch.delenv("GNAHAT_FORWARD_URL")
    assert main(["forward", "run"]) == 2


def test_one_forwarder_at_a_time_and_a_takeover(env: Env) -> None:
    press(env, range(1, 3))
    first = env.forwarder(forward_interval_s=60)
    second = env.forwarder(forward_interval_s=60)
    assert first.run_once().outcomes == {"sent": 1}
    press(env, range(3, 5))  # more for the same day
    report = second.run_once()
    assert not report.lease and "another process" in str(report)
    assert len(env.fake.requests) == 1
    env.advance(seconds=179)  # the first forwarder went silent (died): lease still valid
    assert not second.run_once().lease
    env.advance(seconds=2)  # three rounds passed: the second takes over
    assert second.run_once().outcomes == {"sent": 1}
    assert not first.run_once().lease  # and the first, back, waits its turn
    second.release_lease()  # a clean stop hands over at once
    assert first.run_once().lease


def test_a_long_round_renews_the_lease_and_stops_when_it_is_lost(env: Env) -> None:
    press(env, range(1, 3))
    first = env.forwarder(forward_interval_s=60)
    second = env.forwarder(forward_interval_s=60)
    assert first.hold_lease()
    first.check_lease = True
    assert first.plan() == 1
    # The round was slow: the lease ran out and the second took it meanwhile.
    env.advance(seconds=181)
    assert second.hold_lease()
    assert first.send_due() == {}  # the first pushes nothing more
    assert env.fake.requests == []
    assert second.run_once().outcomes == {"sent": 1}


def _wait_for_requests(env: Env, count: int) -> None:
    """Until the M&E IS has seen ``count`` imports (woken by each arrival, no sleeping)."""
    for _ in range(1000):
        if len(env.fake.requests) >= count:
            return
        env.fake.arrived.wait(5)
        env.fake.arrived.clear()
    raise AssertionError(f"only {len(env.fake.requests)} of {count} imports arrived")


def test_a_backlog_goes_several_pushes_at_a_time_and_never_more(env: Env) -> None:
    for d in range(12):  # twelve finished days: twelve batches
        press(env, range(d * 10 + 1, d * 10 + 3), at=T0 - timedelta(days=d))
    env.fake.hold = threading.Event()
    fwd = env.forwarder(forward_concurrency=3)
    pushing = threading.Thread(target=fwd.run_once)
    pushing.start()
    _wait_for_requests(env, 3)  # three in flight, the M&E IS sits on them
    assert env.fake.in_flight == 3
    env.fake.hold.set()
    pushing.join(30)
    assert not pushing.is_alive()
    assert env.fake.most_in_flight == 3  # never a fourth at once
    with env.sessions() as s:
        states = s.scalars(select(ForwardBatch.state)).all()
    assert sorted(states) == ["sent"] * 12
    assert len({r["idempotency_key"] for r in env.fake.requests}) == 12  # each once


def test_an_answer_asking_to_wait_stops_the_whole_round(env: Env) -> None:
    for d in range(10):
        press(env, range(d * 10 + 1, d * 10 + 3), at=T0 - timedelta(days=d))
    env.fake.faults.throttle = 100  # every import gets 429 Retry-After
    fwd = env.forwarder(forward_concurrency=2)
    report = fwd.run_once()
    # Each of the two pushes in flight heard "wait": nothing more was started.
    assert report.outcomes == {"retry": 2}
    assert len(env.fake.requests) == 2
    env.fake.faults.throttle = 0
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"sent": 10}  # the next round takes them all


def test_a_plan_goes_in_bounded_transactions_and_one_cut_short_is_planned_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.outbound import planning

    for d in range(9):
        press(env, range(d * 10 + 1, d * 10 + 3), at=T0 - timedelta(days=d))
    monkeypatch.setattr(planning, "PLAN_CHUNK", 2)
    fwd = env.forwarder()
    real_build = fwd.adapter.build
    built: list[date] = []

    def failing_build(centre: str, day: date, cells: list[Any]) -> dict[str, Any]:
        if len(built) == 5:
            raise RuntimeError("the database went away mid-plan")
        built.append(day)
        return real_build(centre, day, cells)

    monkeypatch.setattr(fwd.adapter, "build", failing_build)
    with pytest.raises(RuntimeError):
        fwd.plan()
    with env.sessions() as s:  # the first two chunks committed; the mark did not move
        assert len(s.scalars(select(ForwardBatch)).all()) == 4
    monkeypatch.setattr(fwd.adapter, "build", real_build)
    assert fwd.plan() == 5  # the rest; the four already planned compare equal
    with env.sessions() as s:
        batches = s.scalars(select(ForwardBatch)).all()
    assert len(batches) == 9 and {b.version for b in batches} == {1}
    assert fwd.plan() == 0


def test_factor_answers_and_the_online_channel_reach_the_me_is(env: Env) -> None:
    from dataclasses import replace as copy

    from collector.intake.store import ORIGIN_ONLINE
    from device import protocol as p

    rating = event(1, score=2)
    factors = copy(
        event(2), type=p.EventType.FACTORS, score=None, rating_seq=1,
        answers={"procedure": 1, "solved": "partly"},
    )  # fmt: skip
    online = copy(event(1, score=4, stream="web"), channel="online")
    env.store.process([msg([rating])])
    env.store.process([copy(msg([online]), origin=ORIGIN_ONLINE)])  # the phone page's own
    fwd = env.forwarder()
    assert fwd.run_once().outcomes == {"sent": 1}
    held = env.values()
    assert held[("GNAHAT_R4_2", PERIOD, SVC)] == "1" and held[("GNAHAT_R4_4", PERIOD, SVC)] == "1"
    assert held[("GNAHAT_ONLINE_R4_4", PERIOD, SVC)] == "1"
    assert held[("GNAHAT_ONLINE_R4_2", PERIOD, SVC)] == "0"
    # The factors come a little later (a kiosk's follow-up): the day goes again with them.
    env.store.process([msg(factors)])
    env.advance(minutes=5)
    assert fwd.run_once().outcomes == {"sent": 1}
    held = env.values()
    assert held[("GNAHAT_F_PROCEDURE_4_1", PERIOD, SVC)] == "1"
    assert held[("GNAHAT_F_SOLVED_3_2", PERIOD, SVC)] == "1"
    assert held[("GNAHAT_F_SOLVED_3_3", PERIOD, SVC)] == "0"


def test_a_batch_that_fails_for_its_own_reason_is_parked_and_the_next_goes(env: Env) -> None:
    avan = "am-er-avan-d01"
    press(env, range(1, 4), score=4)
    press(env, range(1, 3), score=2, device=avan, stream="a")
    fwd = env.forwarder()
    assert fwd.plan() == 2
    with env.sessions() as s, s.begin():
        gyumri = s.scalars(
            select(ForwardBatch).where(ForwardBatch.batch_key.like("SH-GYUMRI1/%"))
        ).one()
        gyumri.payload = {"cells": "not what the adapter reads"}  # a row of its own kind
    assert fwd.send_due() == {"parked": 1, "sent": 1}
    assert env.values("ER-AVAN") and not env.values()
    with env.sessions() as s:
        parked = s.get(ForwardBatch, gyumri.id)
        assert parked is not None and parked.state == "parked"
        assert "could not be sent" in (parked.last_error or "")

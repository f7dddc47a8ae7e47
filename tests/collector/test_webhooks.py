"""Webhooks through the shared outbox: a local receiver (a real HTTP server) that checks
each signature with the Standard Webhooks reference library; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from collector.cli import main
from collector.config import Settings
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import WebhookDelivery
from collector.outbound import webhooks
from tests.collector.helpers import T0, event, msg, served

AVAN = "am-er-avan-d01"


@dataclass
class Receiver:
    secret: str = ""
    answers: list[int] = field(default_factory=list)
    """Statuses to answer next (then 204)."""
    got: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    forged: int = 0
    fresh: bool = True
    """Check the timestamp against the wall clock too (the library's ``verify``); off
    for senders on a test's clock: then the signature alone is checked, by the library's
    own ``sign`` over the received id, timestamp and body."""

    def check(self, body: bytes, headers: dict[str, str]) -> Any:
        if self.fresh:
            return Verifier(self.secret).verify(body, headers)
        stamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
        want = Verifier(self.secret).sign(headers["webhook-id"], stamp, body.decode())
        if want not in headers["webhook-signature"].split():
            raise WebhookVerificationError("signature mismatch")
        return json.loads(body)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            try:
                payload = self.check(body, headers)
            except WebhookVerificationError:
                self.forged += 1
                return Response(status_code=401)
            self.headers.append(headers)
            if self.answers:
                return Response("busy", status_code=self.answers.pop(0))
            self.got.append(payload)
            return Response(status_code=204)

        return app


@dataclass
class Env:
    sessions: sessionmaker[Session]
    store: Store
    url: str
    receiver: Receiver
    now: list[datetime]
    metrics: Metrics

    def sender(self) -> webhooks.WebhookSender:
        s = webhooks.WebhookSender(
            self.sessions,
            Settings(database_url="sqlite://"),
            metrics=self.metrics,
            clock=lambda: self.now[0],
            rng=lambda: 0.0,
        )
        return s

    def add(self, **kw: Any) -> int:
        with self.sessions() as s, s.begin():
            hook, secret = webhooks.add(s, self.url + "/hook", now=self.now[0], **kw)
            self.receiver.secret = secret
            return hook.id


@pytest.fixture
def env(sessions: sessionmaker[Session], store: Store) -> Iterator[Env]:
    receiver = Receiver()
    with served(receiver.app()) as url:
        # The receiver checks timestamps against its own clock (5 min): ours is near it.
        yield Env(sessions, store, url, receiver, [datetime.now(UTC)], Metrics())


def test_a_changed_day_is_pushed_signed_coalesced_and_versioned(env: Env) -> None:
    env.add()
    sender = env.sender()
    assert sender.run_once() == {}  # nothing changed yet
    env.store.process([msg(event(i, score=4, at=T0)) for i in range(1, 4)])
    assert sender.run_once() == {"sent": 1, "queued": 1}
    [first] = env.receiver.got
    assert first["type"] == "aggregates.day_changed"
    data = first["data"]
    assert (data["centre"], data["marz"], data["day"], data["n"]) == (
        "SH-GYUMRI1",
        "AM-SH",
        "2026-11-24",
        3,
    )
    assert data["scales"] == [
        {"scale": 4, "n": 3, "counts": [0, 0, 0, 3], "csat": 1.0, "csat_ci95": [0.4385, 1.0]}
    ]
    assert env.receiver.headers[-1]["webhook-id"].endswith("/SH-GYUMRI1/2026-11-24:v1")
    env.now[0] += timedelta(seconds=1)
    assert sender.run_once() == {}  # unchanged: nothing again
    env.store.process([msg(event(4, score=1, at=T0))])  # a late press of the same day
    env.now[0] += timedelta(seconds=1)
    assert sender.run_once() == {"sent": 1, "queued": 1}
    assert env.receiver.got[-1]["data"]["n"] == 4
    assert env.receiver.headers[-1]["webhook-id"].endswith(":v2")
    assert env.receiver.forged == 0
    sender.stop()


def test_a_failing_receiver_is_retried_with_backoff_then_parked_on_refusal(env: Env) -> None:
    env.add()
    sender = env.sender()
    env.receiver.answers = [503, 503]
    env.store.process([msg(event(1, at=T0))])
    assert sender.run_once() == {"retry": 1, "queued": 1}
    with env.sessions() as s:
        d = s.scalars(select(WebhookDelivery)).one()
        assert d.state == "pending" and d.last_error == "HTTP 503: busy" and d.last_status == 503
        assert d.next_attempt_at == env.now[0] + timedelta(seconds=5)
    assert sender.run_once() == {}  # not due yet
    env.now[0] += timedelta(seconds=5)
    assert sender.run_once() == {"retry": 1}
    env.now[0] += timedelta(seconds=10)
    assert sender.run_once() == {"sent": 1}
    ids = {h["webhook-id"] for h in env.receiver.headers}
    assert len(ids) == 1  # one idempotency key across the retries
    # A refusal parks the delivery with the reason; an operator re-queues it.
    env.receiver.answers = [400]
    env.store.process([msg(event(2, at=T0))])
    env.now[0] += timedelta(seconds=1)
    assert sender.run_once() == {"parked": 1, "queued": 1}
    with env.sessions() as s:
        d = s.scalars(select(WebhookDelivery)).one()
        assert d.state == "parked" and d.last_error == "HTTP 400: busy"
    assert env.metrics.registry.get_sample_value("gnahat_webhook_parked_deliveries") == 1
    env.now[0] += timedelta(minutes=2)  # (the receiver allows 5 minutes of clock skew)
    assert sender.run_once() == {}  # parked stays parked
    assert sender.retry() == 1
    assert sender.run_once() == {"sent": 1}
    assert env.receiver.got[-1]["data"]["n"] == 2
    sender.stop()


def test_a_receiver_for_some_centres_and_one_that_is_down(env: Env) -> None:
    only_avan = env.add(centres=["ER-AVAN"])
    sender = env.sender()
    env.store.process([msg(event(1, at=T0))])
    env.store.process([msg(event(1, device=AVAN, stream="a", at=T0), device=AVAN)])
    assert sender.run_once() == {"sent": 1, "queued": 1}
    assert [g["data"]["centre"] for g in env.receiver.got] == ["ER-AVAN"]
    with env.sessions() as s:
        keys = list(s.scalars(select(WebhookDelivery.batch_key)))
    assert keys == [f"{only_avan}/ER-AVAN/2026-11-24"]
    with env.sessions() as s, s.begin():
        with pytest.raises(webhooks.WebhookError, match="unknown centre"):
            webhooks.add(s, env.url, centres=["NOWHERE"])
        with pytest.raises(webhooks.WebhookError, match="http"):
            webhooks.add(s, "ftp://example.org/x")
    sender.stop()


def test_a_forged_signature_is_caught_by_the_receiver(env: Env) -> None:
    env.add()
    env.receiver.secret = webhooks.new_secret()  # the receiver holds another secret
    sender = env.sender()
    env.store.process([msg(event(1, at=T0))])
    assert sender.run_once() == {"parked": 1, "queued": 1}  # 401 from the receiver
    assert env.receiver.forged == 1 and env.receiver.got == []
    sender.stop()


def test_webhook_commands(
    env: Env,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    assert main(["webhook", "add", env.url + "/hook", "--name", "analysts"]) == 0
    out = capsys.readouterr().out
    assert "signing secret (shown once; Standard Webhooks): whsec_" in out
    assert main(["webhook", "add", "not a url"]) == 2
    assert main(["webhook", "list"]) == 0
    assert "\tactive\tanalysts\t" in capsys.readouterr().out
    assert main(["webhook", "status"]) == 0
    assert "every delivery delivered" in capsys.readouterr().out
    assert main(["webhook", "retry"]) == 2
    assert main(["webhook", "remove", "1"]) == 0
    assert main(["webhook", "remove", "99"]) == 2


def test_a_delivery_that_fails_for_its_own_reason_is_parked_and_the_next_goes(
    env: Env,
) -> None:
    broken = env.add(centres=["SH-GYUMRI1"])
    with env.sessions() as s, s.begin():  # a secret the signer cannot use (a bad edit)
        hook = s.get(webhooks.Webhook, broken)
        assert hook is not None
        hook.secret = "whsec_not base64!"
    env.add()
    sender = env.sender()
    env.store.process([msg(event(1, at=T0))])
    assert sender.run_once() == {"parked": 1, "sent": 1, "queued": 2}
    assert [g["data"]["centre"] for g in env.receiver.got] == ["SH-GYUMRI1"]
    with env.sessions() as s:
        parked = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == broken)
        ).one()
    assert parked.state == "parked" and "could not be sent" in (parked.last_error or "")
    sender.stop()

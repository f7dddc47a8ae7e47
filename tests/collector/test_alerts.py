"""Alerts: rules against a real database, the lifecycle (open, remind, acknowledge,
close), and notices through the outbox to a local SMTP server (aiosmtpd) and a local
webhook receiver that checks signatures; SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector import hours
from collector.config import Settings
from collector.intake.store import Store
from collector.metrics import Metrics
from collector.models import Alert, AlertNotification, AuditLog
from collector.outbound import alerts
from collector.outbound.alert_engine import AlertEngine
from device import protocol as p
from simulator.broker import free_port
from tests.collector.helpers import DEV, T0, event, msg, served
from tests.collector.test_webhooks import Receiver

# T0 is Tuesday 2026-11-24 10:00 in Yerevan.


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what arrives; refuses recipients at refused.example."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 Message accepted for delivery"


@dataclass
class Env:
    sessions: sessionmaker[Session]
    store: Store
    mailbox: Mailbox
    receiver: Receiver
    hook_url: str
    smtp_port: int
    now: list[datetime]
    metrics: Metrics

    def engine(self, **settings: Any) -> AlertEngine:
        base: dict[str, Any] = {
            "database_url": "sqlite://",
            "smtp_host": "127.0.0.1",
            "smtp_port": self.smtp_port,
            "smtp_from": "alerts@gnahat.example",
        }
        s = Settings(**{**base, **settings})
        return AlertEngine(
            self.sessions, s, metrics=self.metrics, clock=lambda: self.now[0], rng=lambda: 0.0
        )

    def heard(self, at: datetime, **health: Any) -> None:
        """The unit DEV says something at ``at`` (a heartbeat)."""
        h = p.Health(
            device=DEV,
            at=at.isoformat(),
            queue_depth=health.get("queue_depth", 0),
            oldest_unacked_s=health.get("oldest_unacked_s"),
            uptime_s=100.0,
            firmware="1.0",
            clock_synced=health.get("clock_synced", True),
        )
        self.store.process([msg(p.encode_health(h), kind="health", at=at)])

    def recipients(self) -> None:
        with self.sessions() as s, s.begin():
            alerts.add_recipient(s, "email", "manager@gyumri.example", lang="hy",
                                 centres=["SH-GYUMRI1"], now=self.now[0])  # fmt: skip
            _r, secret = alerts.add_recipient(
                s, "webhook", self.hook_url, lang="en", now=self.now[0]
            )
            self.receiver.secret = secret or ""

    def alerts(self) -> list[Alert]:
        with self.sessions() as s:
            rows = list(s.scalars(select(Alert).order_by(Alert.id)))
            s.expunge_all()
        return rows


@pytest.fixture
def env(sessions: sessionmaker[Session], store: Store) -> Iterator[Env]:
    with sessions() as s, s.begin():
        # The demo registry's other 140 units are never heard in these tests: their
        # "never heard" alerts are tested on their own.
        alerts.set_rule(s, "unit_silent", {"never_heard": False}, None, T0)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    receiver = Receiver(fresh=False)  # the engine runs on the test's clock
    try:
        with served(receiver.app()) as url:
            # The receiver checks timestamps against its own clock: ours starts near it.
            yield Env(sessions, store, mailbox, receiver, url + "/hook", port,
                      [datetime.now(UTC)], Metrics())  # fmt: skip
    finally:
        controller.stop()


def test_opening_hours() -> None:
    default = hours.parse("")
    tue = datetime(2026, 11, 24, 10, 0)
    assert default.is_open(tue) and not default.is_open(tue.replace(hour=13, minute=30))
    assert not default.is_open(datetime(2026, 11, 28, 10, 0))  # Saturday
    assert not default.is_open(datetime(2026, 12, 31, 10, 0))  # a public holiday
    assert default.open_minutes_between(tue.replace(hour=12, minute=50),
                                        tue.replace(hour=14, minute=5)) == 15  # fmt: skip
    weekend = hours.parse("Mo-Fr 09:00-18:00; Sa 10:00-14:00; Su off")
    assert weekend.is_open(datetime(2026, 11, 28, 11, 0))
    assert hours.parse("24/7").is_open(datetime(2026, 12, 31, 3, 0))
    for bad in ("Mo-Xx 09:00-18:00", "Mo 18:00-09:00", "Mo 9-18", "09:00-18:00"):
        with pytest.raises(hours.HoursError):
            hours.parse(bad)


def test_a_silent_unit_alerts_once_reminds_until_acknowledged_and_closes(env: Env) -> None:
    base = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # Wednesday 10:00 in Yerevan

    def at(minutes: float) -> datetime:
        return base + timedelta(minutes=minutes)

    env.recipients()
    env.heard(at(0))  # last heard at 10:00
    env.now[0] = at(10)
    engine = env.engine()
    assert engine.run_once() == {}  # 10 minutes: not yet
    env.now[0] = at(25)
    assert engine.run_once() == {"opened": 1, "sent": 2}
    [alert] = env.alerts()
    assert (alert.kind, alert.subject, alert.state) == ("unit_silent", f"unit:{DEV}", "open")
    [mail] = env.mailbox.messages
    assert mail["To"] == "manager@gyumri.example"
    assert "Բացված է" in mail["Subject"] and DEV in mail["Subject"]
    assert "սարքը լռում է աշխատանքային ժամերի 25 րոպե" in mail.get_content()
    # One language and one clock: no English severity, no UTC time beside Yerevan's.
    body = mail.get_content()
    assert "կրիտիկական" in body and "critical" not in body and "Երևանի ժամանակով" in body
    assert "+00:00" not in body and "T" not in body.split("·")[-1]
    [hook] = env.receiver.got
    assert hook["type"] == "alert.opened" and hook["data"]["kind"] == "unit_silent"
    assert "has been silent for 25 minutes" in hook["data"]["text"]["en"]
    env.now[0] = at(40)
    assert engine.run_once() == {}  # still silent: no new notice before the reminder
    env.now[0] = at(90)
    assert engine.run_once() == {"reminded": 1, "sent": 2}
    with env.sessions() as s, s.begin():
        alerts.acknowledge(s, alert.id, "user:anna", "Technician on the way", env.now[0])
        with pytest.raises(ValueError, match="comment is required"):
            alerts.acknowledge(s, alert.id, "user:anna", "  ", env.now[0])
    env.now[0] = at(300)
    assert engine.run_once() == {}  # acknowledged: no more reminders
    env.heard(at(330))  # the unit is back
    env.now[0] = at(331)
    assert engine.run_once() == {"closed": 1, "sent": 2}
    [alert] = env.alerts()
    assert alert.state == "closed" and alert.ack_comment == "Technician on the way"
    assert [m["X-Gnahat-Alert"].split()[-1] for m in env.mailbox.messages] == [
        "opened", "reminder", "closed"]  # fmt: skip
    assert [h["type"] for h in env.receiver.got] == ["alert.opened", "alert.reminder",
                                                      "alert.closed"]  # fmt: skip
    assert env.receiver.forged == 0
    with env.sessions() as s:
        actions = list(s.scalars(select(AuditLog.action).where(AuditLog.action.like("alert.%"))))
    assert actions == ["alert.opened", "alert.acknowledged", "alert.closed"]
    engine.stop()


def test_lunch_evenings_and_overrides(env: Env) -> None:
    env.now[0] = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)  # 14:05 in Yerevan
    env.heard(datetime(2026, 11, 24, 8, 50, tzinfo=UTC))  # 12:50: ten minutes before lunch
    engine = env.engine()
    assert engine.reconcile() == {"opened": 0, "reminded": 0, "closed": 0}  # 15 open minutes
    env.now[0] = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert engine.reconcile()["opened"] == 1
    # The centre asks for more patience: the alert closes under the new rule.
    with env.sessions() as s, s.begin():
        from collector.models import Centre

        gy = s.scalar(select(Centre.id).where(Centre.code == "SH-GYUMRI1"))
        alerts.set_rule(s, "unit_silent", {"minutes": 60}, gy, env.now[0])
        with pytest.raises(ValueError, match="no parameter"):
            alerts.set_rule(s, "unit_silent", {"hours": 1}, gy, env.now[0])
        with pytest.raises(ValueError, match="unknown rule"):
            alerts.set_rule(s, "meteor", {}, None, env.now[0])
    assert engine.reconcile()["closed"] == 1
    engine.stop()


def test_backlog_clock_and_score_rules(env: Env) -> None:
    env.now[0] = T0 + timedelta(minutes=5)
    env.heard(T0, queue_depth=80, oldest_unacked_s=1200, clock_synced=False)
    # Forty dissatisfied visitors at one desk today.
    env.store.process([msg(event(i, score=1, at=T0 - timedelta(hours=1))) for i in range(1, 41)])
    engine = env.engine()
    engine.reconcile()
    found = {(a.kind, a.subject) for a in env.alerts()}
    assert ("unit_backlog", f"unit:{DEV}") in found and ("unit_clock", f"unit:{DEV}") in found
    assert ("dissatisfied", "centre:SH-GYUMRI1") in found
    assert ("dissatisfied", "service:SH-GYUMRI1/SOC_ASSISTANCE") in found
    with env.sessions() as s:
        text = alerts.listing(s, centres=None, states=alerts.ACTIVE, lang="en")
    assert any("100 % of 40 ratings in the last 7 days are dissatisfied" in a["text"]
               for a in text)  # fmt: skip
    engine.stop()


def test_a_drop_against_its_own_history(env: Env) -> None:
    # Four weeks of content visitors, then a week of unhappy ones.
    seq = 0
    for day in range(8, 36):
        env.store.process([msg(event(seq := seq + 1, score=4, at=T0 - timedelta(days=day)))
                           for _ in range(3)])  # fmt: skip
    for day in range(0, 7):
        env.store.process([msg(event(seq := seq + 1, score=2, at=T0 - timedelta(days=day)))
                           for _ in range(6)])  # fmt: skip
    env.now[0] = T0
    engine = env.engine()
    engine.reconcile()
    drops = [a for a in env.alerts() if a.kind == "drop"]
    assert len(drops) == 1 and drops[0].detail["recent"] == "0 %"
    assert drops[0].detail["history"] == "100 %"
    engine.stop()


def test_recipients_choose_centres_and_severity_and_failures_are_kept(env: Env) -> None:
    env.now[0] = T0 + timedelta(minutes=5)
    env.heard(T0, clock_synced=False)  # a warning at Gyumri
    with env.sessions() as s, s.begin():
        alerts.add_recipient(s, "email", "avan@avan.example", centres=["ER-AVAN"], now=T0)
        alerts.add_recipient(s, "email", "boss@ministry.example", min_severity="critical", now=T0)
        alerts.add_recipient(s, "email", "nobody@refused.example", now=T0)
        alerts.add_recipient(s, "email", "ops@ministry.example", min_severity="info", now=T0)
        with pytest.raises(ValueError, match="not an email address"):
            alerts.add_recipient(s, "email", "not an address", now=T0)
        with pytest.raises(ValueError, match="unknown centre"):
            alerts.add_recipient(s, "email", "x@y.example", centres=["NOWHERE"], now=T0)
    engine = env.engine()
    assert engine.run_once() == {"opened": 1, "sent": 1, "parked": 1}
    assert [m["To"] for m in env.mailbox.messages] == ["ops@ministry.example"]
    with env.sessions() as s:
        parked = s.scalars(
            select(AlertNotification).where(AlertNotification.state == "parked")
        ).one()
        assert "SMTP refused the recipient" in (parked.last_error or "")
    # No SMTP server answering: kept and retried, not lost.
    env.heard(T0 + timedelta(minutes=6))  # clears the clock alert
    engine.stop()  # (hands the lease over)
    down = env.engine(smtp_port=free_port())
    out = down.run_once()
    assert out["closed"] == 1 and out["retry"] == 1
    with env.sessions() as s:
        waiting = s.scalars(
            select(AlertNotification).where(AlertNotification.state == "pending")
        ).all()
        # One tried and kept; the other waits its turn (the server is down for all).
        assert sorted(bool(w.last_error) for w in waiting) == [False, True]
    env.now[0] += timedelta(seconds=10)
    down.stop()
    again = env.engine()
    assert again.run_once() == {"sent": 1, "parked": 1}
    again.stop()
    # No SMTP server configured at all: parked with the reason.
    unset = AlertEngine(env.sessions, Settings(database_url="sqlite://"), clock=lambda: env.now[0])
    env.heard(T0 + timedelta(minutes=7), clock_synced=False)
    assert unset.run_once()["parked"] == 2  # both email recipients
    with env.sessions() as s:
        last = s.scalars(select(AlertNotification).order_by(AlertNotification.id.desc())).first()
        assert last is not None and "no SMTP server configured" in (last.last_error or "")
    unset.stop()


def test_opening_hours_in_the_registry_are_checked(sessions: sessionmaker[Session]) -> None:
    from collector.models import Centre
    from collector.registry import RegistryImportError, import_registry

    head = "code,name_hy,name_en,marz,community,hours\n"
    with sessions() as s, pytest.raises(RegistryImportError) as caught:
        import_registry(s, {"centres": head + "SH-GYUMRI1,Գ,G,AM-SH,Գ,Mo 18:00-09:00\n"})
    assert "centres.csv line 2, column hours: '18:00-09:00'" in str(caught.value)
    with sessions() as s, s.begin():
        import_registry(s, {"centres": head + "SH-GYUMRI1,Գ,G,AM-SH,Գ,Mo-Sa 09:00-18:00\n"})
    with sessions() as s:
        assert s.scalar(select(Centre.hours).where(Centre.code == "SH-GYUMRI1")) == (
            "Mo-Sa 09:00-18:00"
        )


def test_alert_commands(
    env: Env, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from collector.cli import main

    monkeypatch.setenv("GNAHAT_DATABASE_URL", database_url)
    monkeypatch.setenv("GNAHAT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GNAHAT_SMTP_PORT", str(env.smtp_port))
    assert main(["alert", "rule", "unit_silent", "minutes=5", "--centre", "SH-GYUMRI1"]) == 0
    assert main(["alert", "rule", "unit_silent", "hours=5"]) == 2
    assert "no parameter hours" in capsys.readouterr().err
    assert main(["alert", "rules"]) == 0
    assert "unit_silent\tSH-GYUMRI1\t{'minutes': 5}" in capsys.readouterr().out
    assert main(["alert", "recipient", "add", "email", "it@gyumri.example", "--lang", "en"]) == 0
    assert main(["alert", "recipient", "add", "webhook", "ftp://x"]) == 2
    assert main(["alert", "recipient", "list"]) == 0
    assert "\tactive\temail\tit@gyumri.example\ten\twarning+" in capsys.readouterr().out
    env.heard(datetime.now(UTC) - timedelta(days=10))  # silent for days of opening time
    assert main(["alert", "run"]) == 0
    assert "'opened': 1" in capsys.readouterr().out
    assert len(env.mailbox.messages) == 1
    assert main(["alert", "list"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("1\topen\tcritical\tSH-GYUMRI1\t")
    assert main(["alert", "ack", "1", "--comment", "cable replaced", "--by", "aram"]) == 0
    assert main(["alert", "ack", "9", "--comment", "x"]) == 2
    assert main(["alert", "recipient", "remove", "1"]) == 0


def test_weekly_and_daily_digests_once_per_period(env: Env) -> None:
    # Ratings on Tuesday 24 Nov; the digest of that week is due on Monday 30 Nov at 07:00.
    env.store.process([msg(event(i, score=4 if i % 3 else 1, at=T0)) for i in range(1, 13)])
    env.store.process([msg(event(i, score=4, at=T0 - timedelta(days=1))) for i in range(13, 16)])
    with env.sessions() as s, s.begin():
        alerts.set_rule(s, "unit_silent", {"enabled": False}, None, T0)  # not about units
        alerts.add_recipient(s, "email", "anna@gyumri.example", lang="hy",
                             centres=["SH-GYUMRI1"], digest="weekly", now=T0)  # fmt: skip
        alerts.add_recipient(s, "email", "aram@ministry.example", lang="en", digest="daily",
                             min_severity="critical", now=T0)  # fmt: skip
        with pytest.raises(ValueError, match="digest is daily or weekly"):
            alerts.add_recipient(s, "webhook", "http://x.example/h", digest="weekly", now=T0)
    env.now[0] = datetime(2026, 11, 30, 2, 59, tzinfo=UTC)  # 06:59 in Yerevan: not yet
    engine = env.engine()
    assert engine.run_once() == {}
    env.now[0] = datetime(2026, 11, 30, 3, 1, tzinfo=UTC)
    assert engine.run_once() == {"digests": 2, "digest_sent": 2}
    by_to = {m["To"]: m for m in env.mailbox.messages}
    weekly = by_to["anna@gyumri.example"]
    assert weekly["Subject"] == "[Գնահատ] 2026-11-23–2026-11-29 շաբաթվա գնահատականները"
    body = weekly.get_body(("plain",)).get_content()
    assert "Տարածքային կենտրոն «Գյումրի 1»․ 15 գնահատական, գոհ՝ 73 %" in body
    assert "Բաց ազդանշաններ չկան։" in body
    [picture] = [p for p in weekly.iter_attachments()]
    assert picture.get_content_type() == "image/svg+xml"
    assert picture.get_filename() == "SH-GYUMRI1-2026-11-23-2026-11-29.svg"
    assert b'role="img"' in picture.get_content()
    daily = by_to["aram@ministry.example"]
    assert daily["Subject"] == "[Gnahat] Ratings of 2026-11-29"
    assert "Every centre" in daily.get_content() and "no ratings" in daily.get_content()
    env.now[0] += timedelta(hours=3)
    assert engine.run_once() == {}  # once per period
    env.now[0] = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    assert engine.run_once() == {"digests": 1, "digest_sent": 1}  # the next day's daily
    engine.stop()


def test_ratings_right_after_a_staff_login_are_worth_a_look(env: Env) -> None:
    def at(seq: int, seconds: float) -> datetime:
        """The helper dates seq N at ``at`` + N minutes: undo that."""
        return T0 + timedelta(seconds=seconds) - timedelta(minutes=seq)

    login = event(1, at=at(1, 0), type=p.EventType.STAFF_LOGIN, score=None, scale=None,
                  staff="C885715134")  # fmt: skip
    quick = [event(i, score=4, at=at(i, 3 * i)) for i in range(2, 8)]  # 6 within 21 s
    later = [event(i, score=4, at=at(i, 600 + i)) for i in range(8, 12)]  # ten minutes on
    env.store.process([msg(e) for e in (login, *quick, *later)])
    env.now[0] = T0 + timedelta(hours=1)
    engine = env.engine()
    with env.sessions() as s, s.begin():
        alerts.set_rule(s, "unit_silent", {"enabled": False}, None, T0)
    engine.reconcile()
    [alert] = [a for a in env.alerts() if a.kind == "after_login"]
    assert alert.subject == f"unit:{DEV}" and alert.severity == "info"
    assert alert.detail["count"] == 5  # seqs 2..6: 6, 9, 12, 15, 18 s after (7 is at 21 s)
    assert "5 ratings today came within 20 s of a staff login" in alerts.render(
        alert.kind, alert.detail, "en"
    )
    engine.stop()


def test_acknowledging_over_the_api_refuses_unknown_closed_and_foreign_alerts(
    env: Env, database_url: str
) -> None:
    from fastapi.testclient import TestClient

    from collector.edge.auth import Role, create_token
    from collector.main import create_app
    from collector.models import Centre

    with env.sessions() as s, s.begin():
        gy = s.scalar(select(Centre.id).where(Centre.code == "SH-GYUMRI1"))
        for state in ("open", "closed"):
            s.add(Alert(kind="unit_clock", subject=f"unit:{DEV}:{state}", centre_id=gy,
                        severity="warning", state=state, detail={}, opened_at=T0, seen_at=T0,
                        notices=1))  # fmt: skip
        own = create_token(s, name="a", role=Role.MANAGER, centres=["SH-GYUMRI1"])[1]
        other = create_token(s, name="b", role=Role.MANAGER, centres=["ER-AVAN"])[1]
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as c:

        def ack(alert_id: int, token: str, comment: str = "on it") -> int:
            return c.post(
                f"/api/v1/alerts/{alert_id}/ack",
                json={"comment": comment},
                headers={"Authorization": f"Bearer {token}"},
            ).status_code

        assert ack(99, own) == 404
        assert ack(1, other) == 403  # another centre's manager
        assert ack(1, own, "") == 422  # a comment is required
        assert ack(2, own) == 409  # closed already
        assert ack(1, own) == 200
        listed = c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {own}"}).json()
        assert [a["state"] for a in listed["alerts"]] == ["acknowledged"]
        assert c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {other}"}).json() == {
            "alerts": []
        }


def test_a_unit_never_heard_is_an_alert_from_its_first_day(env: Env) -> None:
    """Assigned to a desk, silent through its opening hours, never heard at all: an
    alert from the first day (counted from its assignment), said as "never heard"."""
    from sqlalchemy import update

    from collector.models import Assignment, Device

    with env.sessions() as s, s.begin():
        alerts.set_rule(s, "unit_silent", {"never_heard": True}, None, T0)
        placed = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # Wednesday 09:00 in Yerevan
        s.execute(update(Assignment).values(valid_from=placed))
        s.execute(update(Device).values(created_at=placed - timedelta(days=30)))
    env.heard(datetime(2026, 11, 25, 5, 30, tzinfo=UTC))  # DEV talks; the others are silent
    env.now[0] = datetime(2026, 11, 25, 5, 15, tzinfo=UTC)  # 15 minutes: not yet
    engine = env.engine()
    assert engine.reconcile().get("opened", 0) == 0
    env.now[0] = datetime(2026, 11, 25, 5, 25, tzinfo=UTC)  # 25 minutes of opening time
    opened = engine.reconcile()["opened"]
    with env.sessions() as s:
        assigned = s.scalar(select(func.count()).select_from(Assignment))
        silent = [a for a in env.alerts() if a.kind == "unit_silent"]
    assert opened == len(silent) == assigned - 1  # all but the one heard (at 09:30 later)
    never = [a for a in silent if a.detail.get("never")]
    assert len(never) == len(silent)
    text = alerts.render("unit_silent", never[0].detail, "en")
    assert "has never been heard" in text and "since it was placed there (2026-11-25 09:00)" in text
    assert "երբեք" in alerts.render("unit_silent", never[0].detail, "hy")
    engine.stop()

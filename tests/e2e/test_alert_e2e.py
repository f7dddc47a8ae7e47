"""A unit goes silent during opening hours: within the configured time one email reaches a
local SMTP server and one signed webhook a local receiver; the alert closes when the unit
comes back. Real broker, real unit process, real collector ingest, real database."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from collector.config import Settings
from collector.models import Alert, Centre, DeviceState
from collector.outbound import alerts
from collector.outbound.alert_engine import AlertEngine
from simulator.broker import MosquittoBroker, free_port
from simulator.units import UnitProcess, unit_config
from tests.collector.helpers import served
from tests.collector.test_alerts import Mailbox
from tests.collector.test_webhooks import Receiver
from tests.e2e.conftest import CollectorHandle

DEV = "am-lo-vanadzor-d02"
CENTRE = "LO-VANADZOR"
SILENT_S = 6.0


def until(condition: object, seconds: float, step: object = None) -> bool:
    """Run ``step`` and check ``condition`` until it holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    while time.monotonic() < deadline:
        if step is not None:
            step()  # type: ignore[operator]
        if condition():  # type: ignore[operator]
            return True
        pause.wait(0.2)
    return False


def test_a_silent_unit_reaches_email_and_webhook_once_and_closes(
    broker: MosquittoBroker, collector: CollectorHandle, tmp_path: Path
) -> None:
    sessions = collector.sessions
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    receiver = Receiver()  # checks signatures and timestamps against the wall clock
    now = datetime.now(UTC)
    with sessions() as s, s.begin():
        # Open around the clock, so "during opening hours" holds whenever this runs.
        s.execute(update(Centre).where(Centre.code == CENTRE).values(hours="24/7"))
        centre_id = s.scalar(select(Centre.id).where(Centre.code == CENTRE))
        alerts.set_rule(s, "unit_silent", {"minutes": SILENT_S / 60}, centre_id, now)
        # The registry's other units never connect here (their own alerts are tested
        # in tests/collector/test_alerts.py).
        alerts.set_rule(s, "unit_silent", {"never_heard": False}, None, now)
        alerts.add_recipient(s, "email", "manager@vanadzor.example", lang="hy",
                             centres=[CENTRE], now=now)  # fmt: skip
    unit: UnitProcess | None = None
    engine: AlertEngine | None = None
    try:
        with served(receiver.app()) as url:
            with sessions() as s, s.begin():
                _r, secret = alerts.add_recipient(s, "webhook", url + "/hook", now=now)
                receiver.secret = secret or ""
            collector.start()
            cfg = unit_config(
                tmp_path / "unit.toml",
                device_id=DEV,
                broker_host=broker.host,
                broker_port=broker.port,
                outbox=tmp_path / "outbox.db",
                health_interval_s=1.0,
            )
            unit = UnitProcess(cfg).start()

            def heard_since(t: datetime) -> bool:
                with sessions() as s:
                    seen = s.scalar(select(DeviceState.last_seen).where(DeviceState.device == DEV))
                return seen is not None and seen >= t

            assert until(lambda: heard_since(now), 30), "the unit never reached the collector"
            engine = AlertEngine(
                sessions,
                Settings(
                    database_url=collector.settings.database_url,
                    smtp_host="127.0.0.1",
                    smtp_port=smtp_port,
                    alert_renotify_s=3600,
                ),
            )
            assert engine.run_once() == {}  # talking: nothing to say
            unit.kill()  # unplugged in the busy hour
            silenced = time.monotonic()
            assert until(lambda: mailbox.messages and receiver.got, SILENT_S + 30, engine.run_once)
            waited = time.monotonic() - silenced
            assert SILENT_S <= waited < SILENT_S + 30
            for _ in range(5):  # more rounds while it stays silent: nothing more goes out
                engine.run_once()
            assert len(mailbox.messages) == 1 and len(receiver.got) == 1
            assert DEV in mailbox.messages[0]["Subject"]
            assert receiver.got[0]["data"]["kind"] == "unit_silent"
            assert receiver.forged == 0
            back = datetime.now(UTC)
            unit = UnitProcess(cfg).start()  # plugged back in
            assert until(lambda: heard_since(back), 30)

            def closed() -> bool:
                with sessions() as s:
                    return s.scalar(select(Alert.state).where(Alert.kind == "unit_silent")) == (
                        "closed"
                    )

            assert until(closed, 30, engine.run_once)
            assert until(lambda: len(mailbox.messages) == 2 and len(receiver.got) == 2, 10,
                         engine.run_once)  # fmt: skip
            assert receiver.got[1]["type"] == "alert.closed"
            with sessions() as s:
                assert len(s.scalars(select(Alert)).all()) == 1
    finally:
        if unit is not None:
            unit.stop()
        if engine is not None:
            engine.stop()
        smtp.stop()

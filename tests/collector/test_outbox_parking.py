"""An outbox row that fails for a reason of its own is parked with that reason, and the
rows behind it still go: mail, webhooks and forwarding never stop at one odd row. Text
that would break a mail header is refused at registry import and never reaches one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from collector.models import AlertNotification, Assignment
from collector.outbound import alerts
from collector.registry import RegistryImportError, import_registry
from tests.collector.helpers import DEV
from tests.collector.test_alerts import Env, env  # noqa: F401  (env is a fixture)


def test_a_registry_value_with_a_line_break_is_refused_at_import(
    sessions: sessionmaker[Session],
) -> None:
    head = "code,name_hy,name_en,marz,community\n"
    row = 'SH-GYUMRI1,Գյումրի,"Gyumri\nterritorial centre",AM-SH,Գյումրի\n'
    with sessions() as s, pytest.raises(RegistryImportError) as caught:
        import_registry(s, {"centres": head + row})
    message = str(caught.value)
    assert "centres.csv line 3, column name_en" in message and "line break" in message
    tab = "SH-GYUMRI1,Գյումրի,Gyumri\tcentre,AM-SH,Գյումրի\n"
    with sessions() as s, pytest.raises(RegistryImportError, match="column name_en"):
        import_registry(s, {"centres": head + tab})


def test_one_notice_that_cannot_be_sent_is_parked_and_the_rest_go(env: Env) -> None:  # noqa: F811
    base = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # Wednesday 10:00 in Yerevan
    env.recipients()
    with env.sessions() as s, s.begin():
        alerts.add_recipient(s, "email", "deputy@gyumri.example", lang="en",
                             centres=["SH-GYUMRI1"], now=base)  # fmt: skip
        # Stored before the import check existed: a desk name with a line break, which a
        # mail header cannot hold.
        s.execute(update(Assignment).where(Assignment.device_id == DEV).values(desk="03\nB"))
    env.heard(base)
    env.now[0] = base + timedelta(minutes=25)
    engine = env.engine()
    engine.reconcile()
    with env.sessions() as s, s.begin():
        first = s.scalars(select(AlertNotification).order_by(AlertNotification.id)).first()
        assert first is not None
        first.payload = {**first.payload, "data": {}}  # a row the sender cannot read
        broken = first.id
    outcomes: dict[str, Any] = engine.send_due()
    assert outcomes == {"parked": 1, "sent": 2}
    [mail] = env.mailbox.messages  # the other recipient's, with its header on one line
    assert "\n" not in mail["Subject"] and "desk 03 B" in mail["Subject"]
    assert len(env.receiver.got) == 1
    with env.sessions() as s:
        row = s.get(AlertNotification, broken)
        assert row is not None and row.state == "parked"
        assert "could not be sent: KeyError" in (row.last_error or "")
    engine.stop()

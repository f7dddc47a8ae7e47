"""The phone channel is the collector's alone: a unit's real credential, on a Mosquitto
started with the provisioned configuration and ACL, can neither take seqs of the desk's
phone stream nor forge ``channel: online`` ratings, and the visitors' ratings that
follow are stored."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from collector.config import Settings as CollectorSettings
from collector.edge import online
from collector.main import create_app
from collector.models import Event, Quarantine
from device import protocol as p
from tests.collector.helpers import T0, event, replace, served
from tests.provisioning.test_broker_security import (  # noqa: F401  (env is a fixture)
    CENTRE,
    Env,
    collector_ingest,
    connect,
    env,
    unit_password,
)

SECRET = "reserved-test-secret-0123456789abcdef"


def test_a_unit_credential_cannot_take_or_forge_phone_ratings(env: Env) -> None:  # noqa: F811
    b = env.prov.add_unit(CENTRE, 38, service="EMPLOYMENT", now=T0 - timedelta(days=1))
    other = env.prov.add_unit(CENTRE, 39, service="EMPLOYMENT", now=T0 - timedelta(days=1))
    ing = collector_ingest(env)
    client, reason = connect(env, b.device, unit_password(env, b.device))
    assert client is not None, reason
    acks: list[p.Ack] = []
    arrived = threading.Condition()

    def on_message(c: Any, u: Any, m: Any) -> None:
        with arrived:
            acks.append(p.decode_ack(m.payload))
            arrived.notify_all()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(p.ack_topic(b.device), qos=1)
    assert subscribed.wait(10)
    online_field = {"channel": "online"}
    forged = [
        # Seq 1 of the phone stream: were it stored, the next visitor would be told
        # "received" while their rating was taken for a duplicate of this one.
        replace(event(1, device=b.device, stream="web", score=1), **online_field),
        # "online" ratings on its own stream: unlimited, outside every phone limit.
        replace(event(1, device=b.device, score=1), **online_field),
        event(2, device=b.device, score=4),  # a real press beside them
    ]
    client.publish(p.event_topic(b.device), p.encode_batch(forged), qos=1)
    # The ACL: another unit's topic, phone stream and all, is not the unit's to write.
    client.publish(
        p.event_topic(other.device),
        p.encode_event(replace(event(1, device=other.device, stream="web"), **online_field)),
        qos=1,
    )

    def acked(stream: str, seq: int) -> bool:
        return any(a.stream == stream and a.covers(seq) for a in acks)

    with arrived:  # quarantined is durably kept: acknowledged, never re-sent for ever
        assert arrived.wait_for(lambda: acked("web", 1) and acked("s1", 1) and acked("s1", 2), 15)
    client.disconnect()
    ing.stop()
    with env.sessions() as s:
        held = s.execute(select(Quarantine.reason, Quarantine.device, Quarantine.stream)).all()
        stored = s.execute(select(Event.device, Event.stream, Event.seq, Event.channel)).all()
    assert sorted(held) == [
        ("reserved_channel", b.device, "s1"),
        ("reserved_channel", b.device, "web"),
    ]
    assert stored == [(b.device, "s1", 2, "counter")]

    app = create_app(CollectorSettings(database_url=env.url, secret_key=SECRET,
                                       alerts_enabled=False))  # fmt: skip
    noon = T0 + timedelta(hours=2)
    app.state.gnahat.clock = lambda: noon
    with served(app) as base, httpx.Client(base_url=base) as phone:
        path = f"/r/{online.desk_token(SECRET, b.device)}"
        page = phone.get(path, params={"c": online.desk_code(SECRET, b.device, noon)})
        visit = page.text.split('name="visit" value="', 1)[1].split('"', 1)[0]
        r = phone.post(path, data={"visit": visit, "score": "3", "lang": "en"})
        assert r.status_code == 200 and "received" in r.text
    with env.sessions() as s:
        web = s.execute(
            select(Event.stream, Event.seq, Event.channel, Event.score).where(Event.stream == "web")
        ).all()
    assert web == [("web", 1, "online", 3)]  # the visitor's, stored

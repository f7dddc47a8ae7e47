"""The link's figures and pacing when the collector does not answer, and after a reboot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device import protocol as p
from device.link import DEAF_FACTOR, MAX_RESEND_FACTOR, Link
from simulator.broker import MosquittoBroker
from tests.device.helpers import DEV, clock, config, make_unit, with_broker
from tests.mqtt_helpers import Recorder, publisher


def test_oldest_unacked_after_a_reboot_is_never_negative(mock_factory: Any, tmp_path: Path) -> None:
    clk = clock()
    cfg = config(tmp_path)
    unit, outbox, _ = make_unit(cfg, mock_factory, clk)
    clk.advance(3_600_000)  # the first boot ran an hour before the press
    unit.press(4)
    clk.advance(10_000)
    same_boot = Link(cfg, outbox, clk, boot="boot1")
    assert same_boot.oldest_unacked_s() == (10.0, False)

    # Power cut: the monotonic clock starts again near zero; the wall clock is synced.
    clk.mono = 2_000
    clk.advance(20_000)
    after = Link(cfg, outbox, clk, boot="boot2")
    age, lower = after.oldest_unacked_s()
    assert age is not None and age >= 30.0 and not lower  # 10 s + 20 s, from the wall clock

    # Unsynced after the reboot: only "at least this boot's uptime" is known, and said so.
    clk.is_synced = False
    clk.advance(5_000)
    age, lower = after.oldest_unacked_s()
    assert lower and age == 5.0
    h = p.decode_health(after.health_payload(), topic_device=DEV)
    assert h.oldest_unacked_s is not None and h.oldest_unacked_s >= 0
    assert h.extra["oldest_unacked_lower_bound"] is True


def test_resends_back_off_while_no_ack_comes_and_reset_on_one(
    mock_factory: Any, tmp_path: Path, broker: MosquittoBroker
) -> None:
    clk = clock()
    cfg = config(tmp_path)
    unit, outbox, _ = make_unit(cfg, mock_factory, clk)
    unit.press(3)
    seen = Recorder(broker, [p.event_topic(DEV)], client_id="seen")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEV, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    link = Link(cfg, outbox, clk, boot="boot1")
    link.client = client
    link.connected.set()
    base = int(cfg.mqtt.ack_timeout_s * 1000)

    link._step()  # first send
    assert seen.wait_for(lambda m: len(m) == 1)
    waits = []
    for _ in range(8):  # no collector: each round waits twice as long as the last
        clk.advance(link.resend_wait_ms - 1)
        link._step()
        sent = link.published
        clk.advance(1)
        waits.append(link.resend_wait_ms)
        link._step()
        assert link.published == sent + 1
    assert waits[0] == base
    assert waits[1:4] == [base * 2, base * 4, base * 8]
    assert max(waits) == base * MAX_RESEND_FACTOR
    assert seen.wait_for(lambda m: len(m) == 9)

    link._inbox.put((p.ack_topic(DEV), p.encode_ack(p.Ack(outbox.stream, ((1, 1),)))))
    link._handle_inbox()
    assert link.resend_wait_ms == base and outbox.depth == 0
    client.disconnect()
    client.loop_stop()
    seen.close()


def test_a_link_that_hears_no_ack_for_long_starts_a_new_connection_at_the_next_broker(
    mock_factory: Any, tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A connection the broker keeps open but no longer delivers acks on (a broker-side
    session gone wrong) must not hold a unit's events for ever: after DEAF_FACTOR times
    the longest re-send wait without an ack, the link starts a new client at the next
    endpoint, which sends everything again; an ack then empties the outbox and the
    watchdog rests."""
    clk = clock()
    cfg = with_broker(
        config(tmp_path), broker.host, broker.port, brokers=(("localhost", broker.port),)
    )
    unit, outbox, _ = make_unit(cfg, mock_factory, clk)
    seen = Recorder(broker, [p.event_topic(DEV), p.status_topic(DEV)], client_id="seen")

    def sent(msgs: list[tuple[str, bytes]]) -> int:
        return sum(1 for t, _ in msgs if t == p.event_topic(DEV))

    def online(msgs: list[tuple[str, bytes]]) -> int:
        return sum(1 for t, b in msgs if t == p.status_topic(DEV) and b"online" in b)

    link = Link(cfg, outbox, clk, boot="boot1")
    link.start()
    try:
        assert link.connected.wait(10)
        unit.press(3)
        link.wake()
        assert seen.wait_for(lambda m: sent(m) == 1 and online(m) == 1)
        assert link.failover is not None and link.failover.index == 0

        deaf_ms = int(cfg.mqtt.ack_timeout_s * 1000 * MAX_RESEND_FACTOR * DEAF_FACTOR)
        clk.advance(deaf_ms)  # no collector: nothing but re-sends for that long
        link.wake()
        assert seen.wait_for(lambda m: online(m) == 2 and sent(m) >= 2)
        assert link.restarts == 1 and link.failover.index == 1  # localhost, the next one

        ack = publisher(broker, client_id="collector")
        ack.publish(
            p.ack_topic(DEV), p.encode_ack(p.Ack(outbox.stream, ((1, 1),))), qos=1
        ).wait_for_publish(10)
        assert link.wait_until_drained(10)
        clk.advance(deaf_ms * 3)  # nothing held: silence is not deafness
        link._watch_deafness(clk.mono_ms())
        assert link.restarts == 1
        ack.disconnect()
        ack.loop_stop()
    finally:
        link.stop()
        seen.close()


def test_a_refused_unit_backs_off_growing_with_jitter_to_a_cap(
    mock_factory: Any, tmp_path: Path, broker_factory: Any
) -> None:
    """A unit whose credential the broker refuses (a rotated password, a revoked unit)
    waits longer after each refusal, each wait drawn from the upper half of a doubling
    ceiling capped at ``reconnect_max_s``, instead of knocking every second for ever."""
    import random
    import threading
    from dataclasses import replace

    from device.config import MqttConfig
    from provisioning.broker import mosquitto_hash

    passwords = tmp_path / "passwd"
    passwords.write_text(f"{DEV}:{mosquitto_hash('the-right-one')}\n")
    refusing = broker_factory(tmp_path / "auth", password_file=passwords)
    refusing.start()
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    clk = clock()
    cfg = config(tmp_path)
    cfg = replace(cfg, mqtt=MqttConfig(host=refusing.host, port=refusing.port, username=DEV,
                                       password_file=str(wrong), reconnect_max_s=60))  # fmt: skip
    _unit, outbox, _ = make_unit(cfg, mock_factory, clk)
    link = Link(cfg, outbox, clk, boot="boot1", rng=random.Random(7))
    refused = threading.Condition()
    waits: list[int] = []
    grow = link._grow_backoff

    def record(client: Any) -> int:
        wait = grow(client)
        with refused:
            waits.append(wait)
            refused.notify_all()
        return wait

    link._grow_backoff = record  # type: ignore[method-assign]
    link.start()
    try:
        with refused:  # the broker's first two refusals, as they come
            assert refused.wait_for(lambda: len(waits) >= 2, 20)
    finally:
        link.stop()
    assert not link.connected.is_set() and link.reconnect_failures >= 2
    assert waits[0] == 1 and 1 <= waits[1] <= 2
    # The policy from there on, on the same client (no waiting: the waits it sets).
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="policy", protocol=mqtt.MQTTv311)
    link.reconnect_failures = 0
    link._grow_backoff = grow  # type: ignore[method-assign]
    chosen = [grow(client) for _ in range(12)]
    ceilings = [min(60, 2**i) for i in range(12)]
    assert all(c / 2 - 0.5 <= w <= c for w, c in zip(chosen, ceilings, strict=True)), chosen
    assert chosen[-1] >= 30 and client._reconnect_min_delay == chosen[-1]  # paho waits that

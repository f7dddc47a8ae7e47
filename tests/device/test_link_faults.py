"""The link's figures and pacing when the collector does not answer, and after a reboot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device import protocol as p
from device.link import MAX_RESEND_FACTOR, Link
from simulator.broker import MosquittoBroker
from tests.device.helpers import DEV, clock, config, make_unit
from tests.mqtt_helpers import Recorder


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

"""A paced MQTT load generator in its own process (so it does not share the collector's GIL).

``python -m bench.loadgen HOST PORT RATE SECONDS STREAM`` publishes rating events of the
demo units at RATE events/s and prints ``{"device seq": sent_unix_time, ...}`` at the end.
"""

from __future__ import annotations

import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_collector import DEVICES, payloads


def main() -> None:
    host, port, rate, seconds, stream = sys.argv[1:6]
    msgs = payloads(int(float(rate) * float(seconds)), stream=stream)
    pub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"loadgen-{stream}", protocol=mqtt.MQTTv311
    )
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(host, int(port))
    pub.loop_start()
    sent: dict[str, float] = {}
    infos = []
    r = float(rate)
    t0 = time.perf_counter()
    for i, (topic, body) in enumerate(msgs):
        delay = t0 + i / r - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for a result
        sent[f"{DEVICES[i % len(DEVICES)]} {i // len(DEVICES) + 1}"] = time.time()
        infos.append(pub.publish(topic, body, qos=1))
    for info in infos:
        info.wait_for_publish(60)  # all of them reach the broker before we hang up
    pub.disconnect()
    pub.loop_stop()
    json.dump(sent, sys.stdout)


if __name__ == "__main__":
    main()

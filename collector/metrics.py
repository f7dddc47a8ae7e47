"""Prometheus metrics of one collector process (its own registry, so tests can have many)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:  # the store's result type only: metrics import nothing of a part
    from collector.intake.store import BatchResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "gnahat_events_received_total",
            "Events (and unreadable event payloads) received",
            registry=r,
        )
        self.stored = Counter("gnahat_events_stored_total", "Events newly stored", registry=r)
        self.duplicates = Counter(
            "gnahat_events_duplicate_total",
            "Events received again and dropped as duplicates",
            registry=r,
        )
        self.quarantined = Counter(
            "gnahat_events_quarantined_total",
            "Messages or events quarantined, by reason",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "gnahat_ingest_batch_seconds",
            "Time to commit one ingest batch",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "gnahat_ingest_batch_messages",
            "Messages per ingest batch",
            registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
        )
        self.acks = Counter("gnahat_acks_published_total", "Ack messages published", registry=r)
        self.writer_failures = Counter(
            "gnahat_ingest_writer_failures_total",
            "Errors that escaped an ingest writer round (it went on; see the log)",
            registry=r,
        )
        self.online_ratings = Counter(
            "gnahat_online_ratings_total", "Ratings taken on visitors' phones", registry=r
        )
        self.online_refused = Counter(
            "gnahat_online_refused_total",
            "Online ratings refused, by reason (forged, expired, replayed, flood, ...)",
            ["reason"],
            registry=r,
        )
        self.db_errors = Counter(
            "gnahat_ingest_db_errors_total",
            "Batches that failed to commit and were retried",
            registry=r,
        )
        self.isolated = Counter(
            "gnahat_ingest_isolated_total",
            "Messages or elements the database (or a defect) refused, quarantined on their own",
            ["reason"],
            registry=r,
        )
        self.acks_dropped = Counter(
            "gnahat_acks_dropped_total",
            "Ack messages not handed to the broker (receiver gone); the units re-send",
            registry=r,
        )
        self.quarantine_bytes_cut = Counter(
            "gnahat_quarantine_bytes_cut_total",
            "Payload bytes beyond the kept prefix of quarantined messages (not stored)",
            registry=r,
        )
        self.retained_ignored = Counter(
            "gnahat_retained_events_ignored_total",
            "Retained copies on event topics (replays at subscribe), acknowledged and dropped",
            registry=r,
        )
        self.qos0_dropped = Counter(
            "gnahat_qos0_dropped_total",
            "QoS 0 messages (health) dropped while the writer was not taking any",
            registry=r,
        )
        self.receiver_restarts = Counter(
            "gnahat_receiver_restarts_total",
            "MQTT receiver processes restarted after dying",
            registry=r,
        )
        self.queue_depth = Gauge(
            "gnahat_ingest_queue_depth", "Messages received and waiting for the writer", registry=r
        )
        self.forward_pushes = Counter(
            "gnahat_forward_pushes_total",
            "Pushes to the M&E IS by outcome (sent, retry, refused, locked, parked)",
            ["outcome"],
            registry=r,
        )
        self.forward_pending = Gauge(
            "gnahat_forward_pending_batches", "Batches waiting to be pushed", registry=r
        )
        self.forward_parked = Gauge(
            "gnahat_forward_parked_batches",
            "Batches the M&E IS refused, waiting for an operator",
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "gnahat_webhook_deliveries_total",
            "Webhook deliveries by outcome (sent, retry, parked)",
            ["outcome"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "gnahat_webhook_pending_deliveries", "Webhook deliveries waiting", registry=r
        )
        self.webhook_parked = Gauge(
            "gnahat_webhook_parked_deliveries",
            "Webhook deliveries refused by their receiver, waiting for an operator",
            registry=r,
        )
        self.alert_notices = Counter(
            "gnahat_alert_notices_total",
            "Alert notices by channel and outcome (sent, retry, parked)",
            ["channel", "outcome"],
            registry=r,
        )
        self.alerts_open = Gauge(
            "gnahat_alerts_open", "Alerts open and not acknowledged", registry=r
        )
        self.alert_notices_parked = Gauge(
            "gnahat_alert_notices_parked",
            "Alert notices refused for good (a bad address, no SMTP server)",
            registry=r,
        )
        self.forward_locked = Gauge(
            "gnahat_forward_locked_batches",
            "Batches whose period the M&E IS has closed (expired, approved)",
            registry=r,
        )
        self.forward_oldest_pending = Gauge(
            "gnahat_forward_oldest_pending_seconds",
            "Age of the oldest batch waiting to be pushed",
            registry=r,
        )
        self.devices_online = Gauge(
            "gnahat_devices_online", "Units whose status is online", registry=r
        )
        self.mqtt_connected = Gauge(
            "gnahat_mqtt_connected", "1 while connected to the broker", registry=r
        )

    def record(self, result: BatchResult, seconds: float, size: int) -> None:
        self.received.inc(result.received)
        self.stored.inc(result.stored)
        self.duplicates.inc(result.duplicates)
        for reason, n in result.quarantined.items():
            self.quarantined.labels(reason=reason).inc(n)
        if result.quarantine_bytes_cut:
            self.quarantine_bytes_cut.inc(result.quarantine_bytes_cut)
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)

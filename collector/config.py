"""Collector settings: environment variables ``GNAHAT_*`` or a ``.env``-style file.

The table in docs/operations.md lists every setting; a test keeps them equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me"
DEV_PSEUDONYM_KEY = "dev-only-pseudonym-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GNAHAT_", env_file=None, extra="ignore", validate_default=True
    )

    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses development defaults for secrets."
    )
    database_url: str = Field(
        "sqlite:///gnahat.db",
        description="SQLAlchemy URL: `sqlite:///path.db` or `postgresql+psycopg://...`.",
    )
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker: `mqtt://host:port` or `mqtts://host:port` (TLS); a broker "
        "cluster: its nodes, comma-separated (`mqtt://a:1883,mqtt://b:1883`), tried in turn.",
    )
    mqtt_username: str | None = Field(None, description="Collector's broker account.")
    mqtt_password: str | None = Field(None, description="Password of the broker account.")
    mqtt_ca_file: str | None = Field(None, description="CA bundle for `mqtts://`.")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version; `3.1.1` for brokers without MQTT 5 (e.g. amqtt)."
    )
    mqtt_client_id: str = Field(
        "gnahat-collector",
        description="Fixed client id: the broker keeps this session while the collector is down.",
    )
    mqtt_session_expiry_s: int = Field(
        7 * 86400, description="MQTT 5 session expiry; the broker queues this long for us."
    )
    mqtt_share_group: str | None = Field(
        None,
        description="Shared subscription group: ingest processes in one group split the load.",
    )
    ingest_standby: bool = Field(
        False,
        description="Active and standby ingest for brokers without shared subscriptions "
        "(NATS): processes with the same `GNAHAT_MQTT_CLIENT_ID` take turns through a lease "
        "in the database; one ingests, the others wait and take over its broker session "
        "when its lease runs out.",
    )
    ingest_lease_s: float = Field(
        15.0, gt=0, description="How long the active ingest's lease lasts without renewal."
    )
    ingest_receiver: Literal["process", "thread"] = Field(
        "process",
        description="`process`: the MQTT client runs in a child process (uses a second core); "
        "`thread`: in this process.",
    )
    ingest_batch_size: int = Field(
        4000,
        ge=1,
        description="Largest number of messages per commit (a backlog drains in batches this "
        "big; an idle writer commits each press at once).",
    )
    ingest_batch_ms: int = Field(
        0,
        ge=0,
        description="Extra wait (ms) for more messages before a commit; 0: group commit — "
        "commit at once what has arrived (batches form only under load).",
    )
    ingest_queue_max: int = Field(
        10000,
        ge=10,
        description="Most received messages held in memory for the writer; beyond it the "
        "receiver stops taking and the broker holds the backlog.",
    )
    mqtt_receive_maximum: int = Field(
        8000,
        ge=1,
        le=65535,
        description="MQTT 5 Receive Maximum: most unacknowledged messages the broker sends "
        "us at once (with 3.1.1 the broker's `max_inflight_messages` decides).",
    )
    timezone: str = Field("Asia/Yerevan", description="Timezone of the business day.")
    burst_max_presses: int = Field(
        8, description="More ratings than this from one unit inside the burst window are a burst."
    )
    burst_window_s: int = Field(20, description="Burst window, seconds.")
    feed_settle_s: float = Field(
        2.0, description="The feed holds back events younger than this, so none is skipped."
    )
    feed_include_employee: bool = Field(
        False, description="Include pseudonymous employee codes in the analyst feed."
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    trusted_proxies: str = Field(
        "",
        description="Reverse proxies (addresses or networks, comma-separated) whose "
        "`X-Forwarded-For` is believed; empty: none, the peer address is the client's.",
    )
    http_port: int = Field(8080, description="Port of the HTTP API.")
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="Address visitors' phones reach the collector at (printed in the desks' "
        "QR codes: `https://...` in production).",
    )
    online_enabled: bool = Field(True, description="Take ratings from visitors' phones (QR).")
    online_proof: Literal["visit", "open"] = Field(
        "visit",
        description="`visit`: a phone rating counts only with a proof of the visit (the code "
        "on the desk's screen, or a queue system's visit window code); `open`: the printed "
        "card alone is taken too, flagged unverified and left out of every score "
        "(docs/threat-model.md).",
    )
    online_window_s: int = Field(
        900, ge=60, description="How long a visit window's code opens the phone page."
    )
    online_visit_ttl_s: int = Field(
        900,
        ge=60,
        description="How long after the visit (its code) a phone rating may be sent.",
    )
    online_code_max_age_s: int = Field(
        300,
        ge=60,
        description="How old a desk screen's code may be when the visitor scans or types it "
        "(a new code every minute).",
    )
    online_code_failures_hour: int = Field(
        10,
        ge=1,
        description="Wrong codes an hour from one address (an IPv6 /64) after which it may "
        "try no more codes that hour.",
    )
    online_per_browser_day: int = Field(
        3, ge=1, description="Online ratings a day from one browser beyond which they are flagged."
    )
    online_per_address_hour: int = Field(
        20,
        ge=1,
        description="Ratings without a proof an hour from one address (an IPv6 /64) beyond "
        "which they are flagged (`open` only: a proven visit is never counted against its "
        "address, so a centre's guest Wi-Fi is never shut out).",
    )
    online_arm_interval_s: int = Field(
        60, ge=0, description="Least time between two visit windows opened at one desk."
    )
    online_arms_per_hour: int = Field(
        120, ge=1, description="Visit windows one token or user may open an hour."
    )
    secret_key: str = Field(
        DEV_SECRET,
        description="Secret for sessions and CSRF tokens; rotate it after a leak.",
    )
    session_lifetime_s: int = Field(
        8 * 3600, ge=60, description="A dashboard login ends this long after it began."
    )
    session_idle_s: int = Field(
        1800, ge=60, description="A dashboard login ends after this long without a request."
    )
    pseudonym_key: str = Field(
        DEV_PSEUDONYM_KEY,
        description="Key of the employee pseudonyms sent to the M&E IS. Never rotate it: "
        "new pseudonyms would split every employee's history upstream.",
    )
    retention_days: int = Field(
        0,
        description="Delete raw events older than this many days (`retention apply`); "
        "aggregates stay. 0: keep them.",
    )
    forward_url: str | None = Field(
        None,
        description="Base URL of the M&E IS (DHIS2 style, e.g. `https://me-is.example.am`); "
        "unset: nothing is forwarded.",
    )
    forward_enabled: bool = Field(
        True, description="Run the forwarder in this `serve` process (a lease: one at a time)."
    )
    forward_username: str | None = Field(None, description="M&E IS account (HTTP basic auth).")
    forward_password: str | None = Field(None, description="Password of that account.")
    forward_token: str | None = Field(
        None, description="M&E IS personal access token (`Authorization: ApiToken ...`)."
    )
    forward_interval_s: float = Field(60.0, description="How often the forwarder plans and sends.")
    forward_timeout_s: float = Field(30.0, description="Timeout of one push request.")
    forward_concurrency: int = Field(
        8,
        ge=1,
        le=32,
        description="Pushes to the M&E IS in flight at once (a backlog goes this many at a "
        "time; any answer asking to wait stops the round).",
    )
    forward_backoff_max_s: float = Field(
        3600.0, description="Longest wait between retries of a failing push."
    )
    forward_resend_days: int = Field(
        7, description="Once a day, push the last N finished days again (upserts, idempotent)."
    )
    forward_today: bool = Field(
        False, description="Also push the running day (re-pushed as it changes)."
    )
    forward_mapping: Path | None = Field(
        None,
        description="Mapping file (CSV) from centres, services and score levels to the M&E IS's "
        "org units, data elements and category option combos; unset: derived from the "
        "registry (`forward mapping` writes it, `forward metadata` the matching package).",
    )
    forward_max_values: int = Field(
        1000, ge=1, description="Most data values in one push; a larger batch goes in parts."
    )
    forward_employee_level: bool = Field(
        False,
        description="Also forward per employee, as pseudonyms in `attributeOptionCombo`.",
    )

    webhooks_enabled: bool = Field(
        True, description="Send webhook deliveries from this `serve` process (a lease)."
    )
    webhook_interval_s: float = Field(
        30.0, gt=0, description="How often changed days are looked for and webhooks sent."
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one webhook request.")
    webhook_backoff_max_s: float = Field(
        3600.0, gt=0, description="Longest wait between retries of a failing webhook delivery."
    )

    alerts_enabled: bool = Field(
        True, description="Evaluate alert rules and send notices from this `serve` process."
    )
    alert_interval_s: float = Field(60.0, gt=0, description="How often alert rules are evaluated.")
    alert_renotify_s: float = Field(
        3600.0, gt=0, description="First reminder of an open, unacknowledged alert (doubling)."
    )
    alert_renotify_max_s: float = Field(
        86400.0, gt=0, description="Longest wait between reminders of an open alert."
    )
    answer_low_share: float = Field(
        0.7,
        gt=0,
        le=1,
        description="You said, we did: a month's score or factor under this share is low "
        "and asks its centre's managers for a public answer.",
    )
    answer_due_days: int = Field(
        14,
        ge=1,
        le=366,
        description="Days after a low month's end before the ministry view lists it as unanswered.",
    )
    smtp_host: str | None = Field(None, description="SMTP server for alert emails; unset: none.")
    smtp_port: int = Field(25, ge=1, le=65535, description="Its port.")
    smtp_starttls: bool = Field(False, description="Use STARTTLS (then verify the certificate).")
    smtp_username: str | None = Field(None, description="SMTP login, if the server wants one.")
    smtp_password: str | None = Field(None, description="Its password.")
    smtp_from: str = Field("gnahat@localhost", description="The From: address of alert emails.")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str) -> str:
        schemes = set()
        for one in value.split(","):
            parts = urlsplit(one.strip())
            try:
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError:
                raise ValueError(f"{one.strip()!r}: the port must be 1 to 65535") from None
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(
                    "use mqtt://host:port or mqtts://host:port (several: comma-separated)"
                )
            schemes.add(parts.scheme)
        if len(schemes) > 1:
            raise ValueError("every broker of the list must use the same scheme (TLS or not)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        from collector.clientaddr import parse_networks

        parse_networks(value)
        return value

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEV_SECRET:
            raise ValueError(
                "set GNAHAT_SECRET_KEY: the development secret is refused in production"
            )
        if self.environment == "production" and self.pseudonym_key == DEV_PSEUDONYM_KEY:
            raise ValueError(
                "set GNAHAT_PSEUDONYM_KEY: the development key is refused in production"
            )
        if self.environment == "production" and self.pseudonym_key == self.secret_key:
            raise ValueError("GNAHAT_PSEUDONYM_KEY must differ from GNAHAT_SECRET_KEY")
        return self

    @property
    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        """Every broker of ``mqtt_url``, in order (failover goes round the list)."""
        out = []
        for one in self.mqtt_url.split(","):
            parts = urlsplit(one.strip())
            out.append(
                (parts.hostname or "127.0.0.1", parts.port or (8883 if self.mqtt_tls else 1883))
            )
        return out

    @property
    def mqtt_host(self) -> str:
        return self.mqtt_endpoints[0][0]

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_endpoints[0][1]

    @property
    def mqtt_tls(self) -> bool:
        return urlsplit(self.mqtt_url.split(",")[0].strip()).scheme == "mqtts"


def load_settings(env_file: str | None = None) -> Settings:
    """Settings from the environment, or from an env file (``GNAHAT_*=...`` lines)."""
    if env_file:
        return Settings(_env_file=env_file)
    return Settings()

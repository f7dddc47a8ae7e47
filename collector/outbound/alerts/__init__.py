"""Alerts: managers and the ministry hear about problems first.

Rules are data: each kind has default parameters (:data:`DEFAULTS`), which an
``alert_rules`` row may override for every centre or for one. A round evaluates every
rule against the database and reconciles what it finds with the alerts on record:

- a new finding opens an alert (audited) and notifies its recipients;
- an alert whose condition still holds is re-notified with backoff
  (``alert_renotify_s`` doubling up to ``alert_renotify_max_s``) until someone
  acknowledges it with a comment (audited);
- an alert whose condition cleared closes by itself (audited), and those who heard of
  it hear that it closed.

Notices go through the shared outbox (:mod:`collector.outbound.outbox`): email over SMTP, or a
webhook signed by the Standard Webhooks scheme (:func:`collector.outbound.webhooks.post_signed`),
each retried with backoff and parked with a reason. Recipients choose centres and a
lowest severity, and Armenian or English.

Kinds: ``unit_silent`` (no message from a unit for N minutes of opening time: also a
unit unplugged in the busy hour), ``unit_backlog`` (a unit's outbox is deep or old),
``unit_clock`` (a unit reports an unsynced clock), ``after_login`` (ratings within
seconds of a staff login on the same unit), ``dissatisfied`` (the dissatisfied
share of a centre or a centre's service over a rolling window is above a threshold by
its 95 % interval, with enough ratings), ``drop`` (a centre's CSAT fell against its own
history, intervals apart) and ``bursts`` (many presses left out as bursts: worth a look).

By part: :mod:`~collector.outbound.alerts.kinds`, :mod:`~collector.outbound.alerts.rules`,
:mod:`~collector.outbound.alerts.records` (every name of these three is re-exported here),
and the scheduled digests in :mod:`~collector.outbound.alerts.digests`. What runs them
and sends the notices, :class:`~collector.outbound.alert_engine.AlertEngine`, sits beside
the package: it uses the digests, which use the records, so nothing here imports it.
"""

from __future__ import annotations

from collector.outbound.alerts.kinds import (
    ACKED,
    ACTIVE,
    CLOSED,
    DEFAULTS,
    HEALTH_FRESH,
    OPEN,
    SEVERITIES,
    TEXTS,
    TZ,
    Finding,
    _pct,
    log,
    render,
    utcnow,
)
from collector.outbound.alerts.records import _hears, acknowledge, add_recipient, listing
from collector.outbound.alerts.rules import (
    _bottom,
    _login_findings,
    _score_findings,
    _unit_findings,
    evaluate,
    rule_params,
    set_rule,
)

__all__ = [
    "ACKED",
    "ACTIVE",
    "CLOSED",
    "DEFAULTS",
    "HEALTH_FRESH",
    "OPEN",
    "SEVERITIES",
    "TEXTS",
    "TZ",
    "Finding",
    "_bottom",
    "_hears",
    "_login_findings",
    "_pct",
    "_score_findings",
    "_unit_findings",
    "acknowledge",
    "add_recipient",
    "evaluate",
    "listing",
    "log",
    "render",
    "rule_params",
    "set_rule",
    "utcnow",
]

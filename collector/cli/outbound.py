"""What goes out: ``forward``, ``webhook`` and ``alert``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from collector.cli.common import _registry_codes, _sessions
from collector.config import Settings


def cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    from collector.outbound import mapping as mapping_mod

    sessions = _sessions(settings)
    try:
        if settings.forward_mapping:
            mapping = mapping_mod.load(settings.forward_mapping)
        else:
            with sessions() as s:
                mapping = mapping_mod.derive_from_db(s)
    except (mapping_mod.MappingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "mapping":
        sys.stdout.write(mapping_mod.to_csv(mapping))
        return 0
    if args.action == "metadata":
        try:
            package = mapping_mod.metadata_package(
                mapping, org_units=args.org_units, org_unit_parent=args.org_unit_parent
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if mapping.user_group is None:
            print(
                "warning: no user_group in the mapping: the package shares data write with "
                "nobody, so only an account with ALL can push (see docs/operations.md)",
                file=sys.stderr,
            )
        print(json.dumps(package, ensure_ascii=False, indent=2))
        return 0
    if args.action == "status":
        return _forward_status(sessions)
    if not settings.forward_url:
        print("error: set GNAHAT_FORWARD_URL to the M&E IS", file=sys.stderr)
        return 2
    if args.action == "org-units":
        from collector.outbound.forward import make_http_client
        from collector.outbound.me_check import CheckFailed, resolve_org_units

        with make_http_client(settings) as http:
            try:
                findings = resolve_org_units(mapping, http, settings.forward_url)
            except CheckFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        for f in findings:
            print(f, file=sys.stderr)
        sys.stdout.write(mapping_mod.to_csv(mapping))
        return 1 if any(f.level == "error" for f in findings) else 0
    if args.action == "check":
        from collector.outbound.forward import make_http_client
        from collector.outbound.me_check import CheckFailed, check

        with make_http_client(settings) as http:
            try:
                findings = check(mapping, http, settings.forward_url, _registry_codes(sessions))
            except CheckFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        for f in findings:
            print(f)
        return 1 if any(f.level == "error" for f in findings) else 0
    from collector.outbound.forward import Forwarder

    forwarder = Forwarder(sessions, settings)
    try:
        if args.action == "run":
            print(forwarder.run_once())
        elif args.action == "retry":
            if not args.keys and not args.all:
                print("error: name batch keys or give --all", file=sys.stderr)
                return 2
            print(f"{forwarder.retry(None if args.all else args.keys)} batch(es) re-queued")
        elif args.action == "dry-run":
            results = forwarder.dry_run(args.day, args.centre)
            if not results:
                print(f"no ratings on {args.day}")
            bad = 0
            for code, outcome in results:
                ok = outcome.kind == "sent"
                bad += not ok
                label = "OK" if ok else outcome.kind.upper()
                print(f"{code}\t{label}\t{outcome.detail}".rstrip())
            return 1 if bad else 0
    finally:
        forwarder.stop()
    return 0


def cmd_webhook(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from collector.models import Webhook, WebhookDelivery
    from collector.outbound import webhooks

    sessions = _sessions(settings)
    if args.action == "add":
        try:
            with sessions() as s, s.begin():
                hook, secret = webhooks.add(s, args.url, name=args.name, centres=args.centre)
                hook_id = hook.id
        except webhooks.WebhookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"webhook {hook_id} -> {args.url}")
        print(f"signing secret (shown once; Standard Webhooks): {secret}")
        return 0
    if args.action == "list":
        with sessions() as s:
            states: dict[int, dict[str, int]] = {}
            for hook_id, state, n in s.execute(
                select(WebhookDelivery.webhook_id, WebhookDelivery.state, func.count()).group_by(
                    WebhookDelivery.webhook_id, WebhookDelivery.state
                )
            ):
                states.setdefault(hook_id, {})[state] = n
            for h in s.scalars(select(Webhook).order_by(Webhook.id)):
                counts = ", ".join(f"{n} {k}" for k, n in sorted(states.get(h.id, {}).items()))
                print(
                    f"{h.id}\t{'active' if h.active else 'removed'}\t{h.name}\t{h.url}\t"
                    f"{h.centres or 'all centres'}\t{counts or 'no deliveries yet'}"
                )
        return 0
    if args.action == "remove":
        with sessions() as s, s.begin():
            hook = s.get(Webhook, args.id)
            if hook is None:
                print(f"error: no webhook {args.id}", file=sys.stderr)
                return 2
            hook.active = False
        print(f"webhook {args.id} removed (its waiting deliveries are parked)")
        return 0
    if args.action == "status":
        with sessions() as s:
            rows = s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.state != "sent")
                .order_by(WebhookDelivery.id)
            ).all()
            for d in rows:
                when = d.next_attempt_at.isoformat() if d.next_attempt_at else "-"
                print(
                    f"{d.id}\t{d.batch_key}\t{d.state}\tv{d.version}\ttries {d.attempts}\t"
                    f"{when}\t{d.last_error or ''}".rstrip()
                )
            if not rows:
                print("every delivery delivered")
        return 0
    if not args.ids and not args.all:
        print("error: name delivery ids or give --all", file=sys.stderr)
        return 2
    sender = webhooks.WebhookSender(sessions, settings)
    try:
        print(f"{sender.retry(None if args.all else args.ids)} delivery(ies) re-queued")
    finally:
        sender.http.close()
    return 0


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: write KEY=VALUE")
    value: Any = raw
    for conv in (int, float):
        try:
            value = conv(raw)
            break
        except ValueError:
            continue
    if raw in ("true", "false"):
        value = raw == "true"
    return key, value


def cmd_alert(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from collector.models import AlertRecipient, AlertRule, Centre
    from collector.outbound import alerts
    from collector.outbound.alert_engine import AlertEngine

    sessions = _sessions(settings)
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            states = (*alerts.ACTIVE, alerts.CLOSED) if args.all else alerts.ACTIVE
            with sessions() as s:
                rows = alerts.listing(s, centres=None, states=states, lang=args.lang)
            for a in rows:
                print(
                    f"{a['id']}\t{a['state']}\t{a['severity']}\t{a['centre'] or '-'}\t"
                    f"{a['opened_at']:%Y-%m-%d %H:%M}\t{a['text']}"
                )
            if not rows:
                print("no alerts")
            return 0
        if args.action == "ack":
            with sessions() as s, s.begin():
                alerts.acknowledge(s, args.id, args.by, args.comment, now)
            print(f"alert {args.id} acknowledged")
            return 0
        if args.action == "rules":
            with sessions() as s:
                codes = dict(s.execute(select(Centre.id, Centre.code)).all())
                overrides = list(s.scalars(select(AlertRule).order_by(AlertRule.kind)))
            for kind, params in alerts.DEFAULTS.items():
                print(f"{kind}\tdefault\t{params}")
                for r in overrides:
                    if r.kind == kind:
                        where = codes.get(r.centre_id, "all centres") if r.centre_id else "all"
                        print(f"{kind}\t{where}\t{r.params}")
            return 0
        if args.action == "rule":
            params = dict(_param(p) for p in args.params)
            with sessions() as s, s.begin():
                centre_id = None
                if args.centre:
                    centre_id = s.scalar(select(Centre.id).where(Centre.code == args.centre))
                    if centre_id is None:
                        raise ValueError(f"no centre {args.centre}")
                alerts.set_rule(s, args.kind, params, centre_id, now)
            print(f"{args.kind} set for {args.centre or 'all centres'}: {params}")
            return 0
        if args.action == "recipient":
            if args.recipient_action == "add":
                with sessions() as s, s.begin():
                    r, secret = alerts.add_recipient(
                        s,
                        args.channel,
                        args.address,
                        name=args.name,
                        lang=args.lang,
                        centres=args.centre,
                        min_severity=args.min_severity,
                        digest=args.digest,
                        now=now,
                    )
                    rid = r.id
                print(f"recipient {rid}: {args.channel} {args.address}")
                if secret:
                    print(f"signing secret (shown once; Standard Webhooks): {secret}")
                return 0
            if args.recipient_action == "list":
                with sessions() as s:
                    for r in s.scalars(select(AlertRecipient).order_by(AlertRecipient.id)):
                        state = "active" if r.active else "removed"
                        print(
                            f"{r.id}\t{state}\t{r.channel}\t{r.address}\t{r.lang}\t"
                            f"{r.min_severity}+\t{r.centres or 'all centres'}\t"
                            f"{r.digest or 'no digest'}"
                        )
                return 0
            with sessions() as s, s.begin():
                rec = s.get(AlertRecipient, args.id)
                if rec is None:
                    raise ValueError(f"no recipient {args.id}")
                rec.active = False
            print(f"recipient {args.id} removed")
            return 0
        engine = AlertEngine(sessions, settings)
        try:
            print(engine.run_once() or "nothing to do")
        finally:
            engine.stop()
        return 0
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


PROBLEMS = {
    "link": "the M&E IS did not answer",
    "server": "the M&E IS failed (5xx or throttled)",
    "auth": "the M&E IS refused the account",
    "mapping": "values refused: a mapping or metadata gap",
    "not_open": "the period is not open yet in the M&E IS",
    "locked": "locked in the M&E IS",
    "unmapped": "the mapping does not cover it",
    "answer": "the M&E IS answered something unusable",
}


def _forward_status(sessions: Any) -> int:
    from sqlalchemy import select

    from collector.models import ForwardBatch

    with sessions() as s:
        batches = s.scalars(select(ForwardBatch).order_by(ForwardBatch.batch_key)).all()
    by_state: dict[str, int] = {}
    for b in batches:
        by_state[b.state] = by_state.get(b.state, 0) + 1
    print(", ".join(f"{n} {k}" for k, n in sorted(by_state.items())) or "no batches yet")
    for b in batches:
        if b.state == "sent":
            continue
        why = PROBLEMS.get(b.problem or "", "")
        when = b.next_attempt_at.isoformat() if b.next_attempt_at else "-"
        detail = " - ".join(x for x in (why, b.last_error or "") if x)
        print(f"{b.batch_key}\t{b.state}\tv{b.version}\ttries {b.attempts}\t{when}\t{detail}")
    return 0

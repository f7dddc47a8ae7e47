"""The command line: every command, action and option (``gnahat-collector --help``)."""

from __future__ import annotations

import argparse
from datetime import date


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnahat-collector",
        description="Gnahat collector: ingest unit events over MQTT, store, serve feeds.",
    )
    parser.add_argument("--env-file", help="read GNAHAT_* settings from this file")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="HTTP API and MQTT ingest in one process")
    serve.add_argument("--no-ingest", action="store_true", help="HTTP only")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="HTTP worker processes (with --no-ingest; run `ingest` as its own service)",
    )
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    sub.add_parser("ingest", help="MQTT ingest only (run several with a shared subscription)")
    sub.add_parser("migrate", help="create or upgrade the database schema (alembic upgrade head)")

    reg = sub.add_parser("registry", help="registry CSV import/export")
    reg_sub = reg.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = reg_sub.add_parser("import", help="import CSV files from a folder (all or nothing)")
    imp.add_argument("folder", nargs="?", help="folder of CSV files (default: demo registry)")
    imp.add_argument("--demo", action="store_true", help="import the shipped demo registry")
    exp = reg_sub.add_parser("export", help="export the registry as CSV files into a folder")
    exp.add_argument("folder")

    qua = sub.add_parser("quarantine", help="list or re-process quarantined messages")
    qua_sub = qua.add_subparsers(dest="action", metavar="ACTION", required=True)
    ql = qua_sub.add_parser("list", help="list unresolved entries")
    ql.add_argument("--reason")
    ql.add_argument("--all", action="store_true", help="include resolved entries")
    qr = qua_sub.add_parser("replay", help="re-process entries after a registry fix")
    qr.add_argument("--reason")
    qr.add_argument("--id", type=int, action="append", dest="ids")

    tok = sub.add_parser("token", help="API tokens")
    tok_sub = tok.add_subparsers(dest="action", metavar="ACTION", required=True)
    tc = tok_sub.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--role", required=True, choices=["admin", "manager", "analyst", "technician"])
    tc.add_argument("--name", default="")
    tc.add_argument(
        "--centre", action="append", dest="centres", help="a manager's centre (repeatable)"
    )
    tok_sub.add_parser("list", help="list tokens (never their secrets)")
    tr = tok_sub.add_parser("revoke", help="revoke a token by id")
    tr.add_argument("id", type=int)

    gaps = sub.add_parser("gaps", help="missing seq ranges of a unit's streams")
    gaps.add_argument("device")
    sub.add_parser("rebuild-aggregates", help="recompute all daily aggregates from events")

    ret = sub.add_parser("retention", help="delete old raw events (aggregates stay)")
    ret_sub = ret.add_subparsers(dest="action", required=True, metavar="ACTION")
    ra = ret_sub.add_parser("apply", help="delete raw events older than the retention")
    ra.add_argument("--days", type=int, help="override GNAHAT_RETENTION_DAYS")
    ra.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")

    usr = sub.add_parser("user", help="dashboard users (argon2 passwords)")
    usr_sub = usr.add_subparsers(dest="action", required=True, metavar="ACTION")
    ua = usr_sub.add_parser("add", help="add a user; the password is read from stdin or asked")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=["admin", "manager", "analyst"])
    ua.add_argument("--centre", action="append", dest="centres", help="a manager's centre")
    ua.add_argument("--name", default="", help="display name")
    up = usr_sub.add_parser("passwd", help="set a new password (stdin or asked)")
    up.add_argument("username")
    ud = usr_sub.add_parser("disable", help="stop a user logging in (ends their sessions)")
    ud.add_argument("username")
    ur = usr_sub.add_parser("role", help="change a user's role and centres (ends their sessions)")
    ur.add_argument("username")
    ur.add_argument("--role", required=True, choices=["admin", "manager", "analyst"])
    ur.add_argument("--centre", action="append", dest="centres", help="a manager's centre")
    usr_sub.add_parser("list", help="users, roles and centres")
    usr_sub.add_parser("sessions", help="live dashboard sessions (id prefix, user, times)")
    usr_sub.add_parser("failures", help="failed logins in the window and the waits they impose")
    ue = usr_sub.add_parser("end-sessions", help="end sessions: all of a user's, or one by id")
    ue.add_argument("target", help="a username, or a session id prefix from `user sessions`")

    fwd = sub.add_parser("forward", help="forwarding of daily aggregates to the M&E IS")
    fwd_sub = fwd.add_subparsers(dest="action", required=True, metavar="ACTION")
    fwd_sub.add_parser(
        "status", help="batches by state; each centre/day not delivered, with the reason"
    )
    fwd_sub.add_parser("run", help="plan and push what is due, once, now")
    fr = fwd_sub.add_parser(
        "retry", help="re-queue parked or locked batches (after a fix, or a period reopened)"
    )
    fr.add_argument("keys", nargs="*", metavar="KEY", help="batch keys (CENTRE/yyyyMMdd)")
    fr.add_argument("--all", action="store_true", help="every parked or locked batch")
    fwd_sub.add_parser(
        "mapping", help="print the mapping in use (GNAHAT_FORWARD_MAPPING, or the registry's)"
    )
    fm = fwd_sub.add_parser(
        "metadata", help="print the DHIS2 metadata package that makes the mapping true"
    )
    fm.add_argument(
        "--org-units",
        action="store_true",
        help="also create the org units (a test instance; a ministry's has its own)",
    )
    fm.add_argument(
        "--org-unit-parent",
        metavar="UID",
        help="with --org-units: the parent of the centres (default: a root of their own)",
    )
    fwd_sub.add_parser(
        "org-units",
        help="find each centre's org unit on the M&E IS by code; print the mapping with "
        "their UIDs (1 when one is missing)",
    )
    fwd_sub.add_parser(
        "check", help="ask the M&E IS (read-only) whether everything mapped exists; 1 on a gap"
    )
    al = sub.add_parser("alert", help="alerts: rules, recipients, the alerts themselves")
    al_sub = al.add_subparsers(dest="action", required=True, metavar="ACTION")
    al_list = al_sub.add_parser("list", help="open and acknowledged alerts (--all: closed too)")
    al_list.add_argument("--all", action="store_true")
    al_list.add_argument("--lang", choices=["hy", "en"], default="en")
    aa = al_sub.add_parser("ack", help="acknowledge an alert with a comment")
    aa.add_argument("id", type=int)
    aa.add_argument("--comment", required=True)
    aa.add_argument("--by", default="cli")
    al_sub.add_parser("rules", help="every rule's parameters: defaults and overrides")
    ar = al_sub.add_parser("rule", help="set a rule's parameters (all centres, or one)")
    ar.add_argument("kind")
    ar.add_argument("params", nargs="+", metavar="KEY=VALUE")
    ar.add_argument("--centre", help="only this centre (an override)")
    arc = al_sub.add_parser("recipient", help="who hears of alerts")
    arc_sub = arc.add_subparsers(dest="recipient_action", required=True, metavar="ACTION")
    ra = arc_sub.add_parser("add", help="an email address or a webhook URL")
    ra.add_argument("channel", choices=["email", "webhook"])
    ra.add_argument("address")
    ra.add_argument("--name", default="")
    ra.add_argument("--lang", choices=["hy", "en"], default="hy")
    ra.add_argument("--centre", action="append", default=[], help="only this centre (repeat)")
    ra.add_argument("--min-severity", choices=["info", "warning", "critical"], default="warning")
    ra.add_argument(
        "--digest", choices=["daily", "weekly"], help="also a digest of the period (email)"
    )
    arc_sub.add_parser("list", help="recipients")
    rr = arc_sub.add_parser("remove", help="stop notifying a recipient")
    rr.add_argument("id", type=int)
    al_sub.add_parser("run", help="evaluate the rules and send notices, once, now")
    wh = sub.add_parser("webhook", help="webhooks: a push when a day's aggregates change")
    wh_sub = wh.add_subparsers(dest="action", required=True, metavar="ACTION")
    wa = wh_sub.add_parser("add", help="register a receiver; prints its signing secret once")
    wa.add_argument("url")
    wa.add_argument("--name", default="")
    wa.add_argument("--centre", action="append", default=[], help="only this centre (repeat)")
    wh_sub.add_parser("list", help="receivers, with their deliveries by state")
    wr = wh_sub.add_parser("remove", help="stop sending to a receiver")
    wr.add_argument("id", type=int)
    wh_sub.add_parser("status", help="deliveries not delivered, with the reason")
    wt = wh_sub.add_parser("retry", help="re-queue parked deliveries")
    wt.add_argument("ids", nargs="*", type=int, metavar="ID")
    wt.add_argument("--all", action="store_true")
    fd = fwd_sub.add_parser("dry-run", help="check a day's mapping with the M&E IS (dryRun)")
    fd.add_argument("--day", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    fd.add_argument("--centre", help="one centre code (default: all with ratings that day)")
    return parser

"""``main``: parse the command line and run the command."""

from __future__ import annotations

import json
import logging

from collector.cli.admin import cmd_quarantine, cmd_registry, cmd_retention, cmd_token, cmd_user
from collector.cli.common import _sessions
from collector.cli.outbound import cmd_alert, cmd_forward, cmd_webhook
from collector.cli.parser import build_parser
from collector.cli.services import cmd_ingest, cmd_serve
from collector.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 0
    settings = load_settings(args.env_file)
    if args.command == "serve":
        return cmd_serve(settings, args)
    if args.command == "ingest":
        return cmd_ingest(settings, args)
    if args.command == "migrate":
        from collector.db import migrate

        migrate(settings.database_url)
        print("database is at the latest schema")
        return 0
    if args.command == "registry":
        return cmd_registry(settings, args)
    if args.command == "quarantine":
        return cmd_quarantine(settings, args)
    if args.command == "token":
        return cmd_token(settings, args)
    if args.command == "gaps":
        from collector.reading.gaps import stream_gaps

        with _sessions(settings)() as s:
            print(json.dumps(stream_gaps(s, args.device)))
        return 0
    if args.command == "forward":
        return cmd_forward(settings, args)
    if args.command == "webhook":
        return cmd_webhook(settings, args)
    if args.command == "alert":
        return cmd_alert(settings, args)
    if args.command == "user":
        return cmd_user(settings, args)
    if args.command == "retention":
        return cmd_retention(settings, args)
    if args.command == "rebuild-aggregates":
        from collector.intake.store import Store

        print(f"aggregates rebuilt: {Store(_sessions(settings)).rebuild_all_aggregates()}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2

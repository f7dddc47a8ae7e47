"""``gnahat-collector``: serve, ingest, migrate, registry, quarantine, token, gaps.

By part: :mod:`~collector.cli.parser` (the command line), :mod:`~collector.cli.services`
(``serve``, ``ingest``), :mod:`~collector.cli.admin` (registry, quarantine, tokens,
retention, users), :mod:`~collector.cli.outbound` (forward, webhook, alert), what they
share in :mod:`~collector.cli.common`, and :func:`main` in :mod:`~collector.cli.entry`.
Nothing in the collector imports this package: it is an entry point only.
"""

from __future__ import annotations

from collector.cli.entry import main
from collector.cli.parser import build_parser

__all__ = ["build_parser", "main"]

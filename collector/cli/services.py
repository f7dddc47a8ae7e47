"""The long-running services: ``serve`` (HTTP and ingest), and ``ingest`` alone (with a
lease when standing by); the fault drill of the ingest writer."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from collector.cli.common import _check_schema, _sessions, log
from collector.config import Settings


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from collector.db import migrate
    from collector.intake.ingest import client_settings
    from collector.intake.receiver import SettingsError, check_client_settings
    from collector.main import create_app

    if not args.no_ingest:
        try:
            check_client_settings(client_settings(settings))
        except SettingsError as exc:
            print(f"gnahat-collector: {exc}", file=sys.stderr)
            return 2

    if args.migrate:
        migrate(settings.database_url)
    _check_schema(settings)
    if args.workers > 1:
        if not args.no_ingest:
            print(
                "gnahat-collector: --workers needs --no-ingest: run `gnahat-collector ingest` "
                "as its own service (one ingest per client id)",
                file=sys.stderr,
            )
            return 2
        if args.env_file:  # each worker process reads the same settings
            os.environ["GNAHAT_ENV_FILE"] = str(Path(args.env_file).resolve())
        uvicorn.run(
            "collector.main:app_from_env",
            factory=True,
            workers=args.workers,
            host=settings.http_host,
            port=settings.http_port,
            log_level="info",
            server_header=False,
            proxy_headers=False,
        )
        return 0
    app = create_app(settings, ingest=not args.no_ingest)
    if app.state.gnahat.ingest is not None:
        _fault_drill(lambda: app.state.gnahat.ingest)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        server_header=False,  # no "server: uvicorn"
        proxy_headers=False,  # forwarded headers are read only from GNAHAT_TRUSTED_PROXIES
    )
    ingest = app.state.gnahat.ingest
    if ingest is not None and ingest.fatal:
        print(f"gnahat-collector: {ingest.fatal}", file=sys.stderr)
        return 3
    return 0


def _fault_drill(current: Any) -> None:
    """``kill -USR2 <pid>``: the ingest writer fails its next round, as a defect would,
    so an operator can check that supervision and monitoring answer (the batch is
    delivered again; nothing is lost)."""
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, lambda *_: current().fail_next_round())


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from collector.intake.ingest import Ingest
    from collector.intake.receiver import SettingsError
    from collector.intake.store import Store
    from collector.metrics import Metrics

    _check_schema(settings)
    store = Store(
        _sessions(settings),
        timezone=settings.timezone,
        burst_max_presses=settings.burst_max_presses,
        burst_window_s=settings.burst_window_s,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if settings.ingest_standby:
        return _ingest_with_lease(settings, store, done)
    ingest = Ingest(settings, store, Metrics(), on_fatal=lambda _why: done.set())
    _fault_drill(lambda: ingest)
    try:
        ingest.start()
    except SettingsError as exc:
        print(f"gnahat-collector: {exc}", file=sys.stderr)
        return 2
    log.info("ingesting from %s as %s", settings.mqtt_url, settings.mqtt_client_id)
    # What start-up built lives as long as the process: out of every later collection.
    gc.collect()
    gc.freeze()
    done.wait()
    log.info("stopping: committing what is queued")
    ingest.stop()
    if ingest.fatal:
        print(f"gnahat-collector: {ingest.fatal}", file=sys.stderr)
        return 3
    return 0


def _ingest_with_lease(settings: Settings, store: Any, done: threading.Event) -> int:
    """Active or standby: ingest only while holding the ``ingest`` lease.

    Every process of the group uses the same client id, so the one that takes over
    resumes the broker's persistent session (what arrived meanwhile is queued there).
    Two actives for a moment (a lease that ran out under a slow renewal) cost nothing
    but time: the broker hands the session to the newer connection, and the unique key
    on (device, stream, seq) stores each event once whoever commits it.
    """
    import socket

    from collector.intake.ingest import Ingest, utcnow
    from collector.intake.receiver import SettingsError
    from collector.metrics import Metrics
    from collector.outbound.outbox import Lease

    lease = Lease(
        store.sessions,
        "ingest_lease",
        owner=f"{socket.gethostname()}:{os.getpid()}",
        ttl_s=settings.ingest_lease_s,
        clock=utcnow,
    )
    beat = settings.ingest_lease_s / 3
    fatal: list[str] = []

    def holds() -> bool | None:
        try:
            return lease.hold()
        except Exception as exc:  # the database is away: nobody can take the lease either
            log.warning("could not renew the ingest lease (%s)", exc)
            return None

    log.info("standby ingest as %s: waiting for the lease", lease.owner)
    gc.collect()
    gc.freeze()
    while not done.is_set():
        if not holds():
            done.wait(beat)
            continue
        renewed = time.monotonic()
        store.fence = lease.check  # every commit: still ours, in this generation
        ingest = Ingest(settings, store, Metrics(), on_fatal=lambda why: fatal.append(why))
        _fault_drill(lambda: ingest)  # noqa: B023  (the current holder's, read at the signal)
        try:
            ingest.start()
        except SettingsError as exc:
            store.fence = None
            lease.release()
            print(f"gnahat-collector: {exc}", file=sys.stderr)
            return 2
        log.info("holding the ingest lease: ingesting from %s", settings.mqtt_url)
        why = ""
        while not done.wait(beat) and not fatal:
            held = holds()
            if held:
                renewed = time.monotonic()
            elif held is False:
                why = "another process holds the ingest lease"
            elif time.monotonic() - renewed >= settings.ingest_lease_s - beat:
                # Not renewed for most of its life: another process may take it soon.
                # Stop consuming before it can (no two actives knocking each other
                # off the broker with the shared client id).
                why = "the ingest lease could not be renewed in time"
            if ingest.fenced.is_set():
                why = "a commit was fenced off (the lease is another process's)"
            if why:
                break
        ingest.stop()
        store.fence = None
        if why:  # said once ingest has stopped: nothing is acked by this process after
            log.warning("%s: standing by", why)
        if fatal:
            lease.release()
            print(f"gnahat-collector: {fatal[0]}", file=sys.stderr)
            return 3
    with contextlib.suppress(Exception):
        lease.release()
    return 0

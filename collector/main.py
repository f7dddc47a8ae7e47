"""Build the FastAPI app (and, when asked, the MQTT ingest running beside it)."""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from collector.config import Settings
from collector.db import make_engine, session_factory
from collector.edge import security, web
from collector.edge.api.deps import AppState
from collector.edge.api.routes import alerts as alert_routes
from collector.edge.api.routes import devices, feeds, ops, scores
from collector.edge.web import answers as web_answers
from collector.edge.web import online as online_web
from collector.intake.ingest import Ingest
from collector.intake.store import Store
from collector.metrics import Metrics


def _shut_down(why: str) -> None:
    """Ingest gave up for good: let the server stop (and ``serve`` exit non-zero)."""
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(
    settings: Settings, *, ingest: bool = False, forward_clock: Callable[[], datetime] | None = None
) -> FastAPI:
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    metrics = Metrics()
    state = AppState(settings=settings, sessions=sessions, metrics=metrics)
    store = Store(
        sessions,
        timezone=settings.timezone,
        burst_max_presses=settings.burst_max_presses,
        burst_window_s=settings.burst_window_s,
    )
    state.store = store
    if ingest:
        state.ingest = Ingest(settings, store, metrics, on_fatal=_shut_down)
    forwarder = None
    if settings.forward_url and settings.forward_enabled:
        from collector.outbound.dhis2 import utcnow
        from collector.outbound.forward import Forwarder

        forwarder = Forwarder(sessions, settings, metrics=metrics, clock=forward_clock or utcnow)
    state.forwarder = forwarder
    webhooks = None
    if settings.webhooks_enabled:
        from collector.outbound.webhooks import WebhookSender
        from collector.outbound.webhooks import utcnow as webhook_now

        webhooks = WebhookSender(
            sessions, settings, metrics=metrics, clock=forward_clock or webhook_now
        )
    state.webhooks = webhooks
    alerts = None
    if settings.alerts_enabled:
        from collector.outbound.alert_engine import AlertEngine
        from collector.outbound.alerts import utcnow as alerts_now

        # Silence is measured on the clock messages are stamped with (the wall clock);
        # score windows on the business day (a simulated one in the demo).
        alerts = AlertEngine(
            sessions, settings, metrics=metrics, clock=alerts_now, business_clock=forward_clock
        )
    state.alerts = alerts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.ingest is not None:
            state.ingest.start()
        if forwarder is not None:
            forwarder.start()  # its own thread and sessions: a slow M&E IS never holds ingest
        if webhooks is not None:
            webhooks.start()  # the same outbox mechanism, its own thread and lease
        if alerts is not None:
            alerts.start()
        # What start-up built lives as long as the process: keep it out of every later
        # full collection (those pauses were the tail of the JSON-heavy answers).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if forwarder is not None:
                forwarder.stop()
            if webhooks is not None:
                webhooks.stop()
            if alerts is not None:
                alerts.stop()
            if state.ingest is not None:
                state.ingest.stop()
            engine.dispose()

    app = FastAPI(
        title="Gnahat collector",
        version="0.1.0",
        description="Ratings of social services: feeds, units, quarantine, metrics.",
        lifespan=lifespan,
        docs_url=None,  # served by collector.edge.security from the installed package
        redoc_url=None,
    )
    app.state.gnahat = state
    app.include_router(ops.router)
    app.include_router(feeds.router)
    app.include_router(devices.router)
    app.include_router(scores.router)
    app.include_router(alert_routes.router)
    app.include_router(web.router)
    app.include_router(web_answers.router)
    app.include_router(web_answers.api)
    online_web.install(app)
    security.install(app, production=settings.environment == "production")
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="gnahat_session",
        max_age=settings.session_lifetime_s,
        same_site="strict",
        https_only=settings.environment == "production",
    )
    return app


def app_from_env() -> FastAPI:
    """The HTTP app of one worker of ``serve --workers N`` (settings from the environment,
    or the file named by ``GNAHAT_ENV_FILE``); ingest runs as its own process."""
    from collector.config import load_settings

    return create_app(load_settings(os.environ.get("GNAHAT_ENV_FILE") or None), ingest=False)

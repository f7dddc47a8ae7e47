"""The fake M&E IS over HTTP: DHIS2 2.41's Web API routes for the forwarder and
``forward check`` (see :mod:`simulator.me_is` for what the server does and its sources),
and a server on a free loopback port."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from simulator.me_is import MESSAGES, FakeMeIs, Faults
from simulator.me_is_access import Account


def _web_message(summary: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if summary["status"] == "ERROR":
        status, code, message = "ERROR", 409, "An error occurred, please check import summary."
    elif summary["status"] == "WARNING":
        status, code = "WARNING", 409
        message = "One more conflicts encountered, please check import summary."
    else:
        status, code, message = "OK", 200, "Import was successful."
    return code, {
        "httpStatus": "OK" if code == 200 else "Conflict",
        "httpStatusCode": code,
        "status": status,
        "message": message,
        "response": summary,
    }


def _error(code: int, message: str, error_code: str | None = None) -> JSONResponse:
    phrase = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    body: dict[str, Any] = {
        "httpStatus": phrase.get(code, "Error"),
        "httpStatusCode": code,
        "status": "ERROR",
        "message": message,
    }
    if error_code:
        body["errorCode"] = error_code
    return JSONResponse(body, code)


_FILTER = re.compile(r"^(id|code):(eq|in):(.*)$")


def create_app(fake: FakeMeIs) -> FastAPI:
    app = FastAPI(title="Fake M&E IS (DHIS2 2.41 dataValueSets)")

    def caller(request: Request) -> Account | None:
        """The caller's account, or None when not authenticated."""
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "apitoken":
            held = fake.tokens.get(credential.strip())
            if held is None or isinstance(held, Account):
                return held
            return Account(set(held))
        if scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(credential).decode().partition(":")
            except ValueError:
                return None
            account = fake.accounts.get(user)
            if account is not None and account.password == pw:
                return account
            return None
        if not fake.accounts and not fake.tokens:
            return Account({"ALL"})  # an open instance (a quick demo)
        return None

    async def import_data_values(request: Request, version: int | None) -> JSONResponse:
        with fake.lock:
            fake.in_flight += 1
            fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
        try:
            return await one_import(request, version)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    async def one_import(request: Request, version: int | None) -> JSONResponse:
        record: dict[str, Any] = {
            "at": time.time(),
            "query": dict(request.query_params),
            "idempotency_key": request.headers.get("idempotency-key"),
        }
        fake.requests.append(record)
        fake.arrived.set()
        account = caller(request)
        if account is None:
            record["status"] = 401
            return _error(401, "Unauthorized")
        if not account.authorities & {"ALL", "F_DATAVALUE_ADD"}:
            record["status"] = 403
            return _error(403, "Access is denied")
        if fake.faults.delay_s:
            await asyncio.sleep(fake.faults.delay_s)
        if fake.hold is not None and not fake.hold.is_set():
            await asyncio.to_thread(fake.hold.wait, 120)
        with fake.lock:
            if fake.faults.throttle > 0:
                fake.faults.throttle -= 1
                record["status"] = 429
                return JSONResponse(
                    {"httpStatusCode": 429, "message": "Too many requests"},
                    429,
                    headers={"Retry-After": str(fake.faults.retry_after_s)},
                )
            if fake.faults.fail > 0:
                fake.faults.fail -= 1
                record["status"] = fake.faults.fail_status
                return _error(fake.faults.fail_status, "Injected failure")
        try:
            body = await request.json()
        except ValueError:
            record["status"] = 400
            return _error(400, "Invalid JSON")
        if not isinstance(body, dict):
            record["status"] = 400
            return _error(400, "Expected an object")
        q = request.query_params
        strategy = q.get("importStrategy", "CREATE_AND_UPDATE").upper()
        dry_run = q.get("dryRun", "false").lower() == "true"
        record["body"] = body
        summary = await asyncio.to_thread(
            fake.import_values,
            body,
            strategy,
            id_scheme=q.get("idScheme", "uid"),
            dry_run=dry_run,
            account=account,
        )
        record["summary"] = summary["importCount"]
        record["conflicts"] = summary["conflicts"]
        if version is not None and version < 38:
            record["status"] = 200
            return JSONResponse(summary)  # the plain ImportSummary of 2.3x
        code, message = _web_message(summary)
        record["status"] = code
        return JSONResponse(message, code)

    @app.post("/api/dataValueSets")
    async def post_values(request: Request) -> JSONResponse:
        return await import_data_values(request, None)

    @app.post("/api/{version}/dataValueSets")
    async def post_values_versioned(version: int, request: Request) -> JSONResponse:
        return await import_data_values(request, version)

    @app.get("/api/dataValueSets")
    def read_data_values(request: Request) -> JSONResponse:
        if caller(request) is None:
            return _error(401, "Unauthorized")
        q = request.query_params
        scheme = q.get("idScheme", "uid").lower()
        data_sets = q.getlist("dataSet")
        org_units = q.getlist("orgUnit")
        periods = set(q.getlist("period"))
        # DefaultDataValueSetService.validate: an IllegalQueryException, HTTP 409.
        if not data_sets:
            return _error(409, MESSAGES["E2001"], "E2001")
        if periods and (q.get("startDate") or q.get("endDate")):
            return _error(409, MESSAGES["E2003"], "E2003")
        if q.get("startDate") and q.get("endDate"):
            d = date.fromisoformat(q["startDate"])
            while d <= date.fromisoformat(q["endDate"]):
                periods.add(d.strftime("%Y%m%d"))
                d += timedelta(days=1)
        if not periods:
            return _error(409, MESSAGES["E2002"], "E2002")
        if not org_units:
            return _error(409, MESSAGES["E2006"], "E2006")
        values = [v for ds in data_sets for v in fake.read_back(ds, periods, org_units, scheme)]
        return JSONResponse({"dataValues": values})

    def listing(kind: str, request: Request) -> JSONResponse:
        if caller(request) is None:
            return _error(401, "Unauthorized")
        table = fake._table(kind)
        items = list(table.values())
        for f in request.query_params.getlist("filter"):
            match = _FILTER.match(f)
            if not match:
                return _error(409, f"Invalid filter: {f}")
            prop, op, raw = match.groups()
            wanted = set(raw.strip("[]").split(",")) if op == "in" else {raw}
            items = [o for o in items if (o.uid if prop == "id" else o.code) in wanted]
        extra = (lambda o: {"path": fake.path(o.uid)}) if kind == "organisationUnits" else None
        return JSONResponse(
            {kind: [{**o.attrs, "id": o.uid, "code": o.code, **(extra(o) if extra else {})}
                    for o in items]}
        )  # fmt: skip

    for _kind in (
        "dataElements", "organisationUnits", "categoryOptionCombos", "dataSets", "categoryOptions"
    ):  # fmt: skip

        def _route(request: Request, kind: str = _kind) -> JSONResponse:
            return listing(kind, request)

        app.add_api_route(f"/api/{_kind}", _route, methods=["GET"])

    @app.get("/api/system/info")
    def system_info(request: Request) -> JSONResponse:
        if caller(request) is None:
            return _error(401, "Unauthorized")
        return JSONResponse(
            {
                "version": "2.41.9",
                "serverDate": datetime.combine(fake.today(), datetime.min.time()).isoformat(),
                "serverTimeZoneId": fake.system_timezone,
            }
        )

    @app.get("/api/me")
    def me(request: Request) -> JSONResponse:
        account = caller(request)
        if account is None:
            return _error(401, "Unauthorized")
        return JSONResponse(
            {
                "id": account.uid,
                "username": "gnahat",
                "authorities": sorted(account.authorities),
                "userGroups": [{"id": g} for g in sorted(account.groups)],
                "organisationUnits": [
                    {"id": o.uid, "code": o.code, "name": o.attrs.get("name", ""),
                     "path": fake.path(o.uid)}
                    for o in fake.capture_units(account)
                ],
            }
        )  # fmt: skip

    @app.post("/_fake/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        body = await request.json()
        fake.faults = Faults(
            fail=int(body.get("fail", 0)),
            fail_status=int(body.get("status", 500)),
            throttle=int(body.get("throttle", 0)),
            retry_after_s=int(body.get("retry_after", 1)),
            delay_s=float(body.get("delay_s", 0.0)),
        )
        return {"ok": True}

    @app.post("/_fake/metadata")
    async def load_metadata(request: Request) -> dict[str, Any]:
        fake.load_metadata(await request.json())
        return {"ok": True}

    @app.get("/_fake/requests")
    def list_requests() -> list[dict[str, Any]]:
        return list(fake.requests)

    @app.post("/_fake/reset")
    def reset() -> dict[str, bool]:
        fake.reset()
        return {"ok": True}

    return app


def serve_registry(
    fake: FakeMeIs,
    sessions: Any,
    mapping_path: Path,
    *,
    clock: Callable[[], datetime] | None = None,
    timezone: str = "Asia/Yerevan",
) -> None:
    """Make ``fake`` the M&E IS of the registry in ``sessions``, as the demo and the
    scenarios run it: a server on Yerevan time (``clock``, default the wall clock), holding
    the package `forward metadata --org-units` makes from the mapping written to
    ``mapping_path`` (the registry's, with ``server_timezone`` set to match)."""
    from zoneinfo import ZoneInfo

    from collector.outbound import mapping

    with sessions() as s:
        m = mapping.derive_from_db(s)
    m.options["server_timezone"] = timezone
    mapping_path.write_text(mapping.to_csv(m), encoding="utf-8")
    fake.load_metadata(mapping.metadata_package(m, org_units=True))
    zone = ZoneInfo(timezone)
    now = clock or (lambda: datetime.now(UTC))
    fake.today = lambda: now().astimezone(zone).date()
    fake.system_timezone = timezone


class FakeMeIsServer:
    """The fake on a free loopback port, in a thread; ``url`` is its base."""

    def __init__(self, fake: FakeMeIs | None = None, *, port: int = 0) -> None:
        from simulator.broker import free_port

        self.fake = fake or FakeMeIs()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeMeIsServer:
        import uvicorn

        config = uvicorn.Config(
            create_app(self.fake), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-me-is", daemon=True)
        self._thread.start()
        started = threading.Event()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("fake M&E IS did not start")
            started.wait(0.02)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop answering (connections are refused until ``start()`` again)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> FakeMeIsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A fake M&E IS that behaves like DHIS2's ``dataValueSets`` import, for forwarding tests.

``POST /api/dataValueSets?importStrategy=CREATE_AND_UPDATE&idScheme=code`` upserts
data values by (dataElement, period, orgUnit, categoryOptionCombo,
attributeOptionCombo) and answers with an import summary (counts, conflicts).
Unknown org units or data elements (when the fake is told which exist) become
conflicts and are ignored. Faults are injectable over HTTP (``/_fake/faults``)
or in Python: the next N requests fail with a status, get 429 with
``Retry-After``, or are slowed down. Every request is recorded with its
``Idempotency-Key``.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Key = tuple[str, str, str, str, str]


@dataclass
class Faults:
    fail: int = 0
    fail_status: int = 500
    throttle: int = 0
    retry_after_s: int = 1
    delay_s: float = 0.0


@dataclass
class FakeMeIs:
    org_units: set[str] | None = None
    data_elements: set[str] | None = None
    username: str | None = None
    password: str | None = None
    values: dict[Key, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold: threading.Event | None = None
    """When set to an unset Event, each import waits for it (a stuck M&E IS)."""
    arrived: threading.Event = field(default_factory=threading.Event)
    """Set whenever a request arrives (tests wait on it instead of sleeping)."""

    def reset(self) -> None:
        with self.lock:
            self.values.clear()
            self.requests.clear()
            self.faults = Faults()

    def import_values(
        self, body: dict[str, Any], strategy: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Apply (or, with ``dry_run``, only judge) a dataValueSet; the import summary."""
        if dry_run:
            with self.lock:
                saved = dict(self.values)
            try:
                return self.import_values(body, strategy)
            finally:
                with self.lock:
                    self.values.clear()
                    self.values.update(saved)
        counts = {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
        conflicts: list[dict[str, str]] = []
        top = {k: body.get(k) for k in ("period", "orgUnit", "attributeOptionCombo")}
        with self.lock:
            for dv in body.get("dataValues", []):
                item = {**{k: v for k, v in top.items() if v}, **dv}
                de, pe, ou = item.get("dataElement"), item.get("period"), item.get("orgUnit")
                if not (de and pe and ou) or "value" not in item:
                    conflicts.append({"object": str(de), "value": "Data value is incomplete"})
                    counts["ignored"] += 1
                    continue
                if self.org_units is not None and ou not in self.org_units:
                    conflicts.append(
                        {"object": ou, "value": "Org unit not found or not accessible"}
                    )
                    counts["ignored"] += 1
                    continue
                if self.data_elements is not None and de not in self.data_elements:
                    conflicts.append({"object": de, "value": "Data element not found"})
                    counts["ignored"] += 1
                    continue
                key: Key = (
                    de,
                    pe,
                    ou,
                    item.get("categoryOptionCombo") or "default",
                    item.get("attributeOptionCombo") or "default",
                )
                exists = key in self.values
                if strategy == "DELETE":
                    if exists:
                        del self.values[key]
                        counts["deleted"] += 1
                    else:
                        counts["ignored"] += 1
                    continue
                if exists and strategy == "CREATE":
                    counts["ignored"] += 1
                    continue
                if not exists and strategy == "UPDATE":
                    counts["ignored"] += 1
                    continue
                self.values[key] = str(item["value"])
                counts["updated" if exists else "imported"] += 1
        status = "WARNING" if conflicts else "SUCCESS"
        return {
            "httpStatus": "OK",
            "httpStatusCode": 200,
            "status": "OK" if not conflicts else "WARNING",
            "message": "Import was successful."
            if not conflicts
            else "One more conflicts encountered, please check import summary.",
            "response": {
                "responseType": "ImportSummary",
                "status": status,
                "importOptions": {"importStrategy": strategy, "idSchemes": {"idScheme": "CODE"}},
                "description": "Import process completed successfully",
                "importCount": counts,
                "conflicts": conflicts,
                "dataSetComplete": "false",
            },
        }


def create_app(fake: FakeMeIs) -> FastAPI:
    app = FastAPI(title="Fake M&E IS (DHIS2 dataValueSets)")

    def _authorised(request: Request) -> bool:
        if fake.username is None:
            return True
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == fake.username and pw == fake.password

    @app.post("/api/dataValueSets")
    async def import_data_values(request: Request) -> JSONResponse:
        record = {
            "at": time.time(),
            "query": dict(request.query_params),
            "idempotency_key": request.headers.get("idempotency-key"),
        }
        fake.requests.append(record)
        fake.arrived.set()
        if not _authorised(request):
            record["status"] = 401
            return JSONResponse({"httpStatusCode": 401, "message": "Unauthorized"}, 401)
        if fake.faults.delay_s:
            import asyncio

            await asyncio.sleep(fake.faults.delay_s)
        if fake.hold is not None and not fake.hold.is_set():
            import asyncio

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
                return JSONResponse(
                    {"httpStatusCode": fake.faults.fail_status, "message": "Injected failure"},
                    fake.faults.fail_status,
                )
        try:
            body = await request.json()
        except ValueError:
            record["status"] = 400
            return JSONResponse({"httpStatusCode": 400, "message": "Invalid JSON"}, 400)
        if not isinstance(body, dict):
            record["status"] = 400
            return JSONResponse({"httpStatusCode": 400, "message": "Expected an object"}, 400)
        strategy = request.query_params.get("importStrategy", "CREATE_AND_UPDATE")
        dry_run = request.query_params.get("dryRun", "false").lower() == "true"
        record["body"] = body
        summary = fake.import_values(body, strategy, dry_run=dry_run)
        record["status"] = 200
        record["summary"] = summary["response"]["importCount"]
        return JSONResponse(summary)

    @app.get("/api/dataValueSets")
    def read_data_values(orgUnit: str | None = None, period: str | None = None) -> dict[str, Any]:
        with fake.lock:
            values = [
                {
                    "dataElement": de,
                    "period": pe,
                    "orgUnit": ou,
                    "categoryOptionCombo": coc,
                    "attributeOptionCombo": aoc,
                    "value": v,
                }
                for (de, pe, ou, coc, aoc), v in sorted(fake.values.items())
                if (orgUnit is None or ou == orgUnit) and (period is None or pe == period)
            ]
        return {"dataValues": values}

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

    @app.get("/_fake/requests")
    def list_requests() -> list[dict[str, Any]]:
        return list(fake.requests)

    @app.post("/_fake/reset")
    def reset() -> dict[str, bool]:
        fake.reset()
        return {"ok": True}

    return app


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

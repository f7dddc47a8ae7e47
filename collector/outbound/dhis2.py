"""The M&E IS on the wire: DHIS2 ``dataValueSets`` behind :class:`Adapter`, and how
its answers are judged (delivered, refused for a fixable reason, locked period,
retry later). Read from dhis2-core (2.41): ``DataValueSetController``,
``DefaultDataValueSetService`` and the import conflicts' error codes.
Forwarding (planning, the outbox, leases) is :mod:`collector.outbound.forward`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from collector.outbound import mapping as mapping_mod

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Now, for forwarding and for reading ``Retry-After`` dates."""
    return datetime.now(UTC)


# DHIS2 import conflict codes (dhis-api/.../feedback/ErrorCode.java, used by
# dhis-service-dxf2/.../datavalueset/DataValueImportConflict.java and
# DataValueSetImportConflict.java at 2.41.9).
#: The period is closed for data entry: expired, approved, outside input periods. Final
#: unless an administrator acts (a lock exception, unapproval), then ``forward retry``.
LOCKED_CODES = frozenset({"E7640", "E7642", "E7643", "E7644"})
#: The period is not open yet on the server's clock: it will be.
NOT_OPEN_CODES = frozenset({"E7641"})
#: Metadata or mapping gaps (an unknown data set, org unit, element, combo; no write
#: access; a value of the wrong type): fixable on either side, so retried with backoff.
MAPPING_CODES = frozenset(
    {
        "E7600", "E7601", "E7602", "E7603", "E7604", "E7610", "E7611", "E7612", "E7613",
        "E7614", "E7615", "E7616", "E7617", "E7618", "E7619", "E7621", "E7622", "E7630",
        "E7631", "E7632", "E7633", "E7634", "E7635", "E7636", "E7638", "E7639",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    service: str
    employee: str | None  # pseudonym, only when employee-level forwarding is on
    scale: int
    counts: tuple[int, ...]  # n1..n{scale}
    measure: str = "R"
    """``R`` ratings (every channel), ``ONLINE_R`` the online part, ``F_<FACTOR>`` answers."""


@dataclass
class Outcome:
    """What one push came to.

    ``kind``: ``sent`` (the M&E IS holds our values, whatever it counted), ``retry`` (the
    server or the link failed: this batch and the rest of the round wait), ``refused``
    (values refused for a fixable reason: this batch waits, the round goes on), ``locked``
    (the period is closed there) or ``parked`` (an answer we cannot use: an operator looks).
    """

    kind: str
    detail: str = ""
    retry_after_s: float | None = None
    summary: dict[str, Any] | None = None
    problem: str | None = None
    rejected: frozenset[int] = frozenset()
    """Indexes of the values the M&E IS refused (``rejectedIndexes``), when it says."""


class Unmapped(ValueError):
    """A batch names something the mapping does not: it cannot be built."""


#: One value's identity upstream: (orgUnit, dataElement, categoryOptionCombo, attributeOptionCombo).
RemoteKey = tuple[str, str, str, str]


def value_key(dv: dict[str, Any], payload: dict[str, Any]) -> RemoteKey:
    return (
        dv.get("orgUnit") or payload["orgUnit"],
        dv["dataElement"],
        dv.get("categoryOptionCombo") or "",
        dv.get("attributeOptionCombo") or "",
    )


@dataclass
class Remote:
    """What the M&E IS holds of a batch, as far as we know: values it confirmed, and keys
    we sent without a confirmation (they may be there: a value we stop sending is
    deleted if it was either)."""

    scheme: str = ""
    confirmed: dict[RemoteKey, str] = field(default_factory=dict)
    maybe: set[RemoteKey] = field(default_factory=set)

    @classmethod
    def load(cls, raw: Any) -> Remote:
        if not isinstance(raw, dict):
            return cls()
        return cls(
            str(raw.get("scheme", "")),
            {tuple(k[:4]): str(k[4]) for k in raw.get("confirmed", [])},
            {tuple(k[:4]) for k in raw.get("maybe", [])},
        )

    def dump(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "confirmed": sorted([*k, v] for k, v in self.confirmed.items()),
            "maybe": sorted(list(k) for k in self.maybe - set(self.confirmed)),
        }


class Adapter(Protocol):
    mapping: mapping_mod.Mapping

    def build(self, centre: str, day: date, cells: list[Cell]) -> dict[str, Any]: ...

    def request(
        self, payload: dict[str, Any], remote: Remote, *, full: bool
    ) -> dict[str, Any] | None: ...

    def send(
        self, http: httpx.Client, payload: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> Outcome: ...


@dataclass
class Dhis2Adapter:
    """DHIS2 ``dataValueSets`` JSON (2.38 to 2.41): ``POST /api/dataValueSets`` with the
    mapping's ``idScheme``, one request per (centre, day), split when larger than
    ``max_values``."""

    base_url: str
    mapping: mapping_mod.Mapping
    max_values: int = 1000

    def build(self, centre: str, day: date, cells: list[Cell]) -> dict[str, Any]:
        m = self.mapping
        ou = m.org_units.get(centre)
        if ou is None:
            raise Unmapped(f"centre {centre} has no org_unit row in {m.source}")
        assert m.data_set is not None
        values = []
        for cell in cells:
            service = m.services.get(cell.service)
            if service is None:
                raise Unmapped(f"service {cell.service} has no service row in {m.source}")
            for level, count in enumerate(cell.counts, start=1):
                element = m.measure_element(cell.measure, cell.scale, level)
                if element is None:
                    key = mapping_mod.element_key(cell.measure, cell.scale, level)
                    if cell.measure != "R":
                        continue  # channel and factor rows are optional: not sent without
                    raise Unmapped(f"data_element {key} has no row in {m.source}")
                if count == 0 and not m.zeros_significant:
                    continue  # the mapping omits zeros: absent, and deleted if sent before
                dv: dict[str, Any] = {
                    "dataElement": m.ident(element),
                    "categoryOptionCombo": m.ident(service),
                    "value": str(count),
                }
                if cell.employee is not None:
                    dv["attributeOptionCombo"] = cell.employee
                values.append(dv)
        values.sort(
            key=lambda v: (
                v["dataElement"],
                v["categoryOptionCombo"],
                v.get("attributeOptionCombo", ""),
            )
        )
        return {
            "dataSet": m.ident(m.data_set),
            "period": day.strftime("%Y%m%d"),
            "orgUnit": m.ident(ou),
            "dataValues": values,
        }

    def request(
        self, payload: dict[str, Any], remote: Remote, *, full: bool
    ) -> dict[str, Any] | None:
        """The body to send: values the M&E IS does not hold yet as we hold them (all of
        them when ``full``); once it has confirmed every one of them, a deletion of every
        value we sent before and hold no more. Deletions never share a request with the
        values that replace them: if those are refused (a renamed service whose category
        option combo is not there yet), the M&E IS keeps what it had. None when there is
        nothing to send."""
        current = {value_key(dv, payload): dv for dv in payload["dataValues"]}
        same_scheme = remote.scheme in ("", self.mapping.id_scheme)
        values = [
            dv
            for k, dv in current.items()
            if full or not same_scheme or remote.confirmed.get(k) != dv["value"]
        ]
        if values:
            return {**payload, "dataValues": values}
        if same_scheme:
            for ou, de, coc, aoc in sorted((set(remote.confirmed) | remote.maybe) - set(current)):
                gone: dict[str, Any] = {"dataElement": de, "orgUnit": ou, "deleted": True}
                if coc:
                    gone["categoryOptionCombo"] = coc
                if aoc:
                    gone["attributeOptionCombo"] = aoc
                values.append(gone)
        if not values:
            return None
        return {**payload, "dataValues": values}

    def send(
        self, http: httpx.Client, payload: dict[str, Any], key: str, *, dry_run: bool = False
    ) -> Outcome:
        params = {"importStrategy": "CREATE_AND_UPDATE", "idScheme": self.mapping.id_scheme}
        if dry_run:
            params["dryRun"] = "true"
        values = payload["dataValues"]
        step = max(1, self.max_values)
        outcomes = []
        for part, start in enumerate(range(0, max(1, len(values)), step)):
            body = {**payload, "dataValues": values[start : start + step]}
            try:
                r = http.post(
                    self.base_url.rstrip("/") + "/api/dataValueSets",
                    params=params,
                    json=body,
                    headers={"Idempotency-Key": key if part == 0 else f"{key}:part{part + 1}"},
                )
            except httpx.HTTPError as exc:
                return Outcome("retry", f"{type(exc).__name__}: {exc}", problem="link")
            outcome = judge_response(r.status_code, r.headers, r.content)
            outcome.rejected = frozenset(i + start for i in outcome.rejected)
            outcomes.append(outcome)
            if outcome.kind in ("retry", "parked"):
                break
        return _worst(outcomes)


_SEVERITY = {"sent": 0, "refused": 1, "locked": 2, "parked": 3, "retry": 4}


def _worst(outcomes: list[Outcome]) -> Outcome:
    worst = max(outcomes, key=lambda o: _SEVERITY[o.kind])
    worst.rejected = frozenset().union(*(o.rejected for o in outcomes))
    return worst


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def judge_response(status: int, headers: Any, body: bytes) -> Outcome:
    """Map an M&E IS answer to an outcome.

    DHIS2 2.38+ wraps the ImportSummary in a WebMessage (``response``) and answers 409 for
    both WARNING and ERROR; 2.3x (and ``/api/37/``) answers the bare summary with 200. An
    unchanged value counts ``ignored`` from 2.38.6/2.39.5/2.40.3 on, and a zero that is not
    significant is skipped: counts say nothing about delivery, conflicts do. Conflicts are
    classified by ``errorCode`` (2.3x conflicts carry none and count as refused values).
    """
    if status == 429:
        return Outcome(
            "retry",
            "HTTP 429 (throttled)",
            retry_after_seconds(headers.get("retry-after"), utcnow()),
            problem="server",
        )
    if status >= 500:
        return Outcome("retry", f"HTTP {status}: {_message(body)}", problem="server")
    if status == 401:
        return Outcome("retry", "HTTP 401: the M&E IS refused the credentials", problem="auth")
    if status == 403:
        return Outcome(
            "retry",
            "HTTP 403: the M&E IS account may not write data values "
            "(it needs the F_DATAVALUE_ADD authority)",
            problem="auth",
        )
    if status not in (200, 201, 202, 409):
        return Outcome("parked", f"HTTP {status}: {_message(body)}", problem="answer")
    try:
        doc = json.loads(body)
    except ValueError:
        return Outcome("parked", f"HTTP {status} without a JSON import summary", problem="answer")
    if not isinstance(doc, dict):
        return Outcome("parked", f"HTTP {status}: unexpected answer", problem="answer")
    inner = doc.get("response")
    summary: dict[str, Any] = inner if isinstance(inner, dict) else doc
    counts = summary.get("importCount") or {}
    conflicts = [c for c in summary.get("conflicts") or [] if isinstance(c, dict)]
    state = summary.get("status")
    brief = {"status": state, "importCount": counts, "conflicts": conflicts[:20]}
    if state is None and not counts:
        return Outcome("parked", f"HTTP {status}: {_message(body)}", None, brief, "answer")
    rejected: set[int] = {int(i) for i in summary.get("rejectedIndexes") or []}
    for c in conflicts:
        rejected |= {int(i) for i in c.get("indexes") or []}
    codes = {str(c.get("errorCode")) for c in conflicts if c.get("errorCode")}
    text = "; ".join(
        f"{c.get('errorCode') or ''} {c.get('object')}: {c.get('value')}".strip()
        for c in conflicts[:3]
    )
    if codes & LOCKED_CODES:
        return Outcome(
            "locked", f"locked in the M&E IS: {text}", None, brief, "locked", frozenset(rejected)
        )
    if state == "ERROR" or conflicts:
        problem = "not_open" if codes and codes <= NOT_OPEN_CODES else "mapping"
        what = "the whole set was refused" if state == "ERROR" else "values refused"
        return Outcome(
            "refused",
            f"{what}: {text or _message(body)}",
            None,
            brief,
            problem,
            frozenset(rejected),
        )
    return Outcome("sent", "", None, brief)


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])[:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")

"""A fake M&E IS that answers like DHIS2 2.41's ``dataValueSets`` import, for forwarding tests.

Written from dhis2-core's source at tag 2.41.9 (paths relative to ``dhis-2/``):

- ``dhis-services/dhis-service-dxf2/.../dxf2/datavalueset/DefaultDataValueSetService.java``
  (``importDataValueSet``, ``importDataValue``, ``saveDataValueUpdate``,
  ``dataValueUpdateShouldBeIgnored``): an unchanged value counts ``ignored``; a zero of a
  numeric element that is not ``zeroIsSignificant`` is skipped uncounted when nothing is
  stored and deletes what is stored; ``"deleted": true`` deletes; a null value is ignored.
- ``.../datavalueset/DataValueSetImportValidator.java`` (order of checks): an unknown outer
  data set (E7600), org unit (E7603) or attribute option combo (E7604), or no write access
  (E7601), aborts the whole set with status ERROR; per value: data element (E7610), period
  (E7611), org unit (E7612), category option combo (E7613), attribute option combo (E7615),
  value defined (E7618), value type (E7619), expiry (E7640), latest open future period
  (E7641), approval (E7642); each refused value counts ``ignored``.
- ``dhis-api/.../dataset/DataSet.java`` ``isLocked``: locked once the server's date is past
  the period's end plus ``expiryDays`` (0 never locks); ``dhis-api/.../period/PeriodType.java``
  ``getFuturePeriod``: with ``openFuturePeriods`` = 0 the running period is refused.
- ``.../dxf2/webmessage/WebMessageUtils.java`` ``importSummary`` and
  ``dhis-web-api/.../webapi/controller/WebMessageControllerAdvice.java``: the answer is a
  WebMessage with the summary under ``response``, HTTP 409 for WARNING and ERROR; under an
  API version before 38 (``/api/37/dataValueSets``) the bare summary with HTTP 200.
- ``dhis-web-api/.../webapi/controller/DataValueSetController.java``: POST needs the
  ``F_DATAVALUE_ADD`` authority (or ``ALL``): HTTP 403 otherwise. Authentication is Basic or
  ``Authorization: ApiToken <token>`` (``.../security/apikey/``), 401 when neither holds.
- ``dhis-api/.../feedback/ErrorCode.java``: the conflict messages.

Accounts, data sharing (E7601, E7614, E7616) and the data capture hierarchy (E7617) follow
``simulator.me_is_access``, which cites its sources.

``idScheme`` (``code`` or ``uid``, default uid) names every object in a push and in a
read-back. The fake's clock (``today``) is the server's, settable by tests. Faults are
injectable over HTTP (``/_fake/faults``) or in Python. Every request is recorded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from simulator.me_is_access import Account, data_writable, in_hierarchy, path_of

#: (dataElement uid, period, orgUnit uid, categoryOptionCombo uid, attributeOptionCombo uid)
Key = tuple[str, str, str, str, str]
DEFAULT_COC = "HllvX50cXC0"  # DHIS2's default category option combo UID
MESSAGES = {
    "E7600": "Data set not found or not accessible: `{0}`",
    "E7601": "User does not have write access for DataSet: `{0}`",
    "E7603": "Org unit not found or not accessible: `{0}`",
    "E7610": "Data element not found or not accessible: `{0}`",
    "E7611": "Period not valid: `{0}`",
    "E7612": "Organisation unit not found or not accessible: `{0}`",
    "E7613": "Category option combo not found or not accessible for writing data: `{0}`",
    "E7614": "Category option combo: `{0}` option not accessible: `{1}`",
    "E7615": "Attribute option combo not found or not accessible for writing data: `{0}`",
    "E7616": "Attribute option combo: `{0}` option not accessible: `{1}`",
    "E7617": "Organisation unit: `{0}` not in hierarchy of current user: `{1}`",
    "E7618": "Data value or comment not specified for data element: `{0}`",
    "E7619": "Value must match value type of data element `{0}`: `{1}`",
    "E7640": "Current date is past expiry days for period: `{0}`  and data set: `{1}`",
    "E7641": "Period: `{0}` is after latest open future period: `{3}` for data element: `{1}` "
    "and data set: `{2}`",
    "E7642": "Data already approved for data set: `{3}` period: `{1}` org unit: `{0}` "
    "attribute option combo: `{2}`",
    "E2001": "At least one data element, data set or data element group must be specified",
    "E2002": "At least one period, start/end dates, last updated or last updated duration "
    "must be specified",
    "E2003": "Both periods and start/end date cannot be specified",
    "E2006": "At least one organisation unit or organisation unit group must be specified",
}
PROPERTY = {
    "E7610": "dataElement",
    "E7611": "period",
    "E7612": "orgUnit",
    "E7613": "categoryOptionCombo",
    "E7614": "categoryOptionCombo",
    "E7615": "attributeOptionCombo",
    "E7616": "attributeOptionCombo",
    "E7617": "orgUnit",
    "E7618": "value",
    "E7619": "value",
    "E7640": "period",
    "E7641": "period",
}


@dataclass
class Faults:
    fail: int = 0
    fail_status: int = 500
    throttle: int = 0
    retry_after_s: int = 1
    delay_s: float = 0.0


@dataclass
class Obj:
    uid: str
    code: str | None
    attrs: dict[str, Any] = field(default_factory=dict)


def _server_today() -> date:
    return datetime.now(UTC).date()


@dataclass
class FakeMeIs:
    """The instance: metadata, stored values, accounts and the server's clock."""

    username: str | None = None
    password: str | None = None
    tokens: dict[str, set[str] | Account] = field(default_factory=dict)
    """ApiTokens and their owners: an account, or only its authorities
    (``{"d2pat_x": {"F_DATAVALUE_ADD"}}``: no user groups, capture at the roots)."""
    today: Callable[[], date] = _server_today
    values: dict[Key, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    lock: threading.RLock = field(default_factory=threading.RLock)
    hold: threading.Event | None = None
    """When set to an unset Event, each import waits for it (a stuck M&E IS)."""
    arrived: threading.Event = field(default_factory=threading.Event)
    """Set whenever a request arrives (tests wait on it instead of sleeping)."""
    approved: set[tuple[str, str]] = field(default_factory=set)
    """(orgUnit uid, period) pairs approved: values there are refused (E7642)."""
    data_elements: dict[str, Obj] = field(default_factory=dict)
    org_units: dict[str, Obj] = field(default_factory=dict)
    cocs: dict[str, Obj] = field(default_factory=dict)
    data_sets: dict[str, Obj] = field(default_factory=dict)
    category_options: dict[str, Obj] = field(default_factory=dict)
    in_flight: int = 0
    """Imports being handled now; ``most_in_flight``: the most at once so far (what a
    client's concurrency looks like from the server)."""
    most_in_flight: int = 0
    system_timezone: str = "Etc/UTC"

    def __post_init__(self) -> None:
        self.cocs.setdefault(DEFAULT_COC, Obj(DEFAULT_COC, "default", {"name": "default"}))
        self.accounts: dict[str, Account] = {}
        if self.username is not None:
            self.accounts[self.username] = Account({"ALL"}, self.password)

    # ------------------------------------------------------------ metadata

    def load_metadata(self, package: dict[str, Any]) -> None:
        """Take a metadata package as ``POST /api/metadata`` would (create or update)."""
        with self.lock:
            for ou in package.get("organisationUnits", []):
                self.org_units[ou["id"]] = Obj(ou["id"], ou.get("code"), dict(ou))
            for de in package.get("dataElements", []):
                self.data_elements[de["id"]] = Obj(de["id"], de.get("code"), dict(de))
            for coc in package.get("categoryOptionCombos", []):
                self.cocs[coc["id"]] = Obj(coc["id"], coc.get("code"), dict(coc))
            for ds in package.get("dataSets", []):
                self.data_sets[ds["id"]] = Obj(ds["id"], ds.get("code"), dict(ds))
            for co in package.get("categoryOptions", []):
                self.category_options[co["id"]] = Obj(co["id"], co.get("code"), dict(co))

    def add_org_unit(self, uid: str, code: str | None, name: str = "") -> None:
        with self.lock:
            self.org_units[uid] = Obj(uid, code, {"id": uid, "code": code, "name": name})

    def forget(self, kind: str, ident: str) -> None:
        """Remove a metadata object (by code or uid): a gap an administrator left."""
        table = self._table(kind)
        with self.lock:
            for uid, obj in list(table.items()):
                if ident in (uid, obj.code):
                    del table[uid]

    def account(
        self,
        name: str,
        password: str,
        authorities: set[str],
        *,
        groups: set[str] | None = None,
        capture: set[str] | None = None,
    ) -> Account:
        """An account; ``capture`` None: data capture at the hierarchy's roots."""
        made = Account(set(authorities), password, set(groups or ()), capture)
        self.accounts[name] = made
        return made

    def parent_of(self, uid: str) -> str | None:
        ou = self.org_units.get(uid)
        parent = (ou.attrs.get("parent") or {}) if ou is not None else {}
        return str(parent["id"]) if parent.get("id") else None

    def path(self, uid: str) -> str:
        return path_of(uid, self.parent_of)

    def capture_units(self, account: Account) -> list[Obj]:
        """The account's data capture org units (the roots when it names none)."""
        with self.lock:
            if account.capture is not None:
                return [self.org_units[u] for u in sorted(account.capture) if u in self.org_units]
            return [o for u, o in sorted(self.org_units.items()) if self.parent_of(u) is None]

    def _table(self, kind: str) -> dict[str, Obj]:
        return {
            "dataElements": self.data_elements,
            "organisationUnits": self.org_units,
            "categoryOptionCombos": self.cocs,
            "dataSets": self.data_sets,
            "categoryOptions": self.category_options,
        }[kind]

    def _find(self, table: dict[str, Obj], ident: str | None, scheme: str) -> Obj | None:
        if not ident:
            return None
        if scheme == "code":
            return next((o for o in table.values() if o.code == ident), None)
        return table.get(ident)

    def ident(self, obj: Obj, scheme: str) -> str:
        return (obj.code or obj.uid) if scheme == "code" else obj.uid

    def reset(self) -> None:
        with self.lock:
            self.values.clear()
            self.requests.clear()
            self.faults = Faults()

    # ------------------------------------------------------------ import

    def import_values(
        self,
        body: dict[str, Any],
        strategy: str = "CREATE_AND_UPDATE",
        *,
        id_scheme: str = "uid",
        dry_run: bool = False,
        account: Account | None = None,
    ) -> dict[str, Any]:
        """Apply (or, with ``dry_run``, only count) a dataValueSet: the ImportSummary.
        ``account``: the caller (None: a superuser at the roots)."""
        with self.lock:
            saved = dict(self.values)
            try:
                return self._import(body, strategy, id_scheme.lower(), account)
            finally:
                if dry_run:
                    self.values.clear()
                    self.values.update(saved)

    def _import(
        self, body: dict[str, Any], strategy: str, scheme: str, account: Account | None
    ) -> dict[str, Any]:
        counts = {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
        conflicts: dict[tuple[str, str], dict[str, Any]] = {}
        rejected: list[int] = []

        def conflict(index: int | None, code: str, *args: str) -> None:
            key = (code, args[0] if args else "")
            c = conflicts.get(key)
            if c is None:
                c = conflicts[key] = {
                    "object": args[0] if args else "",
                    "objects": {},
                    "value": MESSAGES.get(code, code).format(*args, "", "", "", ""),
                    "errorCode": code,
                    "property": PROPERTY.get(code),
                    "indexes": [],
                }
            if index is not None:
                c["indexes"].append(index)

        def summary(status: str, description: str) -> dict[str, Any]:
            return {
                "responseType": "ImportSummary",
                "status": status,
                "importOptions": {
                    "idSchemes": {"idScheme": scheme.upper()},
                    "importStrategy": strategy,
                },
                "description": description,
                "importCount": counts,
                "conflicts": list(conflicts.values()),
                "rejectedIndexes": rejected,
                "dataSetComplete": "false",
            }

        # Outer data set, org unit and attribute option combo: any gap aborts the set.
        data_set = self._find(self.data_sets, body.get("dataSet"), scheme)
        if body.get("dataSet") and data_set is None:
            conflict(None, "E7600", str(body["dataSet"]))
        elif data_set is not None and not data_writable(account, data_set.attrs.get("sharing")):
            conflict(None, "E7601", str(body["dataSet"]))
        outer_ou = body.get("orgUnit")
        if outer_ou and self._find(self.org_units, outer_ou, scheme) is None:
            conflict(None, "E7603", str(outer_ou))
        outer_aoc = body.get("attributeOptionCombo")
        if outer_aoc and self._find(self.cocs, outer_aoc, scheme) is None:
            conflict(None, "E7604", str(outer_aoc))
        if conflicts:
            counts["ignored"] += 0
            return summary("ERROR", "Import process was aborted")

        today = self.today()
        for index, dv in enumerate(body.get("dataValues") or []):
            item = {**{k: body.get(k) for k in ("period", "orgUnit", "attributeOptionCombo")}}
            item.update({k: v for k, v in dv.items() if v is not None})
            before = len(conflicts), sum(len(c["indexes"]) for c in conflicts.values())
            de = self._find(self.data_elements, item.get("dataElement"), scheme)
            period = _parse_period(str(item.get("period") or ""))
            ou = self._find(self.org_units, item.get("orgUnit"), scheme)
            coc = (
                self._find(self.cocs, item.get("categoryOptionCombo"), scheme)
                if item.get("categoryOptionCombo")
                else self.cocs[DEFAULT_COC]
            )
            aoc = (
                self._find(self.cocs, item.get("attributeOptionCombo"), scheme)
                if item.get("attributeOptionCombo")
                else self.cocs[DEFAULT_COC]
            )
            deleted = bool(dv.get("deleted"))
            raw = dv.get("value")
            value = None if raw is None or str(raw).strip() == "" else str(raw).strip()
            if de is None:
                conflict(index, "E7610", str(item.get("dataElement")))
            elif period is None:
                conflict(index, "E7611", str(item.get("period")))
            elif ou is None:
                conflict(index, "E7612", str(item.get("orgUnit")))
            elif coc is None:
                conflict(index, "E7613", str(item.get("categoryOptionCombo")))
            elif closed := self._options_closed(coc, account):
                for option in closed:
                    conflict(index, "E7614", str(item.get("categoryOptionCombo") or ""), option)
            elif aoc is None:
                conflict(index, "E7615", str(item.get("attributeOptionCombo")))
            elif closed := self._options_closed(aoc, account):
                for option in closed:
                    conflict(index, "E7616", str(item.get("attributeOptionCombo") or ""), option)
            elif not in_hierarchy(account, ou.uid, self.parent_of):
                who = account.uid if account is not None else ""
                conflict(index, "E7617", str(item.get("orgUnit")), who)
            elif value is None and not deleted and strategy != "DELETE":
                conflict(index, "E7618", str(item.get("dataElement")))
            elif value is not None and (error := _type_error(value, de)) is not None:
                conflict(index, "E7619", str(item.get("dataElement")), error)
            else:
                self._period_checks(index, conflict, item, period, de, ou, data_set, today)
            after = len(conflicts), sum(len(c["indexes"]) for c in conflicts.values())
            if after != before:
                counts["ignored"] += 1
                rejected.append(index)
                continue
            assert de is not None and ou is not None and coc is not None and aoc is not None
            key: Key = (de.uid, str(item["period"]), ou.uid, coc.uid, aoc.uid)
            existing = self.values.get(key)
            zero_insignificant = (
                value is not None
                and _is_zero(value)
                and not de.attrs.get("zeroIsSignificant", False)
                and de.attrs.get("aggregationType") not in ("AVERAGE", "AVERAGE_SUM_ORG_UNIT")
            )
            if zero_insignificant and (existing is None or strategy == "CREATE"):
                continue  # skipped: neither stored nor counted
            if existing is not None:
                if strategy in ("CREATE_AND_UPDATE", "UPDATE"):
                    if value is None or deleted or zero_insignificant:
                        del self.values[key]
                        counts["deleted"] += 1
                    elif existing == value:
                        counts["ignored"] += 1  # dataValueUpdateShouldBeIgnored
                    else:
                        self.values[key] = value
                        counts["updated"] += 1
                elif strategy == "DELETE":
                    del self.values[key]
                    counts["deleted"] += 1
                else:
                    counts["ignored"] += 1
                    rejected.append(index)
            elif strategy in ("CREATE_AND_UPDATE", "CREATE"):
                if value is None or deleted:
                    counts["ignored"] += 1  # a null value is never created
                else:
                    self.values[key] = value
                    counts["imported"] += 1
            else:
                counts["ignored"] += 1
                rejected.append(index)
        return summary(
            "WARNING" if conflicts else "SUCCESS", "Import process completed successfully"
        )

    def _options_closed(self, combo: Obj, account: Account | None) -> list[str]:
        """The combo's category options the account may not write data through."""
        closed = []
        for ref in combo.attrs.get("categoryOptions") or []:
            option = self.category_options.get(str(ref.get("id")))
            if not data_writable(account, option.attrs.get("sharing") if option else None):
                closed.append(str(ref.get("id")))
        return closed

    def _period_checks(
        self,
        index: int,
        conflict: Callable[..., None],
        item: dict[str, Any],
        period: tuple[date, date],
        de: Obj,
        ou: Obj,
        data_set: Obj | None,
        today: date,
    ) -> None:
        """Expiry, open future periods and approval against the data sets of the value."""
        sets = [data_set] if data_set is not None else self._sets_of(de)
        pe = str(item["period"])
        for ds in sets:
            expiry = int(ds.attrs.get("expiryDays", 0))
            if expiry and today > period[1] + timedelta(days=expiry):
                conflict(index, "E7640", pe, ds.uid)
                return
        for ds in sets:
            latest = (
                today
                - timedelta(days=1)
                + timedelta(days=int(ds.attrs.get("openFuturePeriods", 0)))
            )
            if period[0] > latest:
                conflict(
                    index,
                    "E7641",
                    pe,
                    str(item.get("dataElement")),
                    ds.uid,
                    latest.strftime("%Y%m%d"),
                )
                return
        if (ou.uid, pe) in self.approved:
            conflict(index, "E7642", ou.uid, pe, "default", sets[0].uid if sets else "")

    def _sets_of(self, de: Obj) -> list[Obj]:
        return [
            ds
            for ds in self.data_sets.values()
            if any(e["dataElement"]["id"] == de.uid for e in ds.attrs.get("dataSetElements", []))
        ]

    def read_back(
        self, data_set: str, periods: set[str], org_units: list[str], scheme: str = "uid"
    ) -> list[dict[str, Any]]:
        with self.lock:
            ds = self._find(self.data_sets, data_set, scheme)
            if ds is None:
                return []
            elements = {e["dataElement"]["id"] for e in ds.attrs.get("dataSetElements", [])}
            ous = {o.uid for ident in org_units if (o := self._find(self.org_units, ident, scheme))}
            out = []
            for (de, pe, ou, coc, aoc), v in sorted(self.values.items()):
                if de in elements and ou in ous and pe in periods:
                    out.append(
                        {
                            "dataElement": self.ident(self.data_elements[de], scheme),
                            "period": pe,
                            "orgUnit": self.ident(self.org_units[ou], scheme),
                            "categoryOptionCombo": self.ident(self.cocs[coc], scheme),
                            "attributeOptionCombo": self.ident(self.cocs[aoc], scheme),
                            "value": v,
                        }
                    )
            return out

    def held(self) -> dict[tuple[str, str, str, str], str]:
        """Stored values by (data element, period, org unit, category option combo) codes."""
        with self.lock:
            return {
                (
                    self.ident(self.data_elements[de], "code"),
                    pe,
                    self.ident(self.org_units[ou], "code"),
                    self.ident(self.cocs[coc], "code"),
                ): v
                for (de, pe, ou, coc, _aoc), v in self.values.items()
            }


def _parse_period(pe: str) -> tuple[date, date] | None:
    """Daily ``yyyyMMdd`` periods (all our data set uses)."""
    if not re.fullmatch(r"\d{8}", pe):
        return None
    try:
        day = datetime.strptime(pe, "%Y%m%d").date()
    except ValueError:
        return None
    return day, day


def _is_zero(value: str) -> bool:
    try:
        return float(value) == 0.0
    except ValueError:
        return False


def _type_error(value: str, de: Obj) -> str | None:
    """``ValidationUtils.valueIsValid`` for the numeric types a count can have."""
    kind = de.attrs.get("valueType", "INTEGER_ZERO_OR_POSITIVE")
    if kind == "INTEGER_ZERO_OR_POSITIVE" and not re.fullmatch(r"(0|[1-9]\d*)", value):
        return "value_not_zero_or_positive_integer"
    if kind == "INTEGER_POSITIVE" and not re.fullmatch(r"[1-9]\d*", value):
        return "value_not_positive_integer"
    if kind == "INTEGER" and not re.fullmatch(r"(0|-?[1-9]\d*)", value):
        return "value_not_integer"
    if kind == "NUMBER" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        return "value_not_numeric"
    return None

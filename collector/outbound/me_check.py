"""``forward check``: does the live M&E IS hold everything the mapping names?

Read-only calls to DHIS2's Web API (``GET /api/system/info``, ``/api/me``,
``/api/dataSets``, ``/api/dataElements``, ``/api/categoryOptionCombos``,
``/api/categoryOptions``, ``/api/organisationUnits`` with ``filter=code:in:[...]`` or
``filter=id:in:[...]``, ``fields`` and ``paging=false``), compared with the mapping: each
gap is reported before the first push would find it as a conflict.

The account's rights are read as DHIS2 applies them (``DefaultAclService.canDataWrite``,
``DataValueSetImportValidator``): without ``ALL``, the data set (E7601) and each service's
category options (E7614) must be shared with data write (``sharing.public`` or one of the
account's ``userGroups``; the access string's 4th character); and, for every account,
each mapped org unit must be one of its data capture org units or below one (E7617, by
the org unit's ``path``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from collector.outbound.mapping import Entry, Mapping

#: The 4th character of a DHIS2 access string is data write (``AccessStringHelper``).
DATA_WRITE = 3


def _data_writable(sharing: Any, groups: set[str]) -> bool:
    if not isinstance(sharing, dict):
        return False
    if str(sharing.get("public") or "")[DATA_WRITE : DATA_WRITE + 1] == "w":
        return True
    return any(
        str(grant.get("id") or uid) in groups
        and str(grant.get("access") or "")[DATA_WRITE : DATA_WRITE + 1] == "w"
        for uid, grant in (sharing.get("userGroups") or {}).items()
        if isinstance(grant, dict)
    )


#: Value types that hold a count (``ValidationUtils.valueIsValid``): zero must be valid.
COUNT_TYPES = {"INTEGER_ZERO_OR_POSITIVE", "INTEGER", "NUMBER"}
SUPPORTED = ((2, 38), (2, 41))


@dataclass(frozen=True)
class Finding:
    level: str  # "error", "warning" or "ok"
    text: str

    def __str__(self) -> str:
        return f"{self.level.upper():7s} {self.text}"


class CheckFailed(RuntimeError):
    pass


def _get(http: httpx.Client, base: str, path: str, **params: Any) -> Any:
    try:
        r = http.get(base.rstrip("/") + path, params=params)
    except httpx.HTTPError as exc:
        raise CheckFailed(f"GET {path}: {type(exc).__name__}: {exc}") from exc
    if r.status_code in (401, 403):
        raise CheckFailed(f"GET {path}: HTTP {r.status_code}: the M&E IS refused the account")
    if r.status_code != 200:
        raise CheckFailed(f"GET {path}: HTTP {r.status_code}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError as exc:
        raise CheckFailed(f"GET {path}: not JSON (is this a DHIS2 Web API?)") from exc


def _lookup(
    http: httpx.Client,
    base: str,
    kind: str,
    m: Mapping,
    entries: Iterable[Entry],
    fields: str,
) -> dict[str, dict[str, Any]]:
    """The objects of ``kind`` named by ``entries``, by the identifier we send."""
    prop = "code" if m.id_scheme == "code" else "id"
    wanted = sorted({m.ident(e) for e in entries})
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 100):
        chunk = wanted[start : start + 100]
        doc = _get(
            http,
            base,
            f"/api/{kind}",
            filter=f"{prop}:in:[{','.join(chunk)}]",
            fields=fields,
            paging="false",
        )
        for obj in doc.get(kind, []) if isinstance(doc, dict) else []:
            found[str(obj.get(prop))] = obj
    return found


def check(
    m: Mapping,
    http: httpx.Client,
    base: str,
    registry: tuple[set[str], set[str]] | None = None,
) -> list[Finding]:
    """What would go wrong pushing with ``m`` to the M&E IS at ``base``. ``registry``:
    the centres (with a desk now) and services the registry holds: each must have its
    row in the mapping, or its days park as unmapped."""
    out: list[Finding] = []

    def err(text: str) -> None:
        out.append(Finding("error", text))

    def warn(text: str) -> None:
        out.append(Finding("warning", text))

    if registry is not None:
        centres, services = registry
        for code in sorted(centres - set(m.org_units)):
            err(f"centre {code} is in the registry but has no org_unit row in {m.source}: "
                "its days would park as unmapped")  # fmt: skip
        for code in sorted(services - set(m.services)):
            err(f"service {code} is in the registry but has no service row in {m.source}: "
                "its days would park as unmapped")  # fmt: skip

    info = _get(http, base, "/api/system/info")
    version = str(info.get("version", "?"))
    try:
        major_minor = tuple(int(x) for x in version.split("-")[0].split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    if not (SUPPORTED[0] <= major_minor <= SUPPORTED[1]):
        warn(f"DHIS2 {version}: forwarding is written for 2.38 to 2.41")
    else:
        out.append(Finding("ok", f"DHIS2 {version}"))
    zone = str(info.get("serverTimeZoneId", ""))
    ours = m.options["server_timezone"]
    if zone and zone.removeprefix("Etc/") != ours.removeprefix("Etc/"):
        warn(
            f"the server's clock runs in {zone}, the mapping says server_timezone {ours}: "
            "set it to match, or a day may be pushed before its period opens"
        )
    me = _get(http, base, "/api/me", fields="authorities,userGroups[id],organisationUnits[id,path]")
    me = me if isinstance(me, dict) else {}
    held = set(me.get("authorities", []))
    if not held & {"ALL", "F_DATAVALUE_ADD"}:
        err("the account lacks the F_DATAVALUE_ADD authority: every push would get HTTP 403")
    superuser = "ALL" in held
    groups = {str(g.get("id")) for g in me.get("userGroups", []) if isinstance(g, dict)}
    capture = {str(o.get("id")) for o in me.get("organisationUnits", []) if isinstance(o, dict)}
    if not capture:
        err("the account has no data capture org units: every value would be refused (E7617)")
    share_hint = (
        f"the mapping's user_group {m.user_group}"
        if m.user_group
        else "a user group of the account (set user_group in the mapping and re-import the package)"
    )

    assert m.data_set is not None
    sets = _lookup(
        http,
        base,
        "dataSets",
        m,
        [m.data_set],
        "id,code,name,periodType,openFuturePeriods,expiryDays,sharing,"
        "dataSetElements[dataElement[id]],organisationUnits[id]",
    )
    ds = sets.get(m.ident(m.data_set))
    if ds is None:
        err(f"data set {m.ident(m.data_set)} not found: every push would be aborted (E7600)")
    else:
        if ds.get("periodType") != "Daily":
            err(f"data set {m.ident(m.data_set)} has period type {ds.get('periodType')}, not Daily")
        if int(ds.get("openFuturePeriods") or 0) < m.open_future_periods:
            warn(
                f"data set openFuturePeriods is {ds.get('openFuturePeriods') or 0}, the mapping "
                f"says {m.open_future_periods}: the last day is refused until it opens (E7641)"
            )
        expiry = int(ds.get("expiryDays") or 0)
        if expiry:
            warn(
                f"data set expiryDays is {expiry}: a day that comes in later than that is "
                "locked there (E7640) and reported, not retried"
            )
        if not superuser and not _data_writable(ds.get("sharing"), groups):
            err(
                f"the account may not write data into data set {m.ident(m.data_set)}: every "
                f"push would be aborted (E7601); share it for data write with {share_hint}"
            )
        out.append(Finding("ok", f"data set {m.ident(m.data_set)}"))

    elements = _lookup(
        http,
        base,
        "dataElements",
        m,
        [*m.data_elements.values(), *m.extra_elements.values()],
        "id,code,name,valueType,zeroIsSignificant,aggregationType,categoryCombo[id]",
    )
    in_set = {
        str((e.get("dataElement") or {}).get("id")) for e in (ds or {}).get("dataSetElements", [])
    }
    combos: set[str] = set()
    keyed = [(f"R{scale}_{level}", e) for (scale, level), e in sorted(m.data_elements.items())]
    for key, entry in [*keyed, *sorted(m.extra_elements.items())]:
        ident = m.ident(entry)
        de = elements.get(ident)
        if de is None:
            err(f"data element {ident} ({key}) not found (E7610)")
            continue
        if de.get("valueType") not in COUNT_TYPES:
            err(
                f"data element {ident} has value type {de.get('valueType')}: "
                "zero is refused (E7619)"
            )
        if m.zeros_significant and not de.get("zeroIsSignificant"):
            err(
                f"data element {ident} is not zeroIsSignificant: the zeros the mapping sends "
                "would be dropped (set zeros to omit, or make it significant)"
            )
        if ds is not None and de.get("id") not in in_set:
            err(f"data element {ident} is not in data set {m.ident(m.data_set)}")
        combos.add(str((de.get("categoryCombo") or {}).get("id")))
    cocs = _lookup(
        http,
        base,
        "categoryOptionCombos",
        m,
        m.services.values(),
        "id,code,name,categoryCombo[id],categoryOptions[id]",
    )
    option_ids = sorted(
        {str(o.get("id")) for c in cocs.values() for o in c.get("categoryOptions") or []}
    )
    options: dict[str, dict[str, Any]] = {}
    for start in range(0, len(option_ids) if not superuser else 0, 100):
        doc = _get(
            http,
            base,
            "/api/categoryOptions",
            filter=f"id:in:[{','.join(option_ids[start : start + 100])}]",
            fields="id,code,name,sharing",
            paging="false",
        )
        for o in doc.get("categoryOptions", []) if isinstance(doc, dict) else []:
            options[str(o.get("id"))] = o
    for key, entry in sorted(m.services.items()):
        ident = m.ident(entry)
        coc = cocs.get(ident)
        if coc is None:
            err(f"category option combo {ident} (service {key}) not found (E7613)")
        elif combos and str((coc.get("categoryCombo") or {}).get("id")) not in combos:
            err(
                f"category option combo {ident} (service {key}) is not in the data elements' "
                "category combo"
            )
        if coc is not None and not superuser:
            for ref in coc.get("categoryOptions") or []:
                option = options.get(str(ref.get("id")), {})
                if not _data_writable(option.get("sharing"), groups):
                    name = option.get("code") or ref.get("id")
                    err(
                        f"the account may not write data through category option {name} "
                        f"(service {key}): its values would be refused (E7614); share it "
                        f"for data write with {share_hint}"
                    )
    units = _lookup(http, base, "organisationUnits", m, m.org_units.values(), "id,code,name,path")
    assigned = {str(o.get("id")) for o in (ds or {}).get("organisationUnits", [])}
    for key, entry in sorted(m.org_units.items()):
        ident = m.ident(entry)
        ou = units.get(ident)
        if ou is None:
            err(f"org unit {ident} (centre {key}) not found (E7603)")
        else:
            if ds is not None and str(ou.get("id")) not in assigned:
                err(f"org unit {ident} (centre {key}) is not assigned to the data set")
            if capture and not capture & set(str(ou.get("path") or "").strip("/").split("/")):
                err(
                    f"org unit {ident} (centre {key}) is outside the account's data capture "
                    "org units: its values would be refused (E7617); give the account the "
                    "centres' parent (or the root) for data capture"
                )
    found = len(m.data_elements) + len(m.extra_elements) + len(m.services) + len(m.org_units)
    if not any(f.level == "error" for f in out):
        out.append(Finding("ok", f"all {found} mapped objects exist and are assigned"))
    return out


def resolve_org_units(m: Mapping, http: httpx.Client, base: str) -> list[Finding]:
    """Fill in the UIDs of the M&E IS's own org units, found by each centre's code (the
    mapping's ``code``): the package then assigns the data set to them, and a mapping
    with ``id_scheme`` uid pushes to them. A centre not found is named; its row is kept."""
    out: list[Finding] = []
    wanted = sorted({e.code for e in m.org_units.values() if e.code})
    found: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(wanted), 100):
        doc = _get(
            http,
            base,
            "/api/organisationUnits",
            filter=f"code:in:[{','.join(wanted[start : start + 100])}]",
            fields="id,code,name,path",
            paging="false",
        )
        for o in doc.get("organisationUnits", []) if isinstance(doc, dict) else []:
            found.setdefault(str(o.get("code")), []).append(o)
    for key, entry in sorted(m.org_units.items()):
        hits = found.get(entry.code, [])
        if not hits:
            out.append(Finding("error", f"centre {key}: no org unit with code {entry.code}"))
            continue
        ou = hits[0]
        if entry.uid != ou.get("id"):
            out.append(Finding("ok", f"centre {key}: org unit {ou.get('id')} ({ou.get('name')})"))
        m.org_units[key] = replace(entry, uid=str(ou.get("id")))
    return out

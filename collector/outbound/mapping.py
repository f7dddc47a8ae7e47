"""The mapping from our registry to the M&E IS's metadata, and the package that creates it.

A DHIS2 instance accepts a data value only when its data element, org unit, category
option combo and data set already exist there. The mapping says, for every thing we
forward, which of the M&E IS's objects it is:

``kind,key,uid,code,name,value`` (CSV, UTF-8, one row per object):

- ``option`` rows set how forwarding speaks (``value``): ``id_scheme`` (``code`` or
  ``uid``: which identifier goes into every data value), ``zeros`` (``significant``: send
  zeros, the data elements store them; ``omit``: send none and delete a value that drops to
  zero), ``open_future_periods``, ``expiry_days`` (written into the data set) and
  ``server_timezone`` (the M&E IS's clock, which opens and closes periods) and
  ``user_group`` (the UID of the M&E IS's user group that holds the import account: the
  package shares the data set and the service category options with it for data write);
- ``data_set`` (key empty): the Daily data set every value is sent under;
- ``category`` / ``category_combo`` (key ``service``): the disaggregation by service;
- ``data_element`` (key ``R{scale}_{level}``, e.g. ``R4_1``): ratings at one level of a scale
  (every channel together); ``ONLINE_R{scale}_{level}``: the online channel's part of them;
  ``F_{FACTOR}_{scale}_{level}``: answers to an assessment factor (``PROCEDURE``,
  ``CONDUCT``, ``COMPETENCE`` on the rating's scale; ``SOLVED`` on 3: 1 no, 2 partly,
  3 yes). Rows for the last two are optional: without them those counts are not sent;
- ``service`` (key: our service code, or ``NONE``): its category option combo;
- ``org_unit`` (key: our centre code): the centre's organisation unit.

Without a file, the mapping is derived from the registry (codes ``GNAHAT_...`` and stable
UIDs), so a fresh installation forwards out of the box against an instance that imported
the matching metadata package (:func:`metadata_package`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

COLUMNS = ("kind", "key", "uid", "code", "name", "value")
KINDS = ("option", "data_set", "category", "category_combo", "data_element", "service", "org_unit")
NO_SERVICE = "NONE"
SCALES = (3, 4, 5)
UID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{10}$")
#: DHIS2 codes are at most 50 characters (``BaseIdentifiableObject.code``).
CODE_MAX = 50
OPTIONS: dict[str, str] = {
    "id_scheme": "code",
    "zeros": "significant",
    "open_future_periods": "1",
    "expiry_days": "0",
    "server_timezone": "UTC",
    "user_group": "",
}
#: Options that shape only the metadata package, not what is pushed (not in the digest).
PACKAGE_OPTIONS = frozenset({"user_group"})
#: DHIS2 access strings (``AccessStringHelper``): metadata read/write, then data read/write.
#: The import group reads the metadata and reads and writes data; the public sees the
#: metadata only (what DHIS2 itself gives an object created without sharing, or less).
GROUP_ACCESS = "r-rw----"
PUBLIC_ACCESS = "r-------"
_UID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: Measures beyond the ratings (``R``): the online channel's part, and each factor.
FACTOR_MEASURES = ("F_PROCEDURE", "F_SOLVED", "F_CONDUCT", "F_COMPETENCE")
EXTRA_KEY_RE = re.compile(r"^(ONLINE_R|F_(?:PROCEDURE|SOLVED|CONDUCT|COMPETENCE)_)(\d)_(\d)$")


def element_key(measure: str, scale: int, level: int) -> str:
    """The mapping key of one measure at one level: ``R4_1``, ``ONLINE_R4_1``, ``F_SOLVED_3_1``."""
    if measure in ("R", "ONLINE_R"):
        return f"{measure}{scale}_{level}"
    return f"{measure}_{scale}_{level}"


def _describe(key: str) -> str:
    m = EXTRA_KEY_RE.match(key)
    if m is None:
        return key
    measure, scale, level = m[1].rstrip("_"), m[2], m[3]
    if measure == "ONLINE_R":
        return f"Gnahat online ratings, {scale}-point scale, level {level}"
    factor = measure[2:].lower()
    if factor == "solved":
        return f"Gnahat issue solved: {('no', 'partly', 'yes')[int(level) - 1]}"
    return f"Gnahat {factor}, {scale}-point scale, level {level}"


def stable_uid(*parts: str) -> str:
    """A DHIS2-shaped UID (a letter, then 10 letters or digits) derived from ``parts``:
    the same names give the same UID on every run, so a regenerated package updates
    rather than duplicates."""
    digest = hashlib.sha256(":".join(("gnahat", *parts)).encode()).digest()
    first = _UID_ALPHABET[digest[0] % 52]
    return first + "".join(_UID_ALPHABET[b % 62] for b in digest[1:11])


@dataclass(frozen=True)
class Entry:
    uid: str
    code: str
    name: str
    line: int = 0


class MappingError(ValueError):
    """The mapping file is wrong: every problem with its line and field."""

    def __init__(self, source: str, problems: list[tuple[int, str, str]]) -> None:
        self.source = source
        self.problems = problems
        text = "; ".join(f"{source} line {n}, field {f}: {m}" for n, f, m in problems[:20])
        super().__init__(text)


@dataclass
class Mapping:
    options: dict[str, str] = field(default_factory=lambda: dict(OPTIONS))
    data_set: Entry | None = None
    category: Entry | None = None
    category_combo: Entry | None = None
    data_elements: dict[tuple[int, int], Entry] = field(default_factory=dict)
    extra_elements: dict[str, Entry] = field(default_factory=dict)
    """Online and factor measures, by key (``ONLINE_R4_1``, ``F_SOLVED_3_1``)."""
    services: dict[str, Entry] = field(default_factory=dict)
    org_units: dict[str, Entry] = field(default_factory=dict)
    source: str = "the registry"

    # ------------------------------------------------------------ reading

    @property
    def id_scheme(self) -> str:
        return self.options["id_scheme"]

    @property
    def zeros_significant(self) -> bool:
        return self.options["zeros"] == "significant"

    @property
    def open_future_periods(self) -> int:
        return int(self.options["open_future_periods"])

    @property
    def expiry_days(self) -> int:
        return int(self.options["expiry_days"])

    @property
    def server_timezone(self) -> ZoneInfo:
        return ZoneInfo(self.options["server_timezone"])

    def ident(self, entry: Entry) -> str:
        """The identifier sent for ``entry`` under the mapping's id scheme."""
        return entry.code if self.id_scheme == "code" else entry.uid

    def element(self, scale: int, level: int) -> Entry | None:
        return self.data_elements.get((scale, level))

    def measure_element(self, measure: str, scale: int, level: int) -> Entry | None:
        if measure == "R":
            return self.element(scale, level)
        return self.extra_elements.get(element_key(measure, scale, level))

    @property
    def user_group(self) -> str | None:
        return self.options.get("user_group") or None

    def digest(self) -> str:
        """What decides the pushed values (a change re-plans every day); options that
        shape only the package are left out."""
        text = to_csv(self, skip=PACKAGE_OPTIONS)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry_rows(m: Mapping) -> Iterable[tuple[str, str, Entry]]:
    if m.data_set:
        yield "data_set", "", m.data_set
    if m.category:
        yield "category", "service", m.category
    if m.category_combo:
        yield "category_combo", "service", m.category_combo
    for (scale, level), e in sorted(m.data_elements.items()):
        yield "data_element", f"R{scale}_{level}", e
    for key, e in sorted(m.extra_elements.items()):
        yield "data_element", key, e
    for key, e in sorted(m.services.items()):
        yield "service", key, e
    for key, e in sorted(m.org_units.items()):
        yield "org_unit", key, e


def to_csv(m: Mapping, skip: frozenset[str] = frozenset()) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for key, value in m.options.items():
        if key not in skip:
            w.writerow(("option", key, "", "", "", value))
    for kind, key, e in _entry_rows(m):
        w.writerow((kind, key, e.uid, e.code, e.name, ""))
    return out.getvalue()


def derive(
    centres: Iterable[tuple[str, str]],
    services: Iterable[tuple[str, str]],
    scales: Iterable[int] = SCALES,
) -> Mapping:
    """The default mapping: ``GNAHAT_`` codes and stable UIDs for our objects.

    ``centres`` and ``services`` are ``(code, English name)`` pairs from the registry.
    """
    m = Mapping()
    m.data_set = Entry(stable_uid("dataSet", "daily"), "GNAHAT_DAILY", "Gnahat daily ratings")
    m.category = Entry(stable_uid("category", "service"), "GNAHAT_SERVICE", "Gnahat service")
    m.category_combo = Entry(
        stable_uid("categoryCombo", "service"), "GNAHAT_SERVICE", "Gnahat service"
    )
    for scale in sorted(set(scales)):
        for level in range(1, scale + 1):
            m.data_elements[(scale, level)] = Entry(
                stable_uid("dataElement", f"R{scale}_{level}"),
                f"GNAHAT_R{scale}_{level}",
                f"Gnahat ratings, {scale}-point scale, level {level}",
            )
        for level in range(1, scale + 1):
            keys = [element_key("ONLINE_R", scale, level)]
            keys += [element_key(f, scale, level) for f in FACTOR_MEASURES if f != "F_SOLVED"]
            for key in keys:
                m.extra_elements[key] = Entry(
                    stable_uid("dataElement", key), f"GNAHAT_{key}", _describe(key)
                )
    for level in (1, 2, 3):
        key = element_key("F_SOLVED", 3, level)
        m.extra_elements[key] = Entry(
            stable_uid("dataElement", key), f"GNAHAT_{key}", _describe(key)
        )
    for code, name in [*services, (NO_SERVICE, "No service recorded")]:
        m.services[code] = Entry(stable_uid("coc", code), f"GNAHAT_SVC_{code}"[:CODE_MAX], name)
    for code, name in centres:
        m.org_units[code] = Entry(stable_uid("orgUnit", code), code, name)
    return m


def derive_from_db(session: Any) -> Mapping:
    from sqlalchemy import select

    from collector.models import Centre, Device, Service

    centres = session.execute(select(Centre.code, Centre.name_en).order_by(Centre.code)).all()
    services = session.execute(select(Service.code, Service.name_en).order_by(Service.code)).all()
    scales = set(session.scalars(select(Device.scale).distinct())) | set(SCALES)
    return derive(
        [(c, n) for c, n in centres], [(c, n) for c, n in services], [s for s in scales if s]
    )


def load(path: Path) -> Mapping:
    return parse(path.read_text(encoding="utf-8"), str(path))


def parse(text: str, source: str = "mapping") -> Mapping:
    """Read and check a mapping; :class:`MappingError` lists every problem found."""
    problems: list[tuple[int, str, str]] = []
    m = Mapping(source=source)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise MappingError(source, [(1, c, "missing column") for c in missing])
    seen: dict[tuple[str, str], int] = {}
    used: dict[tuple[str, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        kind = (row.get("kind") or "").strip()
        key = (row.get("key") or "").strip()
        uid = (row.get("uid") or "").strip()
        code = (row.get("code") or "").strip()
        name = (row.get("name") or "").strip()
        value = (row.get("value") or "").strip()
        if not kind:
            continue
        if kind not in KINDS:
            problems.append((line, "kind", f"{kind!r} is not one of {', '.join(KINDS)}"))
            continue
        if (kind, key) in seen:
            problems.append((line, "key", f"{kind} {key!r} already on line {seen[(kind, key)]}"))
            continue
        seen[(kind, key)] = line
        if kind == "option":
            problems += _option(m, line, key, value)
            continue
        if uid and not UID_RE.match(uid):
            problems.append(
                (line, "uid", f"{uid!r} is not a DHIS2 UID (a letter, then 10 letters or digits)")
            )
        if len(code) > CODE_MAX:
            problems.append((line, "code", f"longer than {CODE_MAX} characters"))
        if not uid and not code:
            problems.append((line, "uid", "give a uid or a code (or both)"))
            continue
        for ident_kind, ident in (("uid", uid), ("code", code)):
            if ident:
                slot = (kind, ident_kind, ident)
                if slot in used:
                    problems.append(
                        (line, ident_kind, f"{ident!r} already used on line {used[slot]}")
                    )
                used[slot] = line
        entry = Entry(uid, code, name or key, line)
        extra = EXTRA_KEY_RE.match(key) if kind == "data_element" else None
        if extra is not None:
            scale, level = int(extra[2]), int(extra[3])
            if (extra[1] == "F_SOLVED_" and scale != 3) or not (
                3 <= scale <= 5 and 1 <= level <= scale
            ):
                problems.append((line, "key", f"{key!r}: no such level of that scale"))
                continue
            m.extra_elements[key] = entry
        elif kind == "data_element":
            match = re.fullmatch(r"R(\d)_(\d)", key)
            if not match or not (3 <= int(match[1]) <= 5 and 1 <= int(match[2]) <= int(match[1])):
                problems.append(
                    (
                        line,
                        "key",
                        f"{key!r} is not R<scale>_<level> (e.g. R4_1), ONLINE_R<scale>_<level> "
                        "or F_<FACTOR>_<scale>_<level>",
                    )
                )
                continue
            m.data_elements[(int(match[1]), int(match[2]))] = entry
        elif kind == "service":
            if not key:
                problems.append((line, "key", "a service code (or NONE)"))
                continue
            m.services[key] = entry
        elif kind == "org_unit":
            if not key:
                problems.append((line, "key", "a centre code"))
                continue
            m.org_units[key] = entry
        elif kind == "data_set":
            m.data_set = entry
        elif kind == "category":
            m.category = entry
        elif kind == "category_combo":
            m.category_combo = entry
    for kind, key, e in _entry_rows(m):
        if m.id_scheme == "code" and not e.code:
            problems.append((e.line, "code", f"id_scheme is code, so {kind} {key!r} needs one"))
        if m.id_scheme == "uid" and not e.uid:
            problems.append((e.line, "uid", f"id_scheme is uid, so {kind} {key!r} needs one"))
    if m.data_set is None:
        problems.append((reader.line_num, "kind", "no data_set row: values need a data set"))
    if problems:
        raise MappingError(source, sorted(problems))
    return m


def _option(m: Mapping, line: int, key: str, value: str) -> list[tuple[int, str, str]]:
    if key not in OPTIONS:
        return [(line, "key", f"unknown option {key!r} (known: {', '.join(OPTIONS)})")]
    if key == "id_scheme" and value not in ("code", "uid"):
        return [(line, "value", "id_scheme is code or uid")]
    if key == "zeros" and value not in ("significant", "omit"):
        return [(line, "value", "zeros is significant or omit")]
    if key in ("open_future_periods", "expiry_days") and not (
        value.isdigit() and int(value) < 10000
    ):
        return [(line, "value", f"{key} is a whole number of days (0 or more)")]
    if key == "user_group" and value and not UID_RE.match(value):
        return [(line, "value", "user_group is the UID of a DHIS2 user group (11 characters)")]
    if key == "server_timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            return [(line, "value", f"{value!r} is not an IANA time zone (e.g. UTC, Asia/Yerevan)")]
    m.options[key] = value
    return []


# ---------------------------------------------------------------- the metadata package


def _short(text: str) -> str:
    return text[:50]


def metadata_package(
    m: Mapping, *, org_units: bool = False, org_unit_parent: str | None = None
) -> dict[str, Any]:
    """The DHIS2 metadata (``POST /api/metadata``) that makes the mapping true.

    Data elements are ``INTEGER_ZERO_OR_POSITIVE`` with ``aggregationType`` SUM, so counts
    add up across days and org units; ``zeroIsSignificant`` follows the ``zeros`` option
    (DHIS2 drops a zero of an element that is not, and deletes the value it replaces). The
    data set is Daily with the mapping's ``openFuturePeriods`` (1 by default: a day that
    has ended in Yerevan is still the running day on a server in UTC for four hours) and
    ``expiryDays`` (0: never locks). The category option combos are written out with the
    mapping's codes and UIDs, so an ``idScheme=code`` push finds them.

    Sharing: DHIS2 lets an account without ``ALL`` write a value only when the data set
    and every category option of its combo grant it *data write* (E7601, E7614). The data
    set and the service options are shared with the mapping's ``user_group`` as
    ``r-rw----`` (metadata read, data read and write) and publicly as ``r-------``.

    Org units are the M&E IS's own and only referenced (their UIDs, which ``forward
    org-units`` reads from the server by centre code), unless ``org_units`` (an empty test
    or demo instance): then they are created under ``org_unit_parent``, or under a root
    of their own so the centres have a parent and a level.
    """
    if m.data_set is None or m.category is None or m.category_combo is None:
        raise ValueError("the mapping needs data_set, category and category_combo rows")
    for e in (
        m.data_set, m.category, m.category_combo, *m.data_elements.values(),
        *m.extra_elements.values(),
    ):  # fmt: skip
        if not e.uid:
            raise ValueError(f"{e.name}: the package needs a uid for every object")
    cc = {"id": m.category_combo.uid}
    sharing = _sharing(m.user_group)
    options, cocs = [], []
    for key, e in sorted(m.services.items()):
        option_uid = stable_uid("categoryOption", key)
        options.append(
            {
                "id": option_uid,
                "code": e.code,
                "name": e.name,
                "shortName": _short(e.name),
                "sharing": sharing,
            }
        )
        cocs.append(
            {
                "id": e.uid,
                "code": e.code,
                "name": e.name,
                "categoryCombo": cc,
                "categoryOptions": [{"id": option_uid}],
            }
        )
    elements = [
        {
            "id": e.uid,
            "code": e.code,
            "name": e.name,
            "shortName": _short(f"Gnahat R{scale} level {level}"),
            "formName": f"Level {level} of {scale}",
            "valueType": "INTEGER_ZERO_OR_POSITIVE",
            "aggregationType": "SUM",
            "domainType": "AGGREGATE",
            "zeroIsSignificant": m.zeros_significant,
            "categoryCombo": cc,
        }
        for (scale, level), e in sorted(m.data_elements.items())
    ]
    elements += [
        {
            "id": e.uid,
            "code": e.code,
            "name": e.name,
            "shortName": _short(key.replace("_", " ").title()),
            "formName": _describe(key),
            "valueType": "INTEGER_ZERO_OR_POSITIVE",
            "aggregationType": "SUM",
            "domainType": "AGGREGATE",
            "zeroIsSignificant": m.zeros_significant,
            "categoryCombo": cc,
        }
        for key, e in sorted(m.extra_elements.items())
    ]
    ds = m.data_set
    package: dict[str, Any] = {
        "categoryOptions": options,
        "categories": [
            {
                "id": m.category.uid,
                "code": m.category.code,
                "name": m.category.name,
                "shortName": _short(m.category.name),
                "dataDimensionType": "DISAGGREGATION",
                "dataDimension": True,
                "categoryOptions": [{"id": o["id"]} for o in options],
            }
        ],
        "categoryCombos": [
            {
                "id": m.category_combo.uid,
                "code": m.category_combo.code,
                "name": m.category_combo.name,
                "dataDimensionType": "DISAGGREGATION",
                "categories": [{"id": m.category.uid}],
            }
        ],
        "categoryOptionCombos": cocs,
        "dataElements": elements,
        "dataSets": [
            {
                "id": ds.uid,
                "code": ds.code,
                "name": ds.name,
                "shortName": _short(ds.name),
                "periodType": "Daily",
                "openFuturePeriods": m.open_future_periods,
                "expiryDays": m.expiry_days,
                "sharing": sharing,
                "dataSetElements": [
                    {"dataElement": {"id": e["id"]}, "dataSet": {"id": ds.uid}} for e in elements
                ],
                "organisationUnits": [
                    {"id": e.uid} if e.uid else {"code": e.code}
                    for _, e in sorted(m.org_units.items())
                ],
            }
        ],
    }
    if org_units:
        roots = []
        if org_unit_parent is None:
            org_unit_parent = TEST_ROOT_UID
            roots = [
                {
                    "id": TEST_ROOT_UID,
                    "code": "GNAHAT_TEST_ROOT",
                    "name": "Gnahat test instance",
                    "shortName": "Gnahat test instance",
                    "openingDate": "2020-01-01",
                }
            ]
        package["organisationUnits"] = roots + [
            {
                "id": e.uid,
                "code": e.code,
                "name": e.name,
                "shortName": _short(e.name),
                "openingDate": "2020-01-01",
                "parent": {"id": org_unit_parent},
            }
            for _, e in sorted(m.org_units.items())
        ]
    return package


TEST_ROOT_UID = stable_uid("orgUnit", "test-root")


def _sharing(group: str | None) -> dict[str, Any]:
    """DHIS2's ``sharing`` object (2.36 and later): data write for the import group."""
    return {
        "public": PUBLIC_ACCESS,
        "external": False,
        "users": {},
        "userGroups": {group: {"id": group, "access": GROUP_ACCESS}} if group else {},
    }

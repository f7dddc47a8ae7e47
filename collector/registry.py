"""The registry: centres, services, employees, badges, devices and their assignments.

CSV import (all or nothing, errors naming file, line and column), export, and an
in-memory :class:`Snapshot` used at ingest to tie an event to where and whom it
rates, by press time.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector import hours
from collector.models import (
    Assignment,
    AuditLog,
    Badge,
    Centre,
    Device,
    Employee,
    Meta,
    Service,
)
from device.protocol import BADGE_RE, DEVICE_ID_RE

TZ = ZoneInfo("Asia/Yerevan")
MARZES = {
    "AM-ER",
    "AM-AG",
    "AM-AR",
    "AM-AV",
    "AM-GR",
    "AM-KT",
    "AM-LO",
    "AM-SH",
    "AM-SU",
    "AM-TV",
    "AM-VD",
}

#: Columns of each file, in order. docs/registry.md documents them (a test checks).
COLUMNS: dict[str, tuple[str, ...]] = {
    "centres": (
        "code",
        "name_hy",
        "name_en",
        "marz",
        "community",
        "address",
        "latitude",
        "longitude",
        "hours",
    ),
    "services": ("code", "name_hy", "name_en"),
    "employees": ("code", "centre", "name", "position"),
    "badges": ("badge", "employee", "valid_from", "valid_to"),
    "devices": ("device", "kind", "scale", "created_at", "retired_at"),
    "assignments": (
        "device",
        "centre",
        "desk",
        "default_employee",
        "service",
        "valid_from",
        "valid_to",
    ),
}
ORDER = ("centres", "services", "employees", "badges", "devices", "assignments")
REQUIRED = {
    "centres": {"code", "name_hy", "name_en", "marz", "community"},
    "services": {"code", "name_hy", "name_en"},
    "employees": {"code", "centre", "name"},
    "badges": {"badge", "employee", "valid_from"},
    "devices": {"device"},
    "assignments": {"device", "centre", "desk", "valid_from"},
}


@dataclass
class CsvError:
    file: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        col = f", column {self.column}" if self.column else ""
        return f"{self.file}.csv line {self.line}{col}: {self.message}"


class RegistryImportError(ValueError):
    def __init__(self, errors: list[CsvError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"registry import refused, nothing changed:\n{lines}{more}")


def parse_time(value: str) -> datetime:
    """ISO 8601 with offset, or a bare date meaning local midnight (Asia/Yerevan)."""
    value = value.strip()
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), time(0), TZ).astimezone(UTC)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("time needs a UTC offset (or give a bare date)")
    return parsed.astimezone(UTC)


def format_time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(TZ).isoformat()


def registry_version(session: Session) -> int:
    value = session.execute(
        select(Meta.value).where(Meta.key == "registry_version")
    ).scalar_one_or_none()
    return int(value) if value is not None else 0


def bump_registry_version(session: Session) -> int:
    row = session.get(Meta, "registry_version")
    if row is None:
        row = Meta(key="registry_version", value="0")
        session.add(row)
    row.value = str(int(row.value) + 1)
    return int(row.value)


# ---------------------------------------------------------------- import


@dataclass
class _Ctx:
    session: Session
    errors: list[CsvError] = field(default_factory=list)
    centres: dict[str, Centre] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    employees: dict[str, Employee] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)


def _read(text: str, name: str, ctx: _Ctx) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in COLUMNS[name]]
    missing = [c for c in REQUIRED[name] if c not in header]
    for col in unknown:
        ctx.errors.append(CsvError(name, 1, col, "unknown column"))
    for col in missing:
        ctx.errors.append(CsvError(name, 1, col, "required column is missing"))
    if unknown or missing:
        return []
    rows = []
    for row in reader:
        line = reader.line_num
        clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            ctx.errors.append(CsvError(name, line, None, "more fields than columns"))
            continue
        blank = [c for c in REQUIRED[name] if not clean.get(c)]
        for col in blank:
            ctx.errors.append(CsvError(name, line, col, "value is required"))
        broken = [c for c, v in clean.items() if _control(v)]
        for col in broken:  # an Excel cell with Alt+Enter: names go into mail headers
            ctx.errors.append(
                CsvError(name, line, col, f"{clean[col]!r}: a line break or control character; "
                         "keep the value on one line")
            )  # fmt: skip
        if not blank and not broken:
            rows.append((line, clean))
    return rows


def _control(value: str) -> bool:
    """Whether ``value`` holds a line break, tab or other control character."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def _field(ctx: _Ctx, name: str, line: int, col: str, raw: str, conv: Callable[[str], Any]) -> Any:
    if raw == "":
        return None
    try:
        return conv(raw)
    except (ValueError, KeyError) as exc:
        ctx.errors.append(CsvError(name, line, col, f"{raw!r}: {exc}"))
        return None


def _lookup(ctx: _Ctx, table: dict[str, Any], model: Any, key_col: Any, code: str) -> Any:
    if code in table:
        return table[code]
    found = ctx.session.scalars(select(model).where(key_col == code)).one_or_none()
    if found is not None:
        table[code] = found
    return found


def import_registry(
    session: Session, files: dict[str, str], *, actor: str = "cli", now: datetime | None = None
) -> dict[str, int]:
    """Import CSV texts (keyed by entity name) in one transaction; all or nothing.

    Rows update the record with the same natural key or add a new one. Raises
    :class:`RegistryImportError` listing every problem; then nothing is changed.
    """
    now = now or datetime.now(UTC)
    ctx = _Ctx(session)
    for name in files:
        if name not in COLUMNS:
            ctx.errors.append(CsvError(name, 0, None, f"unknown file; expected {', '.join(ORDER)}"))
    counts: dict[str, int] = {}
    try:
        with session.no_autoflush:
            for name in ORDER:
                if name in files:
                    rows = _read(files[name], name, ctx)
                    counts[name] = len(rows)
                    _IMPORTERS[name](ctx, rows, now)
                    session.flush()
    except Exception:
        session.rollback()
        raise
    if ctx.errors:
        session.rollback()
        raise RegistryImportError(ctx.errors)
    _check_overlaps(ctx)
    if ctx.errors:
        session.rollback()
        raise RegistryImportError(ctx.errors)
    version = bump_registry_version(session)
    session.add(
        AuditLog(
            at=now,
            actor=actor,
            action="registry.import",
            detail={"counts": counts, "version": version},
        )
    )
    return counts


def _float(v: str) -> float:
    return float(v)


def _import_centres(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    seen: set[str] = set()
    for line, r in rows:
        if r["code"] in seen:
            ctx.errors.append(CsvError("centres", line, "code", f"duplicate code {r['code']!r}"))
            continue
        seen.add(r["code"])
        if r["marz"] not in MARZES:
            ctx.errors.append(
                CsvError("centres", line, "marz", f"{r['marz']!r} is not an ISO 3166-2:AM code")
            )
        lat = _field(ctx, "centres", line, "latitude", r.get("latitude", ""), _float)
        lon = _field(ctx, "centres", line, "longitude", r.get("longitude", ""), _float)
        c = _lookup(ctx, ctx.centres, Centre, Centre.code, r["code"]) or Centre(code=r["code"])
        c.name_hy, c.name_en, c.marz = r["name_hy"], r["name_en"], r["marz"]
        c.community, c.address = r["community"], r.get("address", "")
        c.latitude, c.longitude = lat, lon
        try:
            hours.parse(r.get("hours"))
            c.hours = r.get("hours") or None
        except hours.HoursError as exc:
            ctx.errors.append(CsvError("centres", line, "hours", str(exc)))
        ctx.session.add(c)
        ctx.centres[c.code] = c


def _import_services(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    for _line, r in rows:
        s = _lookup(ctx, ctx.services, Service, Service.code, r["code"]) or Service(code=r["code"])
        s.name_hy, s.name_en = r["name_hy"], r["name_en"]
        ctx.session.add(s)
        ctx.services[s.code] = s


def _import_employees(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    for line, r in rows:
        centre = _lookup(ctx, ctx.centres, Centre, Centre.code, r["centre"])
        if centre is None:
            ctx.errors.append(CsvError("employees", line, "centre", f"no centre {r['centre']!r}"))
            continue
        e = _lookup(ctx, ctx.employees, Employee, Employee.code, r["code"])
        if e is None:
            e = Employee(code=r["code"])
        e.centre_id = centre.id
        e.name, e.position = r["name"], r.get("position", "")
        ctx.session.add(e)
        ctx.employees[e.code] = e


def _import_badges(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    for line, r in rows:
        if not BADGE_RE.match(r["badge"]):
            ctx.errors.append(
                CsvError("badges", line, "badge", f"{r['badge']!r} is not a badge id")
            )
            continue
        emp = _lookup(ctx, ctx.employees, Employee, Employee.code, r["employee"])
        if emp is None:
            ctx.errors.append(
                CsvError("badges", line, "employee", f"no employee {r['employee']!r}")
            )
            continue
        start = _field(ctx, "badges", line, "valid_from", r["valid_from"], parse_time)
        end = _field(ctx, "badges", line, "valid_to", r.get("valid_to", ""), parse_time)
        if start is None:
            continue
        if end is not None and end <= start:
            ctx.errors.append(CsvError("badges", line, "valid_to", "must be after valid_from"))
            continue
        b = ctx.session.scalars(
            select(Badge).where(Badge.badge == r["badge"], Badge.valid_from == start)
        ).one_or_none() or Badge(badge=r["badge"], valid_from=start)
        b.employee_id, b.valid_to = emp.id, end
        ctx.session.add(b)


def _import_devices(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    for line, r in rows:
        if not DEVICE_ID_RE.match(r["device"]):
            ctx.errors.append(
                CsvError("devices", line, "device", f"{r['device']!r} is not a device id")
            )
            continue
        scale = _field(ctx, "devices", line, "scale", r.get("scale", ""), int) or 4
        if scale not in (3, 4, 5):
            ctx.errors.append(CsvError("devices", line, "scale", "must be 3, 4 or 5"))
            continue
        created = _field(ctx, "devices", line, "created_at", r.get("created_at", ""), parse_time)
        retired = _field(ctx, "devices", line, "retired_at", r.get("retired_at", ""), parse_time)
        d = _lookup(ctx, ctx.devices, Device, Device.id, r["device"])
        if d is None:
            d = Device(id=r["device"], created_at=created or now)
        elif created is not None:
            d.created_at = created
        d.kind, d.scale, d.retired_at = r.get("kind") or "buttons", scale, retired
        ctx.session.add(d)
        ctx.devices[d.id] = d


def _import_assignments(ctx: _Ctx, rows: list[tuple[int, dict[str, str]]], now: datetime) -> None:
    for line, r in rows:
        dev = _lookup(ctx, ctx.devices, Device, Device.id, r["device"])
        if dev is None:
            ctx.errors.append(CsvError("assignments", line, "device", f"no device {r['device']!r}"))
        centre = _lookup(ctx, ctx.centres, Centre, Centre.code, r["centre"])
        if centre is None:
            ctx.errors.append(CsvError("assignments", line, "centre", f"no centre {r['centre']!r}"))
        emp = None
        if r.get("default_employee"):
            emp = _lookup(ctx, ctx.employees, Employee, Employee.code, r["default_employee"])
            if emp is None:
                ctx.errors.append(
                    CsvError(
                        "assignments",
                        line,
                        "default_employee",
                        f"no employee {r['default_employee']!r}",
                    )
                )
            elif centre is not None and emp.centre_id != centre.id:
                ctx.errors.append(
                    CsvError(
                        "assignments", line, "default_employee", "employee works at another centre"
                    )
                )
        svc = None
        if r.get("service"):
            svc = _lookup(ctx, ctx.services, Service, Service.code, r["service"])
            if svc is None:
                ctx.errors.append(
                    CsvError("assignments", line, "service", f"no service {r['service']!r}")
                )
        start = _field(ctx, "assignments", line, "valid_from", r["valid_from"], parse_time)
        end = _field(ctx, "assignments", line, "valid_to", r.get("valid_to", ""), parse_time)
        if dev is None or centre is None or start is None:
            continue
        if end is not None and end <= start:
            ctx.errors.append(CsvError("assignments", line, "valid_to", "must be after valid_from"))
            continue
        a = ctx.session.scalars(
            select(Assignment).where(Assignment.device_id == dev.id, Assignment.valid_from == start)
        ).one_or_none() or Assignment(device_id=dev.id, valid_from=start)
        a.centre_id, a.desk, a.valid_to = centre.id, r["desk"], end
        a.default_employee_id = emp.id if emp else None
        a.service_id = svc.id if svc else None
        ctx.session.add(a)


def _check_overlaps(ctx: _Ctx) -> None:
    ctx.session.flush()
    far = datetime.max.replace(tzinfo=UTC)
    models: tuple[tuple[Any, Any], ...] = (
        (Assignment, Assignment.device_id),
        (Badge, Badge.badge),
    )
    for model, key in models:
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        for row in ctx.session.scalars(select(model).order_by(key, model.valid_from)):
            k = row.device_id if model is Assignment else row.badge
            spans.setdefault(k, []).append((row.valid_from, row.valid_to or far))
        for k, items in spans.items():
            for (_s1, e1), (s2, _e2) in itertools.pairwise(items):
                if s2 < e1:
                    name = "assignments" if model is Assignment else "badges"
                    ctx.errors.append(
                        CsvError(
                            name, 0, "valid_from", f"{k}: periods overlap at {format_time(s2)}"
                        )
                    )


_IMPORTERS: dict[str, Callable[[_Ctx, list[tuple[int, dict[str, str]]], datetime], None]] = {
    "centres": _import_centres,
    "services": _import_services,
    "employees": _import_employees,
    "badges": _import_badges,
    "devices": _import_devices,
    "assignments": _import_assignments,
}


def read_dir(path: Path) -> dict[str, str]:
    return {
        name: (path / f"{name}.csv").read_text(encoding="utf-8")
        for name in ORDER
        if (path / f"{name}.csv").exists()
    }


def import_dir(session: Session, path: Path, **kwargs: Any) -> dict[str, int]:
    files = read_dir(path)
    if not files:
        raise RegistryImportError([CsvError("*", 0, None, f"no registry CSV files in {path}")])
    return import_registry(session, files, **kwargs)


# ---------------------------------------------------------------- export


def export_registry(session: Session) -> dict[str, str]:
    centres = {c.id: c for c in session.scalars(select(Centre).order_by(Centre.code))}
    services = {s.id: s for s in session.scalars(select(Service).order_by(Service.code))}
    employees = {e.id: e for e in session.scalars(select(Employee).order_by(Employee.code))}
    rows: dict[str, Iterable[tuple[Any, ...]]] = {
        "centres": (
            (
                c.code,
                c.name_hy,
                c.name_en,
                c.marz,
                c.community,
                c.address,
                "" if c.latitude is None else c.latitude,
                "" if c.longitude is None else c.longitude,
                c.hours or "",
            )
            for c in centres.values()
        ),
        "services": ((s.code, s.name_hy, s.name_en) for s in services.values()),
        "employees": (
            (e.code, centres[e.centre_id].code, e.name, e.position) for e in employees.values()
        ),
        "badges": (
            (
                b.badge,
                employees[b.employee_id].code,
                format_time(b.valid_from),
                format_time(b.valid_to),
            )
            for b in session.scalars(select(Badge).order_by(Badge.badge, Badge.valid_from))
        ),
        "devices": (
            (d.id, d.kind, d.scale, format_time(d.created_at), format_time(d.retired_at))
            for d in session.scalars(select(Device).order_by(Device.id))
        ),
        "assignments": (
            (
                a.device_id,
                centres[a.centre_id].code,
                a.desk,
                employees[a.default_employee_id].code if a.default_employee_id else "",
                services[a.service_id].code if a.service_id else "",
                format_time(a.valid_from),
                format_time(a.valid_to),
            )
            for a in session.scalars(
                select(Assignment).order_by(Assignment.device_id, Assignment.valid_from)
            )
        ),
    }
    out = {}
    for name in ORDER:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS[name])
        w.writerows(rows[name])
        out[name] = buf.getvalue()
    return out


def export_dir(session: Session, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in export_registry(session).items():
        (path / f"{name}.csv").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- snapshot for ingest


@dataclass(frozen=True, slots=True)
class Tie:
    centre_id: int
    desk: str
    default_employee_id: int | None
    service_id: int | None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    scale: int
    retired_at: datetime | None


@dataclass
class _Span:
    start: datetime
    end: datetime | None
    value: Any


def _find(spans: list[_Span], starts: list[datetime], at: datetime) -> Any:
    i = bisect.bisect_right(starts, at) - 1
    if i < 0:
        return None
    end = spans[i].end
    if end is None or at < end:
        return spans[i].value
    return None


class Snapshot:
    """The registry as of one version, for tying events at ingest (no DB round trips)."""

    def __init__(self, session: Session) -> None:
        self.version = registry_version(session)
        # Plain values only: ORM objects would expire with the session that loaded them.
        self.devices: dict[str, DeviceInfo] = {
            d.id: DeviceInfo(d.id, d.scale, d.retired_at) for d in session.scalars(select(Device))
        }
        self._assign: dict[str, list[_Span]] = {}
        for a in session.scalars(select(Assignment).order_by(Assignment.valid_from)):
            tie = Tie(a.centre_id, a.desk, a.default_employee_id, a.service_id)
            self._assign.setdefault(a.device_id, []).append(_Span(a.valid_from, a.valid_to, tie))
        self._badges: dict[str, list[_Span]] = {}
        for b in session.scalars(select(Badge).order_by(Badge.valid_from)):
            self._badges.setdefault(b.badge, []).append(
                _Span(b.valid_from, b.valid_to, b.employee_id)
            )
        self._assign_starts = {k: [s.start for s in v] for k, v in self._assign.items()}
        self._badge_starts = {k: [s.start for s in v] for k, v in self._badges.items()}
        self.employee_codes: dict[int, str] = {
            i: c for i, c in session.execute(select(Employee.id, Employee.code))
        }
        self.centre_codes: dict[int, str] = {
            i: c for i, c in session.execute(select(Centre.id, Centre.code))
        }
        self.service_codes: dict[int, str] = {
            i: c for i, c in session.execute(select(Service.id, Service.code))
        }
        self.service_ids: dict[str, int] = {c: i for i, c in self.service_codes.items()}
        # Retention's watermarks (bumping the registry version reloads them).
        from collector.models import PurgedRange, StreamState

        self.purged: dict[tuple[str, str], int] = {
            (d, st): n
            for d, st, n in session.execute(
                select(StreamState.device, StreamState.stream, StreamState.purged_through).where(
                    StreamState.purged_through > 0
                )
            )
        }
        self.purged_ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for d, st, lo, hi in session.execute(
            select(PurgedRange.device, PurgedRange.stream, PurgedRange.seq_from, PurgedRange.seq_to)
        ):
            self.purged_ranges.setdefault((d, st), []).append((lo, hi))

    def was_purged(self, device: str, stream: str, seq: int) -> bool:
        """Stored once and deleted by retention since (so a copy now is a duplicate)."""
        if seq <= self.purged.get((device, stream), 0):
            return True
        return any(lo <= seq <= hi for lo, hi in self.purged_ranges.get((device, stream), ()))

    def tie(self, device: str, at: datetime) -> Tie | None:
        spans = self._assign.get(device)
        if not spans:
            return None
        result: Tie | None = _find(spans, self._assign_starts[device], at)
        return result

    def employee_for_badge(self, badge: str, at: datetime) -> int | None:
        spans = self._badges.get(badge)
        if not spans:
            return None
        result: int | None = _find(spans, self._badge_starts[badge], at)
        return result


def count_rows(session: Session) -> dict[str, int]:
    models = {
        "centres": Centre,
        "services": Service,
        "employees": Employee,
        "badges": Badge,
        "devices": Device,
        "assignments": Assignment,
    }
    return {n: session.scalar(select(func.count()).select_from(m)) or 0 for n, m in models.items()}

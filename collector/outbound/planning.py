"""Planning: changed aggregate cells become one batch per (centre, day), queued when
its content changed (see :mod:`collector.outbound.forward`, which sends them).

The batch states, the planning constants and the meta keys the forwarder keeps are here
too; :class:`Planning` is the part of :class:`~collector.outbound.forward.Forwarder`
that reads cells and queues batches."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from collector.config import Settings
from collector.models import (
    Centre,
    ChannelAggregate,
    DailyAggregate,
    Employee,
    FactorAggregate,
    ForwardBatch,
    Meta,
    Service,
)
from collector.outbound import mapping as mapping_mod
from collector.outbound.dhis2 import (
    Adapter,
    Cell,
    Unmapped,
)

PENDING, SENT, PARKED, LOCKED = "pending", "sent", "parked", "locked"
NO_SERVICE = mapping_mod.NO_SERVICE
#: Cells changed within this margin before the last planning are looked at again, so a
#: transaction that stamped ``changed_at`` before a planning run but committed after it
#: is never missed (an unchanged batch costs only a hash comparison).
PLAN_MARGIN = timedelta(minutes=10)
#: (day, centre) batches built per planning transaction.
PLAN_CHUNK = 500
#: The daily cell columns a batch is built from.
AGG_COLUMNS = (
    DailyAggregate.day,
    DailyAggregate.centre_id,
    DailyAggregate.employee_id,
    DailyAggregate.service_id,
    DailyAggregate.scale,
    DailyAggregate.n1,
    DailyAggregate.n2,
    DailyAggregate.n3,
    DailyAggregate.n4,
    DailyAggregate.n5,
)
BACKOFF_BASE_S = 10.0
#: A value refused for a fixable reason (mapping, metadata) is tried again no sooner than this.
REFUSED_MIN_WAIT_S = 60.0


@dataclass
class RunReport:
    planned: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lease: bool = True

    def __str__(self) -> str:
        if not self.lease:
            return "another process is forwarding (it holds the lease); nothing done here"
        parts = [f"{self.planned} batch(es) queued"]
        parts += [f"{n} {k}" for k, n in sorted(self.outcomes.items())]
        return ", ".join(parts)


class Planning:
    """The planning half of the forwarder (mixed into :class:`Forwarder`)."""

    sessions: sessionmaker[Session]
    settings: Settings
    metrics: Any
    fixed_mapping: mapping_mod.Mapping | None
    adapter: Adapter
    clock: Callable[[], datetime]
    tz: ZoneInfo

    @property
    def mapping(self) -> mapping_mod.Mapping:
        return self.adapter.mapping

    def refresh_mapping(self, session: Session) -> mapping_mod.Mapping:
        """The mapping file, or (without one) the mapping derived from today's registry."""
        if self.fixed_mapping is None:
            self.adapter.mapping = mapping_mod.derive_from_db(session)
        return self.adapter.mapping

    # ------------------------------------------------------------ planning

    def _pseudonym(self, code: str) -> str:
        digest = hmac.new(self.settings.pseudonym_key.encode(), code.encode(), hashlib.sha256)
        return "E" + digest.hexdigest()[:12].upper()

    def cells(
        self,
        session: Session,
        day: date,
        centre_id: int,
        services: dict[int, str] | None = None,
    ) -> list[Cell]:
        """The (day, centre) cells as the M&E IS gets them (``services``: id → code, read
        once by a caller that builds many batches)."""
        if services is None:
            services = dict(session.execute(select(Service.id, Service.code)).all())
        rows = session.execute(
            select(*AGG_COLUMNS).where(
                DailyAggregate.day == day, DailyAggregate.centre_id == centre_id
            )
        ).all()
        extra = self._extra_cells(session, [day], [centre_id], services)
        cells = self._fold(rows, services, self._employee_codes(session))
        return cells + extra.get((day, centre_id), [])

    def _extra_cells(
        self, session: Session, days: list[date], centres: list[int], services: dict[int, str]
    ) -> dict[tuple[date, int], list[Cell]]:
        """The online channel's counts and the factor answers of (day, centre) pairs within
        ``days`` x ``centres``, as cells (never per employee: they have none)."""
        out: dict[tuple[date, int], dict[tuple[str, str, int], list[int]]] = {}
        ch = ChannelAggregate
        for r in session.execute(
            select(ch.day, ch.centre_id, ch.service_id, ch.scale,
                   ch.n1, ch.n2, ch.n3, ch.n4, ch.n5).where(
                ch.day >= min(days), ch.day <= max(days), ch.centre_id.in_(centres),
                ch.channel == "online",
            )
        ):  # fmt: skip
            key = ("ONLINE_R", services.get(r.service_id, NO_SERVICE), r.scale)
            counts = out.setdefault((r.day, r.centre_id), {}).setdefault(key, [0] * r.scale)
            for level in range(r.scale):
                counts[level] += getattr(r, f"n{level + 1}")
        fa = FactorAggregate
        for f in session.execute(
            select(fa.day, fa.centre_id, fa.service_id, fa.factor, fa.scale, fa.level, fa.n).where(
                fa.day >= min(days), fa.day <= max(days), fa.centre_id.in_(centres)
            )
        ):
            key = (f"F_{f.factor.upper()}", services.get(f.service_id, NO_SERVICE), f.scale)
            counts = out.setdefault((f.day, f.centre_id), {}).setdefault(key, [0] * f.scale)
            counts[f.level - 1] += f.n
        return {
            pair: [
                Cell(service, None, scale, tuple(c), measure)
                for (measure, service, scale), c in sorted(cells.items())
            ]
            for pair, cells in out.items()
        }

    def _employee_codes(self, session: Session) -> dict[int, str]:
        if not self.settings.forward_employee_level:
            return {}
        return dict(session.execute(select(Employee.id, Employee.code)).all())

    def _fold(
        self, rows: Iterable[Any], services: dict[int, str], employees: dict[int, str]
    ) -> list[Cell]:
        """Daily cells of one (day, centre) summed as they are sent (per service, and
        per pseudonymous employee where that level is on)."""
        sums: dict[tuple[str, str | None, int], list[int]] = {}
        for r in rows:
            service = services.get(r.service_id, NO_SERVICE)
            employee = None
            if self.settings.forward_employee_level:
                code = employees.get(r.employee_id)
                employee = self._pseudonym(code) if code else "UNATTRIBUTED"
            counts = sums.setdefault((service, employee, r.scale), [0] * r.scale)
            for level in range(r.scale):
                counts[level] += getattr(r, f"n{level + 1}")
        return [Cell(s, e, sc, tuple(c)) for (s, e, sc), c in sorted(sums.items(), key=str)]

    def last_day(self, now: datetime) -> date:
        """The newest day that may be pushed at ``now``: finished here (unless
        ``forward_today``), and open on the M&E IS's clock — with ``openFuturePeriods``
        = N, DHIS2 takes no Daily period after its own yesterday + N
        (``PeriodType.getFuturePeriod``), and its clock may still be in our yesterday."""
        today = now.astimezone(self.tz).date()
        ours = today if self.settings.forward_today else today - timedelta(days=1)
        m = self.mapping
        theirs = (
            now.astimezone(m.server_timezone).date()
            - timedelta(days=1)
            + timedelta(days=m.open_future_periods)
        )
        return min(ours, theirs)

    def plan(self) -> int:
        """Queue a new version of every (centre, day) whose counts changed; return how many.

        Once a local day, the last ``forward_resend_days`` finished days are queued again
        under a fresh idempotency key (a safety net for values lost on the far side).
        The candidates are built :data:`PLAN_CHUNK` at a time, each chunk its own short
        transaction reading its cells and batches in one query each (a year's first plan
        must not be one long transaction); the planning mark moves only at the end, so a
        plan cut short is simply planned again (unchanged batches compare equal).
        """
        now = self.clock()
        queued = 0
        with self.sessions() as s:
            mapping = self.refresh_mapping(s)
            last_day = self.last_day(now)
            since = _meta_time(s, "forward_planned_at")
            query = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
            if since is not None:
                query = query.where(DailyAggregate.changed_at >= since - PLAN_MARGIN)
            candidates = {(d, c) for d, c in s.execute(query).all() if d <= last_day}
            for table in (ChannelAggregate, FactorAggregate):  # factors may come later
                changed = select(table.day, table.centre_id).distinct()
                if since is not None:
                    changed = changed.where(table.changed_at >= since - PLAN_MARGIN)
                candidates |= {(d, c) for d, c in s.execute(changed).all() if d <= last_day}
            # The newest eligible day always: its cells may have changed while it was
            # still the running day (not yet eligible) and before the last planning.
            newest = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
            candidates |= set(s.execute(newest.where(DailyAggregate.day == last_day)))
            # Batches that could not be built, or were refused for the mapping, are built
            # again: the mapping (or the registry it derives from) may have been fixed.
            # A changed mapping (a file edited, or a registry change it derives from: a
            # service renamed) changes what every batch names upstream: all batches are
            # built again, so values under the old names are deleted there and totals do
            # not double; the unchanged ones cost a hash comparison.
            remap = _meta(s, "forward_mapping_digest") != mapping.digest()
            if remap:
                known = select(ForwardBatch.day, ForwardBatch.centre_id)
                candidates |= {(d, c) for d, c in s.execute(known) if d <= last_day}
            sweep_tag = now.astimezone(self.tz).date().isoformat()
            sweep = _meta(s, "forward_swept_on") != sweep_tag
            if sweep:
                first = last_day - timedelta(days=self.settings.forward_resend_days - 1)
                recent = select(DailyAggregate.day, DailyAggregate.centre_id).distinct()
                recent = recent.where(DailyAggregate.day >= first, DailyAggregate.day <= last_day)
                sweep_set = {(d, c) for d, c in s.execute(recent)}
                # A day whose period the M&E IS has closed (past its data set's
                # expiryDays by the server's clock) is not swept: what it confirmed
                # stays, and a re-send would only come back "locked" (E7640).
                expiry = mapping.expiry_days
                if expiry:
                    server_today = now.astimezone(mapping.server_timezone).date()
                    sweep_set = {
                        (d, c) for d, c in sweep_set
                        if server_today <= d + timedelta(days=expiry)
                    }  # fmt: skip
                candidates |= sweep_set
            else:
                sweep_set = set()
            codes = dict(s.execute(select(Centre.id, Centre.code)).all())
            services = dict(s.execute(select(Service.id, Service.code)).all())
            employees = self._employee_codes(s)
        ordered = sorted(candidates)
        for start in range(0, len(ordered), PLAN_CHUNK):
            with self.sessions() as s, s.begin():
                queued += self._plan_chunk(
                    s, ordered[start : start + PLAN_CHUNK], codes, services, employees,
                    now, remap, sweep_set, sweep_tag,
                )  # fmt: skip
        with self.sessions() as s, s.begin():
            _set_meta(s, "forward_planned_at", now.isoformat())
            _set_meta(s, "forward_mapping_digest", mapping.digest())
            if sweep:
                _set_meta(s, "forward_swept_on", sweep_tag)
        return queued

    def _plan_chunk(
        self,
        s: Session,
        chunk: list[tuple[date, int]],
        codes: dict[int, str],
        services: dict[int, str],
        employees: dict[int, str],
        now: datetime,
        remap: bool,
        sweep_set: set[Any],
        sweep_tag: str,
    ) -> int:
        queued = 0
        keys = {(d, c): f"{codes[c]}/{d.strftime('%Y%m%d')}" for d, c in chunk}
        batches = {
            b.batch_key: b
            for b in s.scalars(
                select(ForwardBatch).where(ForwardBatch.batch_key.in_(list(keys.values())))
            )
        }
        days = sorted({d for d, _ in chunk})
        centres = sorted({c for _, c in chunk})
        grouped: dict[tuple[date, int], list[Any]] = {}
        for r in s.execute(
            select(*AGG_COLUMNS).where(
                DailyAggregate.day >= days[0],
                DailyAggregate.day <= days[-1],
                DailyAggregate.centre_id.in_(centres),
            )
        ):
            if (r.day, r.centre_id) in keys:
                grouped.setdefault((r.day, r.centre_id), []).append(r)
        extra = self._extra_cells(s, days, centres, services)
        for day, centre_id in chunk:
            key = keys[(day, centre_id)]
            batch = batches.get(key)
            try:
                cells = self._fold(grouped.get((day, centre_id), []), services, employees)
                cells += extra.get((day, centre_id), [])
                payload: dict[str, Any] = self.adapter.build(codes[centre_id], day, cells)
                unmapped = None
            except Unmapped as exc:
                payload, unmapped = {}, str(exc)
            digest = hashlib.sha256(
                json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
            ).hexdigest()
            if batch is None:
                batch = ForwardBatch(
                    batch_key=key,
                    day=day,
                    centre_id=centre_id,
                    version=1,
                    send_key=f"gnahat:{key}:v1",
                    payload=payload,
                    payload_hash=digest,
                    state=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    pending_since=now,
                    created_at=now,
                    updated_at=now,
                )
                s.add(batch)
                queued += 1
            elif batch.payload_hash != digest:
                batch.version += 1
                batch.send_key = f"gnahat:{key}:v{batch.version}"
                batch.payload, batch.payload_hash = payload, digest
                if batch.state != LOCKED:
                    # A closed period stays closed: the new counts wait for `forward
                    # retry` after an administrator opens it.
                    if batch.state != PENDING:
                        batch.pending_since = now
                    batch.state, batch.attempts, batch.next_attempt_at = PENDING, 0, now
                    batch.last_error = batch.warning = batch.problem = None
                    queued += 1
                batch.updated_at = now
            elif remap and batch.problem in ("unmapped", "mapping") and batch.state != SENT:
                batch.state, batch.next_attempt_at, batch.updated_at = PENDING, now, now
                queued += 1
            elif (day, centre_id) in sweep_set and batch.state == SENT:
                batch.send_key = f"gnahat:{key}:v{batch.version}:resend-{sweep_tag}"
                batch.pending_since = now
                batch.state, batch.attempts, batch.next_attempt_at = PENDING, 0, now
                batch.full_send = True
                batch.updated_at = now
                queued += 1
            if unmapped is not None:
                batch.state, batch.problem, batch.last_error = PARKED, "unmapped", unmapped
                batch.next_attempt_at = None
                queued -= 1
        return queued


def _meta(s: Session, key: str) -> str | None:
    row = s.get(Meta, key)
    return row.value if row is not None else None


def _meta_time(s: Session, key: str) -> datetime | None:
    value = _meta(s, key)
    return datetime.fromisoformat(value) if value else None


def _set_meta(s: Session, key: str, value: str) -> None:
    row = s.get(Meta, key)
    if row is None:
        s.add(Meta(key=key, value=value))
    else:
        row.value = value

"""The rules: each kind evaluated against the database, with its parameters (defaults,
or an ``alert_rules`` row for every centre or one)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collector import hours as hours_mod
from collector.models import (
    AlertRule,
    Assignment,
    Centre,
    DailyAggregate,
    Device,
    DeviceState,
    Event,
    Service,
)
from collector.outbound.alerts.kinds import DEFAULTS, HEALTH_FRESH, SEVERITIES, TZ, Finding, _pct
from collector.reading.scores import wilson

# ---------------------------------------------------------------- rules


def rule_params(session: Session) -> Callable[[str, int | None], dict[str, Any]]:
    """Parameters of a kind for a centre: defaults, then the all-centres row, then the
    centre's own."""
    rows = list(session.scalars(select(AlertRule)))
    general = {r.kind: r.params for r in rows if r.centre_id is None}
    own: dict[tuple[str, int | None], dict[str, Any]] = {
        (r.kind, r.centre_id): r.params for r in rows if r.centre_id is not None
    }

    def get(kind: str, centre_id: int | None) -> dict[str, Any]:
        return {
            **DEFAULTS[kind],
            **general.get(kind, {}),
            **own.get((kind, centre_id), {}),
        }

    return get


def set_rule(
    session: Session, kind: str, params: dict[str, Any], centre_id: int | None, now: datetime
) -> None:
    if kind not in DEFAULTS:
        raise ValueError(f"unknown rule {kind!r} (known: {', '.join(DEFAULTS)})")
    unknown = set(params) - set(DEFAULTS[kind]) - {"enabled"}
    if unknown:
        raise ValueError(f"{kind} has no parameter {', '.join(sorted(unknown))}")
    if "severity" in params and params["severity"] not in SEVERITIES:
        raise ValueError(f"severity is one of {', '.join(SEVERITIES)}")
    row = session.scalars(
        select(AlertRule).where(AlertRule.kind == kind, AlertRule.centre_id.is_(centre_id))
        if centre_id is None
        else select(AlertRule).where(AlertRule.kind == kind, AlertRule.centre_id == centre_id)
    ).first()
    if row is None:
        session.add(AlertRule(kind=kind, centre_id=centre_id, params=params, updated_at=now))
    else:
        row.params = {**row.params, **params}
        row.updated_at = now


def evaluate(
    session: Session, now: datetime, business_now: datetime | None = None
) -> list[Finding]:
    """Every condition that holds at ``now``: the units' silence against the time the
    collector stamps messages with, the scores' windows against the business day
    (``business_now``; the same clock in production, a simulated one in the demo)."""
    params = rule_params(session)
    centres = {c.id: c for c in session.scalars(select(Centre))}
    out: list[Finding] = []
    out += _unit_findings(session, now, centres, params)
    out += _score_findings(session, business_now or now, centres, params)
    out += _login_findings(session, business_now or now, params)
    return out


def _login_findings(
    session: Session, now: datetime, params: Callable[[str, int | None], dict[str, Any]]
) -> list[Finding]:
    """Ratings that follow a staff login on the same unit within seconds, today: staff
    trying the buttons, or rating themselves. (A unit in armed mode refuses presses
    nobody armed; these come from units without an armed window.)"""
    today = now.astimezone(TZ).date()
    rows = session.execute(
        select(Event.device, Event.type, Event.pressed_at, Event.centre_id)
        .where(
            Event.day == today,
            Event.type.in_(["rating", "staff_login"]),
            Event.centre_id.is_not(None),
        )
        .order_by(Event.device, Event.pressed_at)
    ).all()
    desks = dict(
        session.execute(
            select(Assignment.device_id, Assignment.desk).where(
                Assignment.valid_from <= now,
                (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            )
        ).all()
    )
    codes = dict(session.execute(select(Centre.id, Centre.code)).all())
    counts: dict[str, int] = defaultdict(int)
    where: dict[str, int] = {}
    last_login: dict[str, datetime] = {}
    for device, kind, at, centre_id in rows:
        if kind == "staff_login":
            last_login[device] = at
            continue
        p = params("after_login", centre_id)
        login = last_login.get(device)
        near = login is not None and 0 <= (at - login).total_seconds() <= float(p["seconds"])
        if near and centre_id is not None:
            counts[device] += 1
            where[device] = centre_id
    out = []
    for device, n in counts.items():
        cid = where[device]
        p = params("after_login", cid)
        if p.get("enabled", True) and n >= int(p["count"]):
            out.append(
                Finding(
                    "after_login",
                    f"unit:{device}",
                    cid,
                    p["severity"],
                    {
                        "device": device,
                        "centre": codes.get(cid, ""),
                        "desk": desks.get(device, "?"),
                        "count": n,
                        "seconds": int(p["seconds"]),
                    },
                )
            )
    return out


def _unit_findings(
    session: Session,
    now: datetime,
    centres: dict[int, Centre],
    params: Callable[[str, int | None], dict[str, Any]],
) -> list[Finding]:
    out: list[Finding] = []
    current = session.execute(
        select(
            Assignment.device_id,
            Assignment.centre_id,
            Assignment.desk,
            Assignment.valid_from,
            Device.created_at,
        )
        .join(Device, Device.id == Assignment.device_id)
        .where(
            Assignment.valid_from <= now,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
            (Device.retired_at.is_(None)) | (Device.retired_at > now),
        )
    ).all()
    states = {s.device: s for s in session.scalars(select(DeviceState))}
    local_now = now.astimezone(TZ)
    for device, centre_id, desk, assigned_at, created_at in current:
        centre = centres[centre_id]
        state = states.get(device)
        base = {"device": device, "centre": centre.code, "desk": desk}
        p = params("unit_silent", centre_id)
        heard = state.last_seen if state is not None else None
        # Never heard: silent since it stood at the desk (its assignment, or its
        # registration if later): an alert from the first day, not never.
        since = heard or max(assigned_at, created_at)
        if p.get("enabled", True) and (heard is not None or p.get("never_heard", True)):
            hrs = hours_mod.parse(centre.hours)
            silent = hrs.open_minutes_between(since.astimezone(TZ), local_now)
            if silent >= float(p["minutes"]):
                detail = {
                    **base,
                    "minutes": int(silent),
                    "last_seen": since.astimezone(TZ).strftime("%Y-%m-%d %H:%M"),
                }
                if heard is None:
                    detail["never"] = True
                out.append(Finding("unit_silent", f"unit:{device}", centre_id, p["severity"],
                                   detail))  # fmt: skip
        health = state.health if state is not None else None
        fresh = (
            state is not None
            and state.health_at is not None
            and (now - state.health_at <= HEALTH_FRESH)
        )
        if not (health and fresh):
            continue
        p = params("unit_backlog", centre_id)
        depth = int(health.get("queue_depth") or 0)
        oldest = float(health.get("oldest_unacked_s") or 0)
        if p.get("enabled", True) and (
            depth >= int(p["queue_depth"]) or oldest >= float(p["oldest_unacked_s"])
        ):
            out.append(
                Finding(
                    "unit_backlog",
                    f"unit:{device}",
                    centre_id,
                    p["severity"],
                    {**base, "queue_depth": depth, "oldest_min": int(oldest // 60)},
                )
            )
        p = params("unit_clock", centre_id)
        if p.get("enabled", True) and health.get("clock_synced") is False:
            out.append(Finding("unit_clock", f"unit:{device}", centre_id, p["severity"], base))
    return out


def _bottom(levels: list[int], scale: int) -> int:
    """Dissatisfied: the bottom two levels of a 4- or 5-point scale, the bottom of a 3."""
    return sum(levels[: 1 if scale <= 3 else 2])


def _score_findings(
    session: Session,
    now: datetime,
    centres: dict[int, Centre],
    params: Callable[[str, int | None], dict[str, Any]],
) -> list[Finding]:
    out: list[Finding] = []
    today = now.astimezone(TZ).date()
    longest = max(
        int(params("dissatisfied", None)["days"]),
        int(params("drop", None)["recent_days"]) + int(params("drop", None)["history_days"]),
    )
    for cid in centres:
        longest = max(
            longest,
            int(params("dissatisfied", cid)["days"]),
            int(params("drop", cid)["recent_days"]) + int(params("drop", cid)["history_days"]),
        )
    a = DailyAggregate
    rows = session.execute(
        select(
            a.day,
            a.centre_id,
            a.service_id,
            a.scale,
            *(func.sum(getattr(a, f"n{i}")) for i in range(1, 6)),
            func.sum(a.excluded),
        )
        .where(a.day > today - timedelta(days=longest), a.day <= today)
        .group_by(a.day, a.centre_id, a.service_id, a.scale)
    ).all()
    services = dict(session.execute(select(Service.id, Service.code)).all())
    names = {s.code: (s.name_en, s.name_hy) for s in session.scalars(select(Service))}
    # Per (centre, service or None): per day [bottom, top two, n].
    per: dict[tuple[int, int | None], dict[date, list[int]]] = defaultdict(dict)
    excluded_today: dict[int, int] = defaultdict(int)
    for r in rows:
        day, cid, sid, scale = r[0], r[1], r[2], int(r[3])
        levels = [int(x or 0) for x in r[4 : 4 + scale]]
        trio = [_bottom(levels, scale), sum(levels[-2:]), sum(levels)]
        for key in ((cid, None), (cid, sid)):
            acc = per[key].setdefault(day, [0, 0, 0])
            for i in range(3):
                acc[i] += trio[i]
        if day == today:
            excluded_today[cid] += int(r[9] or 0)

    def window(days: dict[date, list[int]], first: date, last: date) -> list[int]:
        acc = [0, 0, 0]
        for d, v in days.items():
            if first <= d <= last:
                for i in range(3):
                    acc[i] += v[i]
        return acc

    for (cid, sid), days in per.items():
        centre = centres[cid]
        if sid is None:
            where, where_hy, subject = centre.name_en, centre.name_hy, f"centre:{centre.code}"
        else:
            code = services.get(sid, "NONE")
            en, hy = names.get(code, (code, code))
            where = f"{centre.name_en}, {en}"
            where_hy = f"{centre.name_hy}, {hy}"
            subject = f"service:{centre.code}/{code}"
        place = {"centre": centre.code, "where": where, "where_hy": where_hy}
        p = params("dissatisfied", cid)
        bottom, _top, n = window(days, today - timedelta(days=int(p["days"]) - 1), today)
        if p.get("enabled", True) and n >= int(p["min_n"]):
            lo, hi = wilson(bottom, n)
            if lo > float(p["threshold"]):
                out.append(
                    Finding(
                        "dissatisfied",
                        subject,
                        cid,
                        p["severity"],
                        {
                            **place,
                            "n": n,
                            "days": int(p["days"]),
                            "share": _pct(bottom / n),
                            "low": _pct(lo),
                            "high": _pct(hi),
                            "threshold": _pct(float(p["threshold"])),
                        },
                    )
                )
        if sid is not None:
            continue
        p = params("drop", cid)
        recent_first = today - timedelta(days=int(p["recent_days"]) - 1)
        _b, rt, rn = window(days, recent_first, today)
        history_first = recent_first - timedelta(days=int(p["history_days"]))
        _b, ht, hn = window(days, history_first, recent_first - timedelta(days=1))
        if p.get("enabled", True) and rn >= int(p["min_n"]) and hn >= int(p["min_n"]):
            _r_lo, r_hi = wilson(rt, rn)
            h_lo, _h_hi = wilson(ht, hn)
            if r_hi < h_lo and ht / hn - rt / rn >= float(p["min_drop"]):
                out.append(
                    Finding(
                        "drop",
                        f"centre:{centre.code}",
                        cid,
                        p["severity"],
                        {
                            **place,
                            "recent": _pct(rt / rn),
                            "history": _pct(ht / hn),
                            "recent_days": int(p["recent_days"]),
                        },
                    )
                )
        p = params("bursts", cid)
        if p.get("enabled", True) and excluded_today.get(cid, 0) >= int(p["excluded"]):
            out.append(
                Finding(
                    "bursts",
                    f"centre:{centre.code}",
                    cid,
                    p["severity"],
                    {**place, "excluded": excluded_today[cid]},
                )
            )
    return out

"""The centre dashboard: server-rendered pages in Armenian (default), English and Russian.

People log in with a username and password (argon2, rate-limited); the session is a
signed cookie (SameSite=Strict, HttpOnly; Secure in production) and every form
carries a CSRF token tied to it. Managers see their own centres and staff (staff
figures only where n >= 5, never ranked); analysts and admins see every centre.
Pages work without JavaScript, with large type, high contrast and real labels.

By part: the routes here; the words in :mod:`~collector.edge.web.texts`; what every
page shares in :mod:`~collector.edge.web.common`; the phone pages in
:mod:`~collector.edge.web.online`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select, text

from collector.clientaddr import client_address
from collector.edge import online as online_channel
from collector.edge import websessions
from collector.edge.api.deps import SessionDep, StateDep
from collector.edge.api.params import MAX_DAYS, MIN_DAY, End, FormDay, Start
from collector.edge.auth import Role
from collector.edge.users import LoginRefused, RateLimited, login
from collector.edge.web.common import (
    MAX_NOTE,
    _csrf_ok,
    _current_user,
    _lang,
    _may_manage,
    _page,
    _visible_centres,
)
from collector.edge.web.public_texts import FACTOR_NAMES, LANG_NAMES, month_name
from collector.edge.web.texts import MARZ_NAMES, TEXT, marz_name
from collector.models import (
    UNCERTAIN_SQL,
    Alert,
    AuditLog,
    Centre,
    DayNote,
    Event,
    ForwardBatch,
)
from collector.outbound import alerts as alert_mod
from collector.reading import answers as answers_mod
from collector.reading import charts, fleet, scores
from collector.reading import series as series_mod
from collector.reading.names import names
from device.wording import FACTOR_QUESTIONS

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/login")
def login_form(request: Request, lang: Annotated[str | None, Query()] = None) -> HTMLResponse:
    return _page(request, "login.html", _lang(request, lang))


@router.post("/login")
def login_submit(
    request: Request,
    session: SessionDep,
    state: StateDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    lang = _lang(request, None)
    if not _csrf_ok(request, csrf):
        return _page(request, "login.html", lang, 403, error=TEXT[lang]["forbidden"])
    address = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        state.settings.trusted_proxies,
    )
    try:
        user = login(session, username, password, address=address, now=state.clock())
    except RateLimited as exc:
        session.commit()
        resp = _page(
            request,
            "login.html",
            lang,
            429,
            error=TEXT[lang]["locked"].format(seconds=exc.retry_after_s),
        )
        resp.headers["Retry-After"] = str(exc.retry_after_s)
        return resp
    except LoginRefused:
        session.commit()  # the failure counts towards the limit
        return _page(request, "login.html", lang, 401, error=TEXT[lang]["bad_login"])
    token, _live = websessions.start(
        session,
        user,
        address=address,
        now=state.clock(),
        lifetime_s=state.settings.session_lifetime_s,
    )
    session.commit()
    request.session.clear()  # a fresh cookie: only the session's random id and the language
    request.session.update(sid=token, lang=lang)
    return RedirectResponse("/dashboard", status_code=303)


@router.post("/logout")
def logout(
    request: Request, session: SessionDep, state: StateDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    user = _current_user(request, session, state)
    if not _csrf_ok(request, csrf):
        return Response("CSRF token missing or wrong", status_code=403)
    lang = _lang(request, None)
    live = getattr(request.state, "web_session", None)
    if user is not None and live is not None:
        websessions.end(session, live, why="logout", now=state.clock())
        session.commit()
    request.session.clear()
    request.session["lang"] = lang
    return RedirectResponse("/login", status_code=303)


@router.get("/dashboard")
def dashboard(
    request: Request,
    session: SessionDep,
    state: StateDep,
    centre: Annotated[str | None, Query()] = None,
    start: Start = None,
    end: End = None,
    lang: Annotated[str | None, Query(max_length=8)] = None,
    saved: Annotated[int, Query(ge=0, le=1)] = 0,
    acked: Annotated[int, Query(ge=0, le=1)] = 0,
    answered: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    lang = _lang(request, lang)
    user = _current_user(request, session, state)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if user.role not in (Role.ADMIN.value, Role.MANAGER.value, Role.ANALYST.value):
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    centres = _visible_centres(session, user)
    if not centres:
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    chosen = next((c for c in centres if c.code == centre), centres[0])
    if centre is not None and chosen.code != centre:
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    today = state.today_now().astimezone(ZoneInfo(state.settings.timezone)).date()
    last = min(end or today, today)
    first = start or max(last - timedelta(days=29), MIN_DAY)
    if first > last or (last - first).days >= MAX_DAYS:
        first = max(last - timedelta(days=29), MIN_DAY)
    services = {s.code: s.name_hy if lang == "hy" else s.name_en for s in names(session).services}
    summary = scores.centre_scores(session, first, last, [chosen.id])
    days = scores.daily_series(session, chosen.id, first, last)
    pictures = _pictures(session, chosen, first, last, summary, days, services, lang, state)
    notes: dict[date, list[DayNote]] = {}
    for note in session.scalars(
        select(DayNote)
        .where(DayNote.centre_id == chosen.id, DayNote.day >= first, DayNote.day <= last)
        .order_by(DayNote.day, DayNote.id)
    ):
        notes.setdefault(note.day, []).append(note)
    # Presses dated by estimate whose bounds span days: said on the day they count on.
    uncertain = dict(
        session.execute(
            select(Event.day, func.count())
            .where(
                Event.centre_id == chosen.id,
                Event.day >= first,
                Event.day <= last,
                Event.type == "rating",
                text(UNCERTAIN_SQL.replace("flags", "events.flags")),  # its partial index
            )
            .group_by(Event.day)
        ).all()
    )
    # Days of this centre that have not reached the M&E IS, and why (forwarding on).
    undelivered = None
    if state.settings.forward_url:
        undelivered = session.execute(
            select(ForwardBatch.day, ForwardBatch.state, ForwardBatch.problem)
            .where(
                ForwardBatch.centre_id == chosen.id,
                ForwardBatch.day >= first,
                ForwardBatch.day <= last,
                ForwardBatch.state != "sent",
            )
            .order_by(ForwardBatch.day)
        ).all()
    units = fleet.centre_units(session, chosen.id, state.clock())
    months = answers_mod.centre_months(
        session, chosen.id, today, low_share=state.settings.answer_low_share
    )
    open_alerts = alert_mod.listing(
        session, centres={chosen.code}, states=alert_mod.ACTIVE, lang=lang
    )
    staff = None
    if user.role in (Role.ADMIN.value, Role.MANAGER.value):
        staff = scores.employee_scores(session, chosen.id, first, last)
        session.add(
            AuditLog(
                at=state.clock(),
                actor=f"user:{user.username}",
                action="dashboard.staff",
                detail={"centre": chosen.code, "start": first.isoformat(), "end": last.isoformat()},
            )
        )
        session.commit()
    return _page(
        request,
        "dashboard.html",
        lang,
        user=user,
        centres=centres,
        centre=chosen,
        centre_name=chosen.name_hy if lang == "hy" else chosen.name_en,
        first=first,
        last=last,
        summary=summary[0] if summary else None,
        services=services,
        days=days,
        notes=notes,
        uncertain=uncertain,
        undelivered=undelivered,
        alerts=open_alerts,
        pictures=pictures,
        periods=_periods(today),
        units=units,
        tz=ZoneInfo(state.settings.timezone),
        staff=staff,
        can_note=user.role in (Role.ADMIN.value, Role.MANAGER.value),
        saved=bool(saved),
        acked=bool(acked),
        answered=bool(answered),
        months=months,
        waiting=[(m, f) for m in months for f in m.unanswered],
        given=list({a.id: a for m in months for a in m.answers}.values()),
        factor_names=FACTOR_NAMES[lang],
        month_name=lambda d: month_name(lang, d),
        answer_langs=list(LANG_NAMES.items()),
    )


def _share(summary: dict[str, Any] | None) -> tuple[int, int]:
    """(top two, n) over every scale of a centre's total: scale-free."""
    top = n = 0
    for t in (summary or {}).get("total", []):
        top += sum(t["counts"][-2:])
        n += t["n"]
    return top, n


def _periods(today: date) -> list[tuple[str, date, date]]:
    """The quick periods: today, this ISO week, this month, the last 30 days."""
    return [
        ("p_day", today, today),
        ("p_week", today - timedelta(days=today.weekday()), today),
        ("p_month", today.replace(day=1), today),
        ("p_30", today - timedelta(days=29), today),
    ]


def _pictures(
    session: Any,
    centre: Centre,
    first: date,
    last: date,
    summary: list[dict[str, Any]],
    days: list[dict[str, Any]],
    services: dict[str, str],
    lang: str,
    state: Any,
) -> dict[str, Any]:
    t = TEXT[lang]
    tz = ZoneInfo(state.settings.timezone)
    period = f"{first.isoformat()}..{last.isoformat()}"
    now_sum = summary[0] if summary else None
    top, n = _share(now_sum)
    length = (last - first).days + 1
    prev_last = first - timedelta(days=1)
    prev_first = prev_last - timedelta(days=length - 1)
    prev = scores.centre_scores(session, prev_first, prev_last, [centre.id])
    p_top, p_n = _share(prev[0] if prev else None)
    compare = {
        "csat": top / n if n else None,
        "n": n,
        "prev_csat": p_top / p_n if p_n else None,
        "prev_n": p_n,
        "prev_first": prev_first,
        "prev_last": prev_last,
    }
    levels = []
    for tot in (now_sum or {}).get("total", []):
        for i, c in enumerate(tot["counts"]):
            share = c / tot["n"] if tot["n"] else 0.0
            levels.append(
                (t["level"].format(level=i + 1, scale=tot["scale"]), share, None, f" ({c})")
            )
    service_bars = [
        (
            services.get(sv["service"], sv["service"]),
            sv["csat"] or 0.0,
            tuple(sv["csat_ci95"]) if sv["csat_ci95"] else None,
            f" (n = {sv['n']})",
        )
        for sv in (now_sum or {}).get("services", [])
        if sv["n"]
    ]
    grid = charts.hour_counts(session, centre.id, first, last, tz)
    factors = scores.factor_summary(session, centre.id, first, last)
    factor_bars = [
        (
            FACTOR_QUESTIONS[lang][f["factor"]],
            f["share"],
            f["ci"],
            f" (n = {f['n']})",
        )
        for f in factors
        if f["n"]
    ]
    channels = scores.channel_counts(session, centre.id, first, last)
    return {
        "factors": _both(
            charts.bars, factor_bars, t["pic_factors"], t["pic_factors_desc"], "factors-chart"
        )
        if factor_bars
        else None,
        "factors_table": factor_bars,
        "channels": channels,
        "compare": compare,
        "trend": _both(
            charts.trend, days, t["pic_trend"], t["pic_trend_desc"].format(period=period), "trend"
        ),
        "levels": _both(charts.bars, levels, t["pic_levels"], t["pic_levels_desc"], "levels"),
        "levels_table": levels,
        "services": _both(
            charts.bars, service_bars, t["pic_services"], t["pic_services_desc"], "services-chart"
        ),
        "heatmap": charts.responsive(
            charts.heatmap(grid, lang, t["pic_heatmap"], t["pic_heatmap_desc"]),
            charts.heatmap(
                grid,
                lang,
                t["pic_heatmap"],
                t["pic_heatmap_desc"],
                "heatmap-n",
                width=charts.NARROW,
            ),
        ),
        "grid": grid,
        "hours": [h for h in range(24) if any(grid[d][h] for d in range(7))],
        "weekdays": charts.WEEKDAYS[lang],
    }


def _both(draw: Any, items: Any, title: str, desc: str, ident: str) -> Markup:
    """A picture drawn for a desk and for a phone (the CSS shows one of them)."""
    return charts.responsive(
        draw(items, title, desc, ident), draw(items, title, desc, f"{ident}-n", width=charts.NARROW)
    )


#: Below this many ratings in the period, a centre is listed as too few to judge.
JUDGE_MIN_N = 30
#: From this many days on, the ministry's trend is drawn by month (a point a month).
TREND_BY_MONTH_DAYS = 92


@router.get("/ministry")
def ministry(
    request: Request,
    session: SessionDep,
    state: StateDep,
    start: Start = None,
    end: End = None,
    lang: Annotated[str | None, Query(max_length=8)] = None,
    marz: Annotated[str | None, Query(max_length=8, pattern=r"^AM-[A-Z]{2}$")] = None,
) -> Response:
    """Every centre at a glance, for the ministry's analysts (and admins): marzes,
    rankings with their intervals, the centres with too few ratings to judge, and the
    national pictures."""
    lang = _lang(request, lang)
    user = _current_user(request, session, state)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if user.role not in (Role.ADMIN.value, Role.ANALYST.value):
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    t = TEXT[lang]
    today = state.today_now().astimezone(ZoneInfo(state.settings.timezone)).date()
    last = min(end or today, today)
    first = start or max(last - timedelta(days=29), MIN_DAY)
    if first > last or (last - first).days >= MAX_DAYS:
        first = max(last - timedelta(days=29), MIN_DAY)
    cells = scores.centre_service_counts(session, first, last)
    ranked = scores.centre_rankings(session, first, last, cells=cells)
    judged = [r for r in ranked if r["n"] >= JUDGE_MIN_N]
    for i, r in enumerate(judged, start=1):
        r["rank"] = i
    known = names(session)
    centres = {c.code: c for c in known.centres}
    totals: dict[int, int] = {}
    for (cid, _sid, _scale), counts in cells.items():
        totals[cid] = totals.get(cid, 0) + counts.n
    # The phone part of each score (the totals are the rankings' own).
    phone = online_channel.phone_shares(session, first, last, totals)
    for r in judged:
        got = phone.get(centres[r["centre"]].id) if r["centre"] in centres else None
        r["phone_share"] = got["online"] / got["n"] if got and got["n"] else 0.0
        r["phone_excluded"] = got["online_excluded"] if got else 0
    counted = {r["centre"]: r["n"] for r in ranked}
    too_few = [
        (c, counted.get(code, 0))
        for code, c in centres.items()
        if counted.get(code, 0) < JUDGE_MIN_N
    ]
    # Marzes and services over the period from the same cells as the rankings (whole
    # months read monthly cells).
    marz_of = {c.id: c.marz for c in centres.values()}
    service_code = known.service_code
    per_marz: dict[str, list[int]] = {}
    service_shares: dict[str, list[int]] = {}
    for (cid, sid, _scale), counts in cells.items():
        for acc in (
            per_marz.setdefault(marz_of[cid], [0, 0]),
            service_shares.setdefault(service_code.get(sid, series_mod.NO_SERVICE), [0, 0]),
        ):
            acc[0] += counts.top_two
            acc[1] += counts.n
    marz_rows = []
    for code, (top, n) in sorted(per_marz.items()):
        lo, hi = scores.wilson(top, n)
        marz_rows.append(
            {
                "code": code,
                "name": marz_name(code, lang),
                "n": n,
                "csat": top / n if n else None,
                "ci": (lo, hi),
                "centres": sum(1 for c in centres.values() if c.marz == code),
            }
        )
    # A long period is drawn by month, from the monthly cells (whole months) and the
    # daily ones at its edges: a point a day is unreadable over a year, and reading a
    # year of daily cells is most of what such a page would cost.
    by_month = (last - first).days >= TREND_BY_MONTH_DAYS
    national_days: dict[str, list[int]] = {}
    by = "marz" if marz else "national"
    grain = "month" if by_month else "day"
    for row in series_mod.series(session, first, last, grain=grain, by=by):  # type: ignore[arg-type]
        if marz and row.group != marz:
            continue
        acc = national_days.setdefault(row.period, [0, 0])
        acc[0] += row.counts.top_two
        acc[1] += row.counts.n
    service_names = {sv.code: (sv.name_hy if lang == "hy" else sv.name_en) for sv in known.services}
    service_bars = []
    for code, (top, n) in sorted(service_shares.items()):
        if n:
            lo, hi = scores.wilson(top, n)
            service_bars.append((service_names.get(code, code), top / n, (lo, hi), f" (n = {n})"))
    days = []
    for period, (top, n) in sorted(national_days.items()):
        if n:
            lo, hi = scores.wilson(top, n)
            days.append({"label": period, "n": n, "csat": top / n, "csat_ci95": [lo, hi]})
    rank_bars = [
        (
            r["name_hy"] if lang == "hy" else r["name_en"],
            r["score"],
            (r["score_ci95"][0], r["score_ci95"][1]),
            f" (n = {r['n']})",
        )
        for r in judged
    ]
    due_days = state.settings.answer_due_days
    unanswered = [
        {**row, "centre": known.centre_by_id[row["centre_id"]]}
        for row in state.unanswered.get(
            session, today, due_days=due_days, low_share=state.settings.answer_low_share
        )
        if row["centre_id"] in known.centre_by_id
    ]
    period = f"{first.isoformat()}..{last.isoformat()}"
    suffix = "_m" if by_month else ""
    trend_title = (
        t["pic_marz" + suffix].format(marz=marz_name(marz, lang))
        if marz
        else t["pic_national" + suffix]
    )
    return _page(
        request,
        "ministry.html",
        lang,
        user=user,
        first=first,
        last=last,
        marzes=marz_rows,
        ranked=judged,
        too_few=too_few,
        min_n=JUDGE_MIN_N,
        trend=_both(
            charts.trend, days, trend_title, t["pic_trend_desc"].format(period=period), "national"
        ),
        trend_title=trend_title,
        marz=marz,
        marz_choices=[(code, marz_name(code, lang)) for code in MARZ_NAMES],
        services_chart=_both(
            charts.bars, service_bars, t["pic_services"], t["pic_services_desc"], "services-chart"
        ),
        ranks_chart=_both(
            charts.bars, rank_bars, t["pic_rankings"], t["pic_rankings_desc"], "rankings"
        ),
        periods=_periods(today),
        unanswered=unanswered,
        due_days=due_days,
        factor_names=FACTOR_NAMES[lang],
        month_name=lambda d: month_name(lang, d),
    )


@router.post("/dashboard/notes")
def add_note(
    request: Request,
    session: SessionDep,
    state: StateDep,
    centre: Annotated[str, Form()],
    day: FormDay,
    text: Annotated[str, Form(min_length=1, max_length=MAX_NOTE)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    lang = _lang(request, None)
    user = _current_user(request, session, state)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if not _csrf_ok(request, csrf):
        return _page(request, "message.html", lang, 403, user=user, message="CSRF")
    row = session.scalars(select(Centre).where(Centre.code == centre)).first()
    if row is None or not _may_manage(user, centre):
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    now = state.clock()
    today = state.today_now().astimezone(ZoneInfo(state.settings.timezone)).date()
    if day > today:  # a note explains a day that happened: it could never be shown
        return _page(request, "message.html", lang, 422, user=user, message=TEXT[lang]["future"])
    session.add(
        DayNote(centre_id=row.id, day=day, text=text.strip(), author=user.username, created_at=now)
    )
    session.add(
        AuditLog(
            at=now,
            actor=f"user:{user.username}",
            action="note.add",
            detail={"centre": centre, "day": day.isoformat()},
        )
    )
    session.commit()
    return RedirectResponse(f"/dashboard?centre={centre}&saved=1", status_code=303)


@router.post("/dashboard/alerts/{alert_id}/ack")
def acknowledge_alert(
    request: Request,
    session: SessionDep,
    state: StateDep,
    alert_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)],
    comment: Annotated[str, Form(min_length=1, max_length=1000)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """A manager of the alert's centre (or an admin) says someone is on it."""
    lang = _lang(request, None)
    user = _current_user(request, session, state)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if not _csrf_ok(request, csrf):
        return _page(request, "message.html", lang, 403, user=user, message="CSRF")
    alert = session.get(Alert, alert_id)
    code = (
        session.scalar(select(Centre.code).where(Centre.id == alert.centre_id))
        if alert is not None and alert.centre_id is not None
        else None
    )
    if alert is None or not _may_manage(user, code):
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    try:
        alert_mod.acknowledge(session, alert_id, f"user:{user.username}", comment, state.clock())
    except ValueError:
        return _page(
            request, "message.html", lang, 409, user=user, message=TEXT[lang]["ack_closed"]
        )
    session.commit()
    return RedirectResponse(f"/dashboard?centre={code}&acked=1#alerts", status_code=303)

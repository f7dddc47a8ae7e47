"""The centre dashboard: server-rendered pages in Armenian (default) and English.

People log in with a username and password (argon2, rate-limited); the session is a
signed cookie (SameSite=Strict, HttpOnly; Secure in production) and every form
carries a CSRF token tied to it. Managers see their own centres and staff (staff
figures only where n >= 5, never ranked); analysts and admins see every centre.
Pages work without JavaScript, with large type, high contrast and real labels.
"""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select, text

from collector.edge import online as online_channel
from collector.edge import websessions
from collector.edge.api.deps import SessionDep, StateDep
from collector.edge.api.params import MAX_DAYS, MIN_DAY, End, FormDay, Start
from collector.edge.auth import Role, scoped_centres
from collector.edge.clientaddr import client_address
from collector.edge.users import LoginRefused, RateLimited, login
from collector.models import (
    UNCERTAIN_SQL,
    Alert,
    AuditLog,
    Centre,
    DayNote,
    Event,
    ForwardBatch,
    User,
)
from collector.outbound import alerts as alert_mod
from collector.reading import charts, fleet, scores
from collector.reading import series as series_mod
from collector.reading.names import names
from device.wording import FACTOR_QUESTIONS

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
router = APIRouter(include_in_schema=False)
LANGS = ("hy", "en")
MAX_NOTE = 500

TEXT: dict[str, dict[str, str]] = {
    "hy": {
        "app": "Գնահատ",
        "tagline": "Սոցիալական ծառայությունների գնահատում",
        "login": "Մուտք",
        "username": "Օգտանուն",
        "password": "Գաղտնաբառ",
        "logout": "Ելք",
        "bad_login": "Սխալ օգտանուն կամ գաղտնաբառ։",
        "locked": "Չափազանց շատ անհաջող փորձեր։ Փորձեք կրկին {seconds} վայրկյանից։",
        "centre": "Կենտրոն",
        "from": "Սկիզբ",
        "to": "Ավարտ",
        "show": "Ցույց տալ",
        "services": "Ծառայություններ",
        "service": "Ծառայություն",
        "total": "Ընդամենը",
        "n": "Գնահատականներ",
        "mean": "Միջին",
        "csat": "Գոհունակություն",
        "interval": "95 % միջակայք",
        "days": "Օրեր",
        "day": "Օր",
        "notes": "Նշումներ",
        "staff": "Աշխատակիցներ",
        "employee": "Աշխատակից",
        "not_enough": "Բավարար գնահատականներ չկան",
        "no_ratings": "Այս ժամանակահատվածում գնահատականներ չկան։",
        "add_note": "Ավելացնել նշում",
        "note": "Նշում (օր․՝ համակարգի խափանում, հերթի գերծանրաբեռնվածություն)",
        "save": "Պահպանել",
        "saved": "Նշումը պահպանված է։",
        "staff_rule": "Աշխատակցի ցուցանիշը ցույց է տրվում միայն առնվազն 5 գնահատականի դեպքում։",
        "forbidden": "Այս էջը ձեզ համար չէ։",
        "language": "English",
        "skip": "Անցնել բովանդակությանը",
        "unattributed": "Առանց աշխատակցի",
        "future": "Նշումը վերաբերում է արդեն եղած օրվան, ոչ ապագային։",
        "uncertain_day": "{n} գնահատական թվագրված է մոտավորապես․ սարքի ժամացույցը "
        "ճշգրտված չէր, և օրը կարող է տարբերվել",
        "me_is": "Ուղարկում ՄԳՏՀ (մոնիթորինգի և գնահատման տեղեկատվական համակարգ)",
        "me_is_all": "Այս ժամանակահատվածի բոլոր օրերը հասել են ՄԳՏՀ։",
        "me_is_state": "Վիճակ",
        "me_is_reason": "Պատճառ",
        "fwd_pending": "սպասում է",
        "fwd_parked": "կանգնեցված է",
        "fwd_locked": "փակված է ՄԳՏՀ-ում",
        "fwd_link": "ՄԳՏՀ-ն չի պատասխանում",
        "fwd_server": "ՄԳՏՀ-ի խափանում",
        "fwd_auth": "ՄԳՏՀ-ն մերժել է հաշիվը",
        "fwd_mapping": "տվյալների համապատասխանեցման բաց",
        "fwd_not_open": "ժամանակահատվածը դեռ բաց չէ ՄԳՏՀ-ում",
        "fwd_locked_reason": "ժամանակահատվածը փակված է ՄԳՏՀ-ում",
        "fwd_unmapped": "համապատասխանեցումը չի ընդգրկում",
        "fwd_answer": "անհասկանալի պատասխան",
        "alerts": "Ազդանշաններ",
        "units": "Սարքեր",
        "ministry": "Նախարարություն. բոլոր կենտրոնները",
        "ministry_link": "Բոլոր կենտրոնները",
        "dashboard_link": "Կենտրոն",
        "marzes": "Մարզեր",
        "marz": "Մարզ",
        "centres_n": "Կենտրոններ",
        "rankings": "Կենտրոնների դասակարգում",
        "rank": "Տեղ",
        "by_phone": "Հեռախոսով (հանված)",
        "score": "Գնահատված գոհունակություն",
        "rank_rule": "Դասակարգումը կրճատում է փոքր նմուշները դեպի ազգային միջինը "
        "(Դիրիխլեի նախնական բաշխում)։ Միջակայքերը հատվելու դեպքում տարբերությունը "
        "վստահելի չէ։",
        "too_few": "Դատելու համար քիչ գնահատականներ (< {n})",
        "all_judged": "Բոլոր կենտրոններն ունեն բավարար գնահատականներ։",
        "pic_national": "Գոհունակությունն ըստ օրերի, ամբողջ երկրում",
        "pic_marz": "Գոհունակությունն ըստ օրերի, {marz}",
        "whole_country": "Ամբողջ երկիրը",
        "pic_rankings": "Կենտրոններ՝ գնահատված գոհունակությամբ",
        "pic_rankings_desc": "Յուրաքանչյուր կենտրոնի գնահատված գոհունակությունը և 95 % միջակայքը",
        "p_day": "Այսօր",
        "p_week": "Այս շաբաթ",
        "p_month": "Այս ամիս",
        "p_30": "Վերջին 30 օր",
        "compare": "Գոհունակությունը՝ {csat} ({n} գնահատական)։ Նախորդ ժամանակահատվածում "
        "({first}–{last})՝ {prev} ({prev_n})։ Փոփոխություն՝ {delta} տոկոսային կետ։",
        "compare_none": "Նախորդ ժամանակահատվածում ({first}–{last}) գնահատականներ չկան։",
        "pictures": "Պատկերներ",
        "pic_trend": "Գոհունակությունն ըստ օրերի",
        "pic_trend_desc": "Գիծը՝ գոհունակության բաժինը, գոտին՝ 95 % միջակայքը, "
        "ներքևի սյուները՝ գնահատականների թիվը, {period}",
        "pic_levels": "Գնահատականների բաշխումն ըստ մակարդակների",
        "pic_levels_desc": "Յուրաքանչյուր մակարդակի բաժինը և թիվը",
        "pic_factors": "Որտեղ ենք կորցնում այցելուներին",
        "pic_factors_desc": "Գնահատման գործոններ․ բարենպաստ պատասխանների բաժինը և 95 % միջակայքը",
        "factor_h": "Գործոն",
        "channels": "Ալիքներ",
        "channel_counter": "պատուհանի մոտ",
        "channel_online": "հեռախոսով",
        "pic_services": "Ծառայություններ՝ կողք կողքի",
        "pic_services_desc": "Գոհունակության բաժինը և 95 % միջակայքը ըստ ծառայության",
        "pic_heatmap": "Գնահատականներն ըստ ժամի և շաբաթվա օրվա",
        "pic_heatmap_desc": "Կենտրոնի գնահատականների թիվը ըստ ժամի (սյուներ) և օրվա (տողեր)",
        "as_table": "Ցույց տալ աղյուսակով",
        "level": "Մակարդակ {level} / {scale}",
        "level_h": "Մակարդակ",
        "share": "Բաժին",
        "hour": "Ժամ",
        "desk": "Սեղան",
        "unit": "Սարք",
        "presence": "Կապ",
        "online": "միացված",
        "offline": "անջատված",
        "last_heard": "Վերջին կապ",
        "last_rating": "Վերջին գնահատական",
        "queue": "Չուղարկված",
        "clock": "Ժամացույց",
        "synced": "ճշգրտված",
        "unsynced": "ճշգրտված չէ",
        "missing": "Բացակայող",
        "never": "երբեք",
        "minutes_old": "{n} րոպե",
        "no_alerts": "Բաց ազդանշաններ չկան։",
        "sev_info": "տեղեկություն",
        "sev_warning": "զգուշացում",
        "sev_critical": "կրիտիկական",
        "st_open": "բաց",
        "st_acknowledged": "հաստատված",
        "since": "սկսած",
        "ack": "Հաստատել",
        "ack_comment": "Մեկնաբանություն (ինչ է արվում)",
        "acked_by": "Հաստատել է {who}․ {comment}",
        "ack_saved": "Ազդանշանը հաստատված է։",
        "ack_closed": "Այս ազդանշանն արդեն փակված է։",
    },
    "en": {
        "app": "Gnahat",
        "tagline": "Ratings of social services",
        "login": "Log in",
        "username": "Username",
        "password": "Password",
        "logout": "Log out",
        "bad_login": "Wrong username or password.",
        "locked": "Too many failed attempts. Try again in {seconds} seconds.",
        "centre": "Centre",
        "from": "From",
        "to": "To",
        "show": "Show",
        "services": "Services",
        "service": "Service",
        "total": "Total",
        "n": "Ratings",
        "mean": "Mean",
        "csat": "Satisfied",
        "interval": "95 % interval",
        "days": "Days",
        "day": "Day",
        "notes": "Notes",
        "staff": "Staff",
        "employee": "Employee",
        "not_enough": "Not enough ratings",
        "no_ratings": "No ratings in this period.",
        "add_note": "Add a note",
        "note": "Note (e.g. system outage, queue overflow)",
        "save": "Save",
        "saved": "Note saved.",
        "staff_rule": "A staff member's figure is shown only from 5 ratings.",
        "forbidden": "This page is not for you.",
        "language": "Հայերեն",
        "skip": "Skip to content",
        "unattributed": "No staff member",
        "future": "A note is about a day that has happened, not a future one.",
        "me_is": "Delivery to the M&E IS",
        "me_is_all": "Every day of this period has reached the M&E IS.",
        "me_is_state": "State",
        "me_is_reason": "Reason",
        "fwd_pending": "waiting",
        "fwd_parked": "stopped",
        "fwd_locked": "locked in the M&E IS",
        "fwd_link": "the M&E IS does not answer",
        "fwd_server": "the M&E IS is failing",
        "fwd_auth": "the M&E IS refused the account",
        "fwd_mapping": "a mapping or metadata gap",
        "fwd_not_open": "the period is not open yet in the M&E IS",
        "fwd_locked_reason": "the period is closed in the M&E IS",
        "fwd_unmapped": "the mapping does not cover it",
        "fwd_answer": "an answer that cannot be used",
        "alerts": "Alerts",
        "units": "Units",
        "ministry": "Ministry: every centre",
        "ministry_link": "All centres",
        "dashboard_link": "Centre",
        "marzes": "Marzes",
        "marz": "Marz",
        "centres_n": "Centres",
        "rankings": "Centre rankings",
        "rank": "Rank",
        "by_phone": "By phone (left out)",
        "score": "Estimated satisfaction",
        "rank_rule": "Rankings shrink small samples towards the national share (a "
        "Dirichlet prior); where two intervals overlap, the order between them is not "
        "certain.",
        "too_few": "Too few ratings to judge (< {n})",
        "all_judged": "Every centre has enough ratings.",
        "pic_national": "Satisfaction by day, the whole country",
        "pic_marz": "Satisfaction by day, {marz}",
        "whole_country": "The whole country",
        "pic_rankings": "Centres by estimated satisfaction",
        "pic_rankings_desc": "Each centre's estimated satisfaction and its 95 % interval",
        "p_day": "Today",
        "p_week": "This week",
        "p_month": "This month",
        "p_30": "Last 30 days",
        "compare": "Satisfaction {csat} ({n} ratings). Previous period ({first} to {last}): "
        "{prev} ({prev_n}). Change: {delta} percentage points.",
        "compare_none": "No ratings in the previous period ({first} to {last}).",
        "pictures": "Pictures",
        "pic_trend": "Satisfaction by day",
        "pic_trend_desc": "Line: the satisfied share; band: its 95 % interval; bars along "
        "the bottom: the number of ratings; {period}",
        "pic_levels": "Ratings by level",
        "pic_levels_desc": "The share and number of ratings at each level",
        "pic_factors": "Where we lose visitors",
        "pic_factors_desc": "Assessment factors: favourable answers and their 95 % interval",
        "factor_h": "Factor",
        "channels": "Channels",
        "channel_counter": "at the desk",
        "channel_online": "by phone",
        "pic_services": "Services side by side",
        "pic_services_desc": "Satisfied share and its 95 % interval per service",
        "pic_heatmap": "Ratings by hour and weekday",
        "pic_heatmap_desc": "The centre's ratings per hour (columns) and weekday (rows)",
        "as_table": "Show as a table",
        "level": "Level {level} of {scale}",
        "level_h": "Level",
        "share": "Share",
        "hour": "Hour",
        "desk": "Desk",
        "unit": "Unit",
        "presence": "Link",
        "online": "online",
        "offline": "offline",
        "last_heard": "Last heard",
        "last_rating": "Last rating",
        "queue": "Unsent",
        "clock": "Clock",
        "synced": "synchronised",
        "unsynced": "not synchronised",
        "missing": "Missing",
        "never": "never",
        "minutes_old": "{n} min",
        "no_alerts": "No open alerts.",
        "sev_info": "info",
        "sev_warning": "warning",
        "sev_critical": "critical",
        "st_open": "open",
        "st_acknowledged": "acknowledged",
        "since": "since",
        "ack": "Acknowledge",
        "ack_comment": "Comment (what is being done)",
        "acked_by": "Acknowledged by {who}: {comment}",
        "ack_saved": "The alert is acknowledged.",
        "ack_closed": "This alert has closed already.",
        "uncertain_day": "{n} ratings dated by estimate: the unit's clock was not set, "
        "so their day may be off",
    },
}


def _lang(request: Request, asked: str | None) -> str:
    if asked in LANGS:
        request.session["lang"] = asked
    lang = request.session.get("lang", "hy")
    return lang if lang in LANGS else "hy"


def _csrf(request: Request) -> str:
    """The form token: the server-side session's once logged in; before that, a token in
    the (signed) cookie that the login form must echo."""
    live = getattr(request.state, "web_session", None)
    if live is not None:
        return str(live.csrf)
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def _csrf_ok(request: Request, presented: str) -> bool:
    live = getattr(request.state, "web_session", None)
    expected = live.csrf if live is not None else request.session.get("csrf")
    return bool(expected) and secrets.compare_digest(str(expected), presented)


def _page(
    request: Request, name: str, lang: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {"t": TEXT[lang], "lang": lang, "csrf": _csrf(request), **context},
        status_code=status_code,
    )


def _current_user(request: Request, session: Any, state: Any) -> User | None:
    """The user of this request's live server-side session, or None (then the cookie's
    stale id is dropped)."""
    token = request.session.get("sid")
    if not token:
        return None
    now = state.clock()
    live = websessions.lookup(session, str(token), now=now, idle_s=state.settings.session_idle_s)
    user: User | None = session.get(User, live.user_id) if live is not None else None
    if live is not None and (user is None or user.disabled_at is not None):
        websessions.end(session, live, why="user disabled", now=now)
        user = None
    session.commit()
    if user is None:
        request.session.pop("sid", None)
        return None
    request.state.web_session = live
    return user


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


def _visible_centres(session: Any, user: User) -> list[Any]:
    """The centres this user may see (plain rows, by code)."""
    allowed = scoped_centres(user.role, user.centres)
    every = names(session).centres
    return [c for c in every if allowed is None or c.code in allowed]


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
        "factors": charts.bars(
            factor_bars, t["pic_factors"], t["pic_factors_desc"], "factors-chart"
        )
        if factor_bars
        else None,
        "factors_table": factor_bars,
        "channels": channels,
        "compare": compare,
        "trend": charts.trend(
            days, t["pic_trend"], t["pic_trend_desc"].format(period=period), "trend"
        ),
        "levels": charts.bars(levels, t["pic_levels"], t["pic_levels_desc"], "levels"),
        "levels_table": levels,
        "services": charts.bars(
            service_bars, t["pic_services"], t["pic_services_desc"], "services-chart"
        ),
        "heatmap": charts.heatmap(grid, lang, t["pic_heatmap"], t["pic_heatmap_desc"]),
        "grid": grid,
        "hours": [h for h in range(24) if any(grid[d][h] for d in range(7))],
        "weekdays": charts.WEEKDAYS[lang],
    }


MARZ_NAMES = {
    "AM-ER": ("Yerevan", "Երևան"),
    "AM-AG": ("Aragatsotn", "Արագածոտն"),
    "AM-AR": ("Ararat", "Արարատ"),
    "AM-AV": ("Armavir", "Արմավիր"),
    "AM-GR": ("Gegharkunik", "Գեղարքունիք"),
    "AM-KT": ("Kotayk", "Կոտայք"),
    "AM-LO": ("Lori", "Լոռի"),
    "AM-SH": ("Shirak", "Շիրակ"),
    "AM-SU": ("Syunik", "Սյունիք"),
    "AM-TV": ("Tavush", "Տավուշ"),
    "AM-VD": ("Vayots Dzor", "Վայոց ձոր"),
}
#: Below this many ratings in the period, a centre is listed as too few to judge.
JUDGE_MIN_N = 30


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
    phone = online_channel.phone_shares(session, first, last)  # the phone part of each score
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
        marz_names = MARZ_NAMES.get(code, (code, code))
        marz_rows.append(
            {
                "code": code,
                "name": marz_names[1] if lang == "hy" else marz_names[0],
                "n": n,
                "csat": top / n if n else None,
                "ci": (lo, hi),
                "centres": sum(1 for c in centres.values() if c.marz == code),
            }
        )
    national_days: dict[date, list[int]] = {}
    by = "marz" if marz else "national"
    for row in series_mod.series(session, first, last, grain="day", by=by):  # type: ignore[arg-type]
        if marz and row.group != marz:
            continue
        acc = national_days.setdefault(date.fromisoformat(row.period), [0, 0])
        acc[0] += row.counts.top_two
        acc[1] += row.counts.n
    service_names = {sv.code: (sv.name_hy if lang == "hy" else sv.name_en) for sv in known.services}
    service_bars = []
    for code, (top, n) in sorted(service_shares.items()):
        if n:
            lo, hi = scores.wilson(top, n)
            service_bars.append((service_names.get(code, code), top / n, (lo, hi), f" (n = {n})"))
    days = []
    for day, (top, n) in sorted(national_days.items()):
        if n:
            lo, hi = scores.wilson(top, n)
            days.append({"day": day, "n": n, "csat": top / n, "csat_ci95": [lo, hi]})
    rank_bars = [
        (
            r["name_hy"] if lang == "hy" else r["name_en"],
            r["score"],
            (r["score_ci95"][0], r["score_ci95"][1]),
            f" (n = {r['n']})",
        )
        for r in judged
    ]
    period = f"{first.isoformat()}..{last.isoformat()}"
    marz_name = MARZ_NAMES.get(marz or "", ("", ""))[1 if lang == "hy" else 0]
    trend_title = t["pic_marz"].format(marz=marz_name) if marz else t["pic_national"]
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
        trend=charts.trend(
            days, trend_title, t["pic_trend_desc"].format(period=period), "national"
        ),
        trend_title=trend_title,
        marz=marz,
        marz_choices=[(code, n[1] if lang == "hy" else n[0]) for code, n in MARZ_NAMES.items()],
        services_chart=charts.bars(
            service_bars, t["pic_services"], t["pic_services_desc"], "services-chart"
        ),
        ranks_chart=charts.bars(rank_bars, t["pic_rankings"], t["pic_rankings_desc"], "rankings"),
        periods=_periods(today),
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
    allowed = scoped_centres(user.role, user.centres)
    row = session.scalars(select(Centre).where(Centre.code == centre)).first()
    if (
        row is None
        or user.role not in (Role.ADMIN.value, Role.MANAGER.value)
        or (allowed is not None and centre not in allowed)
    ):
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
    allowed = scoped_centres(user.role, user.centres)
    if (
        alert is None
        or user.role not in (Role.ADMIN.value, Role.MANAGER.value)
        or (allowed is not None and code not in allowed)
    ):
        return _page(request, "message.html", lang, 403, user=user, message=TEXT[lang]["forbidden"])
    try:
        alert_mod.acknowledge(session, alert_id, f"user:{user.username}", comment, state.clock())
    except ValueError:
        return _page(
            request, "message.html", lang, 409, user=user, message=TEXT[lang]["ack_closed"]
        )
    session.commit()
    return RedirectResponse(f"/dashboard?centre={code}&acked=1#alerts", status_code=303)

"""The visitor's phone page (``/r/{desk token}``) and the API that arms a desk's visit window.

A plain HTML form, no script: it works on any phone browser, with a screen reader and
with a keyboard. Everything it takes goes through :mod:`collector.edge.online`.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from collector import hours as hours_mod
from collector.clientaddr import client_address
from collector.edge import online
from collector.edge.api.deps import SessionDep, StateDep, require
from collector.edge.api.params import AUTH_RESPONSES, NOT_FOUND
from collector.edge.auth import Role, scoped_centres
from collector.edge.web import common as web_common
from collector.edge.web.answers import public_refused
from collector.models import ApiToken, Assignment, AuditLog, Centre, Device, Service
from device import protocol as p
from device.faces import face
from device.wording import FACTOR_QUESTIONS, FOLLOW_UP, LANGS, SCORE_LABELS, SOLVED_LABELS

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
router = APIRouter()
COOKIE = "gnahat_visitor"
TOKEN_MAX = 200

TEXT: dict[str, dict[str, str]] = {
    "hy": {
        "title": "Գնահատեք սպասարկումը",
        "ask": "Ինչպե՞ս գնահատեք այսօրվա սպասարկումը",
        "desk": "Պատուհան {desk}",
        "anonymous": "Գնահատումն անանուն է։ Ոչինչ չի պահվում, որով կարելի է ձեզ ճանաչել։",
        "score_needed": "Խնդրում ենք ընտրել գնահատական։",
        "forged": "Այս կոդը վավեր չէ։ Խնդրում ենք սկանավորել պատուհանի մոտ գտնվող կոդը։",
        "expired": "Էջը երկար է բաց մնացել։ Խնդրում ենք կրկին սկանավորել կոդը։",
        "replayed": "Այս գնահատականն արդեն ուղարկվել է։ Շնորհակալություն։",
        "unknown_desk": "Այս պատուհանն այլևս գնահատականներ չի ընդունում։",
        "bad_answer": "Պատասխանը չհասկացանք։ Խնդրում ենք կրկին փորձել։",
        "not_armed": "Գնահատումը բացվում է սպասարկումից հետո։ Խնդրում ենք փորձել այցից հետո։",
        "flood": "Չափազանց շատ գնահատականներ այս սարքից։ Խնդրում ենք փորձել ավելի ուշ։",
        "busy": "Կայքը զբաղված է։ Խնդրում ենք կրկին փորձել։",
        "closed": "Առցանց գնահատումն այս պահին անջատված է։",
        "done": "Ձեր գնահատականը ստացվել է։",
        "back": "Վերադառնալ գնահատման էջ",
        "to_centres": "Ինչ են ասում այցելուները կենտրոնների մասին",
        "again": "Վերադառնալ",
        "code_label": "Այցի կոդը",
        "code_hint": "Վեցանիշ կոդը, որը ցույց է տալիս պատուհանի էկրանը կամ ձեր հերթի կտրոնը։",
        "code_needed": (
            "Գնահատականը հաշվվում է այցի կոդով։ Խնդրում ենք մուտքագրել պատուհանի էկրանի կամ "
            "հերթի կտրոնի կոդը։"
        ),
        "bad_code": "Այս կոդը չի համապատասխանում։ Ստուգեք պատուհանի էկրանի կոդը և կրկին փորձեք։",
        "code_limit": "Չափազանց շատ սխալ կոդեր։ Խնդրում ենք փորձել մեկ ժամ հետո։",
        "closed_now": (
            "Կենտրոնն այժմ փակ է։ Գնահատումը հնարավոր է աշխատանքային ժամերին՝ այցից հետո։"
        ),
        "unverified": "Առանց այցի կոդի գնահատականը կպահվի, բայց չի մտնի գնահատականների մեջ։",
    },
    "en": {
        "title": "Rate the service",
        "ask": "How would you rate the service you received today?",
        "desk": "Desk {desk}",
        "anonymous": "Rating is anonymous. Nothing that could identify you is kept.",
        "score_needed": "Please choose a rating.",
        "forged": "This code is not valid. Please scan the code at the desk.",
        "expired": "This page was open too long. Please scan the code again.",
        "replayed": "This rating was already sent. Thank you.",
        "unknown_desk": "This desk no longer takes ratings.",
        "bad_answer": "We could not read that answer. Please try again.",
        "not_armed": "Rating opens once you have been served. Please try again after your visit.",
        "flood": "Too many ratings from this device. Please try again later.",
        "busy": "The site is busy. Please try again.",
        "closed": "Online rating is switched off at the moment.",
        "done": "Your rating was received.",
        "back": "Back to the rating page",
        "to_centres": "What visitors say about the centres",
        "again": "Back",
        "code_label": "Visit code",
        "code_hint": "The six-digit code on the desk's screen or on your queue ticket.",
        "code_needed": (
            "A rating counts with a visit code. Please enter the code shown on the desk's "
            "screen or your queue ticket."
        ),
        "bad_code": "This code does not match. Check the code on the desk's screen and try again.",
        "code_limit": "Too many wrong codes. Please try again in an hour.",
        "closed_now": (
            "The centre is closed now. Rating is open during opening hours, after your visit."
        ),
        "unverified": "Without a visit code your rating is kept but does not enter the scores.",
    },
    "ru": {
        "title": "Оцените обслуживание",
        "ask": "Как вы оцениваете сегодняшнее обслуживание?",
        "desk": "Окно {desk}",
        "anonymous": "Оценка анонимна. Ничего, что позволяет вас узнать, не хранится.",
        "score_needed": "Пожалуйста, выберите оценку.",
        "forged": "Этот код недействителен. Отсканируйте код у окна.",
        "expired": "Страница была открыта слишком долго. Отсканируйте код ещё раз.",
        "replayed": "Эта оценка уже отправлена. Спасибо.",
        "unknown_desk": "Это окно больше не принимает оценки.",
        "bad_answer": "Не удалось прочитать ответ. Попробуйте ещё раз.",
        "not_armed": "Оценка открывается после обслуживания. Попробуйте после визита.",
        "flood": "Слишком много оценок с этого устройства. Попробуйте позже.",
        "busy": "Сайт занят. Попробуйте ещё раз.",
        "closed": "Онлайн-оценка сейчас отключена.",
        "done": "Ваша оценка получена.",
        "back": "Вернуться к странице оценки",
        "to_centres": "Что посетители говорят о центрах",
        "again": "Назад",
        "code_label": "Код визита",
        "code_hint": "Шестизначный код на экране у окна или на вашем талоне очереди.",
        "code_needed": (
            "Оценка засчитывается с кодом визита. Введите код с экрана у окна или с талона очереди."
        ),
        "bad_code": "Код не подходит. Проверьте код на экране у окна и попробуйте ещё раз.",
        "code_limit": "Слишком много неверных кодов. Попробуйте через час.",
        "closed_now": "Центр сейчас закрыт. Оценить можно в часы работы, после визита.",
        "unverified": "Без кода визита оценка сохранится, но не войдёт в показатели.",
    },
}
LANG_NAMES = {"hy": "Հայերեն", "en": "English", "ru": "Русский"}


def _lang(request: Request, asked: str | None) -> str:
    if asked in LANGS:
        return asked
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        code = part.split(";")[0].strip()[:2].lower()
        if code in LANGS:
            return code
    return "hy"


def _browser(request: Request) -> tuple[str, bool]:
    """The browser's random cookie id (and whether it is new)."""
    value = request.cookies.get(COOKIE, "")
    if len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value, False
    return secrets.token_hex(16), True


def _page(
    request: Request,
    lang: str,
    status_code: int,
    browser: tuple[str, bool],
    production: bool,
    **context: Any,
) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(
        request,
        "online.html",
        {
            "t": TEXT[lang],
            "lang": lang,
            "langs": [(code, LANG_NAMES[code]) for code in LANGS if code != lang],
            "follow": FOLLOW_UP[lang],
            **context,
        },
        status_code=status_code,
    )
    value, new = browser
    if new:
        response.set_cookie(
            COOKIE, value, max_age=86400, httponly=True, samesite="lax", secure=production
        )
    return response


def _desk(
    session: Any, device: str, now: datetime, tz: str = "Asia/Yerevan"
) -> dict[str, Any] | None:
    """The desk behind a unit now: centre names, desk, scale, the services to offer,
    whether its centre is open."""
    dev = session.get(Device, device)
    if dev is None or (dev.retired_at is not None and dev.retired_at <= now):
        return None
    row = session.execute(
        select(Assignment.desk, Centre.name_hy, Centre.name_en, Centre.code, Centre.hours)
        .join(Centre, Centre.id == Assignment.centre_id)
        .where(
            Assignment.device_id == device,
            Assignment.valid_from <= now,
            (Assignment.valid_to.is_(None)) | (Assignment.valid_to > now),
        )
        .order_by(Assignment.valid_from.desc())
    ).first()
    if row is None:
        return None
    services = session.execute(
        select(Service.code, Service.name_hy, Service.name_en).order_by(Service.code)
    ).all()
    is_open = hours_mod.parse(row[4]).is_open(now.astimezone(ZoneInfo(tz)))
    return {"desk": row[0], "name_hy": row[1], "name_en": row[2], "centre": row[3],
            "scale": dev.scale, "services": services, "open": is_open}  # fmt: skip


def _form(request: Request, lang: str, scale: int, desk: dict[str, Any]) -> dict[str, Any]:
    return {
        "desk": desk,
        "centre_name": desk["name_hy"] if lang == "hy" else desk["name_en"],
        "labels": list(enumerate(SCORE_LABELS[lang][scale], start=1)),
        # The same drawn faces as on the unit's screen, beside each level.
        "faces": [Markup(face(level, scale)) for level in range(1, scale + 1)],
        "questions": FACTOR_QUESTIONS[lang],
        "solved": list(zip(p.SOLVED_ANSWERS, SOLVED_LABELS[lang], strict=True)),
        "scaled": list(p.SCALED_FACTORS),
        "levels": list(enumerate(SCORE_LABELS[lang][scale], start=1)),
        "service_names": [(code, hy if lang == "hy" else en) for code, hy, en in desk["services"]],
    }


@router.get("/r/{token}", include_in_schema=False)
def rating_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    token: Annotated[str, PathParam(max_length=TOKEN_MAX)],
    lang: Annotated[str | None, Query(max_length=8)] = None,
    c: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    """A desk's page; ``c``: the visit code, as the desk screen's QR carries it."""
    lang = _lang(request, lang)
    browser = _browser(request)
    settings = state.settings
    prod = settings.environment == "production"
    if not settings.online_enabled:
        return _page(request, lang, 503, browser, prod, message=TEXT[lang]["closed"])
    try:
        device = online.desk_of(settings.secret_key, token)
    except online.Refused as exc:
        return _page(request, lang, exc.status, browser, prod, message=TEXT[lang][exc.code])
    now = state.today_now()  # the business clock (the demo's simulated days), else the clock
    desk = _desk(session, device, now, settings.timezone)
    if desk is None:
        return _page(request, lang, 404, browser, prod, message=TEXT[lang]["unknown_desk"])
    tz = ZoneInfo(settings.timezone)
    proof, error, status_code = None, None, 200
    if c:
        session.close()
        try:
            proof = online.prove(
                state.sessions, secret=settings.secret_key, limits=limits(settings),
                device=device, raw_code=c, address=_address(request, settings), now=now, tz=tz,
            )  # fmt: skip
        except online.Refused as exc:
            state.metrics.online_refused.labels(exc.code).inc()
            if exc.code == "code_limit":
                return _page(request, lang, exc.status, browser, prod, message=TEXT[lang][exc.code])
            error, status_code = TEXT[lang][exc.code], exc.status
    if proof is None and not desk["open"]:
        return _page(request, lang, 409, browser, prod, message=TEXT[lang]["closed_now"])
    visit = online.visit_token(settings.secret_key, device, browser[0], now, proof)
    return _page(
        request, lang, status_code, browser, prod, token=token, visit=visit, error=error,
        proven=proof is not None, open_mode=settings.online_proof == "open",
        **_form(request, lang, desk["scale"], desk),
    )  # fmt: skip


def _small_int(value: str, top: int) -> int | None:
    """``value`` as a level 1..``top``: ASCII digits only (``²`` or ``④`` are digits to
    Python's ``isdigit`` but not numbers ``int`` reads)."""
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if 1 <= int(value) <= top else None


def _address(request: Request, settings: Any) -> str:
    return client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )


@router.post("/r/{token}", include_in_schema=False)
def rate(
    request: Request,
    session: SessionDep,
    state: StateDep,
    token: Annotated[str, PathParam(max_length=TOKEN_MAX)],
    visit: Annotated[str, Form(max_length=400)] = "",
    score: Annotated[str, Form(max_length=2)] = "",
    procedure: Annotated[str, Form(max_length=2)] = "",
    solved: Annotated[str, Form(max_length=8)] = "",
    conduct: Annotated[str, Form(max_length=2)] = "",
    competence: Annotated[str, Form(max_length=2)] = "",
    service: Annotated[str, Form(max_length=32)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
    lang: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    lang = _lang(request, lang or None)
    browser = _browser(request)
    settings = state.settings
    prod = settings.environment == "production"
    if not settings.online_enabled:
        return _page(request, lang, 503, browser, prod, message=TEXT[lang]["closed"])
    now = state.today_now()
    tz = ZoneInfo(settings.timezone)
    answered: dict[str, str] = {"procedure": procedure, "solved": solved, "conduct": conduct,
                                "competence": competence, "service": service}  # fmt: skip
    try:
        device = online.desk_of(settings.secret_key, token)
        desk = _desk(session, device, now, settings.timezone)
        if desk is None:
            raise online.Refused("unknown_desk", 404)
        # A browser that sends no cookie (one that keeps none can never send one back)
        # rates under the id its page view was given: the token is bound to that view.
        cookieless = COOKIE not in request.cookies
        seen = online.read_visit(
            settings.secret_key, visit, device, None if cookieless else browser[0],
            settings.online_visit_ttl_s, now,
        )  # fmt: skip
        if cookieless and seen.browser:
            browser = (seen.browser, True)
        scale = int(desk["scale"])

        def again(error: str, status_code: int, proven: bool) -> Response:
            """The form again, with the answers kept and the gap said."""
            return _page(
                request, lang, status_code, browser, prod, token=token, visit=visit,
                error=error, answered=answered, proven=proven,
                open_mode=settings.online_proof == "open", **_form(request, lang, scale, desk),
            )  # fmt: skip

        answered["code"] = code if code.isascii() else ""
        chosen = _small_int(score, scale)
        if chosen is None:
            return again(TEXT[lang]["score_needed"], 422, seen.proof is not None)
        factors: dict[str, Any] = {}
        for name, value in (("procedure", procedure), ("conduct", conduct),
                            ("competence", competence)):  # fmt: skip
            if value:
                level = _small_int(value, scale)
                if level is None:
                    raise online.Refused("bad_answer", 400)
                factors[name] = level
        if solved:
            if solved not in p.SOLVED_ANSWERS:
                raise online.Refused("bad_answer", 400)
            factors["solved"] = solved
        codes = {c for c, _hy, _en in desk["services"]}
        if service and service not in codes:
            raise online.Refused("bad_answer", 400)
        address = _address(request, settings)
        session.close()  # the submission opens its own transactions
        if seen.proof is None and code.strip():
            try:
                proof = online.prove(
                    state.sessions, secret=settings.secret_key, limits=limits(settings),
                    device=device, raw_code=code, address=address, now=now, tz=tz,
                )  # fmt: skip
            except online.Refused as exc:
                if exc.code != "bad_code":
                    raise
                state.metrics.online_refused.labels(exc.code).inc()
                return again(TEXT[lang]["bad_code"], exc.status, False)
            seen = online.Visit(seen.nonce, proof, seen.browser)
        if seen.proof is None and settings.online_proof != "open":
            state.metrics.online_refused.labels("code_needed").inc()
            return again(TEXT[lang]["code_needed"], 409, False)
        try:
            online.submit(
                state.sessions, state.store, secret=settings.secret_key,
                limits=limits(settings), device=device, visit=seen,
                answers=online.Answers(
                    chosen, {k: factors[k] for k in p.FACTORS if k in factors}, service or None
                ),
                address=address, browser=browser[0], now=now, tz=tz,
            )  # fmt: skip
        except SQLAlchemyError:
            # Nothing was kept (the proof is spent in the rating's own transaction):
            # the same form may be sent again.
            log.exception("an online rating for %s could not be stored", device)
            raise online.Refused("busy", 503) from None
    except online.Refused as exc:
        state.metrics.online_refused.labels(exc.code).inc()
        # A way back to the desk's page, wherever there is one to go back to.
        back = None if exc.code in ("forged", "unknown_desk") else f"/r/{token}?lang={lang}"
        return _page(request, lang, exc.status, browser, prod, message=TEXT[lang][exc.code],
                     back=back)  # fmt: skip
    state.metrics.online_ratings.inc()
    return _page(request, lang, 200, browser, prod, message=TEXT[lang]["done"], done=True)


async def _refused_input(request: Request, exc: Exception) -> Response:
    """Input FastAPI refuses before our code sees it (an overlong field or token, a
    ``lang`` past 8 characters, a date that is no date): on a phone page or a page of the
    dashboard, a person gets a page saying so, not JSON; the API keeps its JSON."""
    if request.url.path.startswith(web_common.PEOPLE_PATHS):
        return web_common.refused_input(request)
    if request.url.path.startswith("/centres"):
        return public_refused(request)
    if not request.url.path.startswith("/r/"):
        assert isinstance(exc, RequestValidationError)
        return await request_validation_exception_handler(request, exc)
    lang = _lang(request, None)
    state = request.app.state.gnahat
    state.metrics.online_refused.labels("bad_answer").inc()
    prod = state.settings.environment == "production"
    return _page(request, lang, 400, _browser(request), prod, message=TEXT[lang]["bad_answer"])


def install(app: Any) -> None:
    """The phone pages' router and their answer to refused input."""
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _refused_input)


def limits(settings: Any) -> online.Limits:
    return online.Limits(
        proof=settings.online_proof,
        per_browser_day=settings.online_per_browser_day,
        per_address_hour=settings.online_per_address_hour,
        visit_ttl_s=settings.online_visit_ttl_s,
        window_s=settings.online_window_s,
        code_max_age_s=settings.online_code_max_age_s,
        code_failures_hour=settings.online_code_failures_hour,
        arm_interval_s=settings.online_arm_interval_s,
        arms_per_hour=settings.online_arms_per_hour,
    )


Armer = Annotated[ApiToken, Depends(require(Role.TECHNICIAN, Role.MANAGER))]


@router.post(
    "/api/v1/online/desks/{device}/arm",
    tags=["online"],
    responses={
        **AUTH_RESPONSES,
        **NOT_FOUND,
        409: {"description": "The centre is closed now."},
        429: {"description": "Too soon after the desk's last window, or too many an hour."},
    },
)
def arm_desk(
    request: Request,
    session: SessionDep,
    state: StateDep,
    token: Armer,
    device: Annotated[str, PathParam(max_length=64, pattern=p.DEVICE_ID_RE.pattern)],
) -> dict[str, str]:
    """Open a visit window at a desk (a queue system calling the next visitor). The
    answer's six-digit ``code`` (and ``url``, its QR) is the visitor's proof of the visit:
    print it on the ticket or show it on the queue display; the desk's phone page takes
    one rating with it while the window is open. Managers may arm only their own
    centres' desks; a desk re-armed sooner than ``GNAHAT_ONLINE_ARM_INTERVAL_S``, or a
    token past ``GNAHAT_ONLINE_ARMS_PER_HOUR``, is refused (429); every window is audited."""
    now = state.today_now()
    desk = _desk(session, device, now)
    if desk is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no desk has unit {device!r} now")
    allowed = scoped_centres(token.role, token.centres)
    if allowed is not None and desk["centre"] not in allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a desk of your centres")
    session.close()
    settings = state.settings
    actor = f"token:{token.name}"
    try:
        closes, code = online.arm(
            state.sessions, device, now, limits(settings), actor=actor,
            tz=ZoneInfo(settings.timezone),
        )  # fmt: skip
    except online.Refused as exc:
        with state.sessions() as s, s.begin():
            s.add(AuditLog(at=now, actor=actor, action="online.arm_refused",
                           detail={"device": device, "reason": exc.code}))  # fmt: skip
        raise HTTPException(exc.status, TEXT["en"].get(exc.code, exc.code)) from None
    url = f"{settings.public_url.rstrip('/')}/r/{online.desk_token(settings.secret_key, device)}"
    return {"device": device, "closes_at": closes.isoformat(), "code": code,
            "url": f"{url}?c={code}"}  # fmt: skip

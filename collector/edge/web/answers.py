"""You said, we did: managers answer a low month (or one factor of it) from the
dashboard; every centre has a public page with its months' figures and those answers
beside them, in Armenian, English and Russian, with the same suppression as the open
data; the open data carries the answers too.

The public pages need no login and set no cookie of their own. An answer is public the
moment it is saved: the form says so, and it is audited.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from collector.edge.api.deps import SessionDep, StateDep
from collector.edge.web.common import (
    TEMPLATES,
    _csrf_ok,
    _current_user,
    _lang,
    _may_manage,
    _page,
)
from collector.edge.web.public_texts import (
    FACTOR_NAMES,
    LANG_NAMES,
    PUBLIC_LANGS,
    PUBLIC_TEXT,
    month_name,
)
from collector.edge.web.texts import TEXT, marz_name
from collector.models import Answer, AuditLog, Centre
from collector.reading import answers as answers_mod
from collector.reading import scores
from collector.reading.names import names

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["open data"])

MAX_ANSWER = 1000
#: Answers one centre may publish in a day (a slip of the hand, not a flood of text).
ANSWERS_PER_DAY = 20
#: How far back a month may be answered.
ANSWER_MONTHS = 12


def _today(state: Any) -> date:
    now: datetime = state.today_now()
    return now.astimezone(ZoneInfo(state.settings.timezone)).date()


def centre_name(centre: Any, lang: str) -> tuple[str, str]:
    """A centre's name for a page in ``lang``, and the language it is written in (the
    registry has Armenian and English names: a Russian page shows the English one)."""
    return (centre.name_hy, "hy") if lang == "hy" else (centre.name_en, "en")


def _public_lang(asked: str | None) -> str:
    return asked if asked in PUBLIC_LANGS else "hy"


def _public(
    request: Request, template: str, lang: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "p": PUBLIC_TEXT[lang],
            "lang": lang,
            "langs": [(code, LANG_NAMES[code]) for code in PUBLIC_LANGS],
            "factor_names": FACTOR_NAMES[lang],
            "month_name": lambda d: month_name(lang, d),
            "min_n": scores.PUBLIC_MIN_N,
            **context,
        },
        status_code=status_code,
        headers={"Cache-Control": "public, max-age=60"},
    )


# ---------------------------------------------------------------- the public pages


@router.get("/centres")
def centre_index(
    request: Request,
    session: SessionDep,
    lang: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """Every centre by marz, each linking to its public page."""
    lang = _public_lang(lang)
    by_marz: dict[str, list[tuple[str, str, str]]] = {}
    for c in names(session).centres:
        name, name_lang = centre_name(c, lang)
        by_marz.setdefault(c.marz, []).append((c.code, name, name_lang))
    marzes = [
        (marz_name(code, lang), sorted(rows, key=lambda r: r[1]))
        for code, rows in sorted(by_marz.items(), key=lambda kv: marz_name(kv[0], lang))
    ]
    return _public(request, "public_index.html", lang, marzes=marzes, path="/centres")


@router.get("/centres/{code}")
def centre_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    code: Annotated[str, PathParam(max_length=32)],
    lang: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """A centre's last months as the public may see them, with the managers' answers."""
    lang = _public_lang(lang)
    centre = next((c for c in names(session).centres if c.code == code), None)
    if centre is None:
        return _public(
            request, "public_message.html", lang, 404, message=PUBLIC_TEXT[lang]["not_found"]
        )
    months = answers_mod.centre_months(
        session, centre.id, _today(state), low_share=state.settings.answer_low_share
    )
    name, name_lang = centre_name(centre, lang)
    return _public(
        request,
        "public_centre.html",
        lang,
        centre=centre,
        name=name,
        name_lang=name_lang,
        marz=marz_name(centre.marz, lang),
        months=months,
        path=f"/centres/{centre.code}",
    )


def public_refused(request: Request) -> HTMLResponse:
    """A public page's refused input (an overlong code): a page with a way back."""
    lang = _public_lang(request.query_params.get("lang"))
    return _public(
        request, "public_message.html", lang, 422, message=PUBLIC_TEXT[lang]["bad_input"]
    )


# ---------------------------------------------------------------- the managers' answers


def _month(value: str) -> date | None:
    try:
        first = date.fromisoformat(value + "-01")
    except ValueError:
        return None
    return first if len(value) == 7 else None


@router.post("/dashboard/answers")
def add_answer(
    request: Request,
    session: SessionDep,
    state: StateDep,
    centre: Annotated[str, Form(max_length=32)],
    month: Annotated[str, Form(max_length=7)],
    text: Annotated[str, Form(min_length=1, max_length=MAX_ANSWER)],
    factor: Annotated[str, Form(max_length=16)] = "",
    written_in: Annotated[str, Form(max_length=2)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """A manager of the centre (or an admin) publishes what was done about a month."""
    lang = _lang(request, None)
    t = TEXT[lang]
    user = _current_user(request, session, state)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if not _csrf_ok(request, csrf):
        return _page(request, "message.html", lang, 403, user=user, message="CSRF")
    row = session.scalars(select(Centre).where(Centre.code == centre)).first()
    if row is None or not _may_manage(user, centre):
        return _page(request, "message.html", lang, 403, user=user, message=t["forbidden"])
    back = f"/dashboard?centre={row.code}#answers"
    today = _today(state)
    first = _month(month)
    earliest = answers_mod.months_back(today, ANSWER_MONTHS)[-1][0]
    if (
        first is None
        or not earliest <= first <= today
        or (factor and factor not in answers_mod.FACTORS)
        or (written_in and written_in not in PUBLIC_LANGS)
        or not text.strip()
    ):
        return _page(request, "message.html", lang, 422, user=user, message=t["bad_input"],
                     back=back)  # fmt: skip
    now = state.clock()
    day_ago = now - timedelta(days=1)
    published = session.scalar(
        select(func.count())
        .select_from(Answer)
        .where(Answer.centre_id == row.id, Answer.created_at >= day_ago)
    )
    if (published or 0) >= ANSWERS_PER_DAY:
        return _page(request, "message.html", lang, 429, user=user,
                     message=t["too_many_answers"], back=back)  # fmt: skip
    _start, end = answers_mod.month_of(first)
    session.add(
        Answer(
            centre_id=row.id,
            period_start=first,
            period_end=end,
            factor=factor or None,
            text=text.strip(),
            lang=written_in or lang,
            author=user.username,
            created_at=now,
        )
    )
    session.add(
        AuditLog(
            at=now,
            actor=f"user:{user.username}",
            action="answer.add",
            detail={"centre": row.code, "month": month, "factor": factor or None},
        )
    )
    session.commit()
    state.unanswered.forget()  # the ministry's list shows the answer at once
    return RedirectResponse(f"/dashboard?centre={row.code}&answered=1#answers", status_code=303)


# ---------------------------------------------------------------- open data

ANSWER_FIELDS = ["centre", "start", "end", "factor", "text", "lang", "published"]


@api.get(
    "/open/answers",
    response_model=None,
    responses={
        200: {
            "description": "The answers (JSON, or CSV with `format=csv`)",
            "content": {"application/json": {}, "text/csv": {}},
        }
    },
)
def open_answers(
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """Public, no token: every centre's published answers ("you said, we did"): the
    centre, the month answered, the factor (empty: the score itself), what was done, its
    language and when it was published. No author."""
    codes = {c.id: c.code for c in names(session).centres}
    rows = [
        {
            "centre": codes.get(a.centre_id, ""),
            "start": a.period_start.isoformat(),
            "end": a.period_end.isoformat(),
            "factor": a.factor or "",
            "text": a.text,
            "lang": a.lang,
            "published": a.created_at.isoformat(),
        }
        for a in session.scalars(select(Answer).order_by(Answer.period_start, Answer.id))
    ]
    headers = {"Cache-Control": "public, max-age=60"}
    if format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, ANSWER_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return Response(buf.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers=headers)  # fmt: skip
    return Response(orjson.dumps({"answers": rows}), media_type="application/json",
                    headers=headers)  # fmt: skip

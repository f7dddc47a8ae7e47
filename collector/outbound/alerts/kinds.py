"""The kinds of alert, their default parameters, severities and texts (hy, en, ru)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger("collector.outbound.alerts")  # one logger for the package

SEVERITIES = ("info", "warning", "critical")
OPEN, ACKED, CLOSED = "open", "acknowledged", "closed"
ACTIVE = (OPEN, ACKED)
DEFAULTS: dict[str, dict[str, Any]] = {
    "unit_silent": {"minutes": 20, "severity": "critical", "never_heard": True},
    "unit_backlog": {"queue_depth": 50, "oldest_unacked_s": 900, "severity": "warning"},
    "unit_clock": {"severity": "warning"},
    "dissatisfied": {"days": 7, "threshold": 0.3, "min_n": 30, "severity": "warning"},
    "drop": {
        "recent_days": 7,
        "history_days": 28,
        "min_drop": 0.15,
        "min_n": 30,
        "severity": "warning",
    },
    "bursts": {"excluded": 10, "severity": "info"},
    "after_login": {"seconds": 20, "count": 5, "severity": "info"},
}
#: A health report older than this says nothing about now.
HEALTH_FRESH = timedelta(hours=1)
TZ = ZoneInfo("Asia/Yerevan")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "unit_silent": "Unit {device} at {centre} (desk {desk}) has been silent for {minutes} "
        "minutes of opening time; last heard {last_seen}.",
        "unit_never_heard": "Unit {device} at {centre} (desk {desk}) has never been heard: "
        "silent for {minutes} minutes of opening time since it was placed there "
        "({last_seen}). Is it plugged in and provisioned?",
        "unit_backlog": "Unit {device} at {centre} (desk {desk}) holds {queue_depth} unsent "
        "ratings, the oldest {oldest_min} minutes old.",
        "unit_clock": "Unit {device} at {centre} (desk {desk}) reports that its clock is not "
        "synchronised.",
        "dissatisfied": "{where}: {share} of {n} ratings in the last {days} days are "
        "dissatisfied (95 % interval {low}-{high}; threshold {threshold}).",
        "drop": "{where}: satisfaction fell to {recent} over the last {recent_days} days "
        "from {history} before (95 % intervals do not overlap).",
        "bursts": "{where}: {excluded} presses were left out as bursts today: worth a look.",
        "after_login": "Unit {device} at {centre} (desk {desk}): {count} ratings today came "
        "within {seconds} s of a staff login, with no armed window: worth a look.",
        "opened": "Opened",
        "reminder": "Still open",
        "closed": "Closed: the condition cleared",
        "subject": "[Gnahat] {state}: {text}",
        "ack": "Acknowledge it on the dashboard, with a comment.",
        "info": "information",
        "warning": "warning",
        "critical": "critical",
        "opened_at": "opened {time} (Yerevan time)",
    },
    "hy": {
        "unit_silent": "{centre} կենտրոնի {desk} սեղանի {device} սարքը լռում է աշխատանքային "
        "ժամերի {minutes} րոպե․ վերջին կապը՝ {last_seen}։",
        "unit_never_heard": "{centre} կենտրոնի {desk} սեղանի {device} սարքից կապ երբեք չի "
        "եղել․ այն լռում է աշխատանքային ժամերի {minutes} րոպե՝ տեղադրվելուց ի վեր "
        "({last_seen})։ Արդյո՞ք այն միացված և կարգավորված է։",
        "unit_backlog": "{centre} կենտրոնի {desk} սեղանի {device} սարքում կա {queue_depth} "
        "չուղարկված գնահատական, ամենահինը՝ {oldest_min} րոպե։",
        "unit_clock": "{centre} կենտրոնի {desk} սեղանի {device} սարքի ժամացույցը ճշգրտված չէ։",
        "dissatisfied": "{where}․ վերջին {days} օրվա {n} գնահատականից {share}-ը "
        "դժգոհ են (95 % միջակայք {low}-{high}, շեմ {threshold})։",
        "drop": "{where}․ գոհունակությունը վերջին {recent_days} օրում իջել է {recent}՝ "
        "նախկին {history}-ից (95 % միջակայքերը չեն հատվում)։",
        "bursts": "{where}․ այսօր {excluded} սեղմում հաշվի չի առնվել որպես շարք․ արժե ստուգել։",
        "opened": "Բացված է",
        "reminder": "Դեռ բաց է",
        "closed": "Փակված է․ պայմանն այլևս չկա",
        "subject": "[Գնահատ] {state}․ {text}",
        "ack": "Հաստատեք այն վահանակում՝ մեկնաբանությամբ։",
        "info": "տեղեկություն",
        "warning": "զգուշացում",
        "critical": "կրիտիկական",
        "opened_at": "բացվել է {time}-ին (Երևանի ժամանակով)",
        "after_login": "{centre} կենտրոնի {desk} սեղանի {device} սարք․ այսօր {count} "
        "գնահատական եկել է աշխատակցի մուտքից {seconds} վրկ-ի ընթացքում՝ առանց բացված "
        "պատուհանի․ արժե ստուգել։",
    },
    "ru": {
        "unit_silent": "Устройство {device} в центре {centre} (стойка {desk}) молчит "
        "{minutes} минут рабочего времени; последняя связь: {last_seen}.",
        "unit_never_heard": "Устройство {device} в центре {centre} (стойка {desk}) ни разу "
        "не выходило на связь: молчит {minutes} минут рабочего времени с момента установки "
        "({last_seen}). Оно включено и настроено?",
        "unit_backlog": "Устройство {device} в центре {centre} (стойка {desk}) хранит "
        "{queue_depth} неотправленных оценок, самой старой {oldest_min} минут.",
        "unit_clock": "Часы устройства {device} в центре {centre} (стойка {desk}) не "
        "синхронизированы.",
        "dissatisfied": "{where}: {share} из {n} оценок за последние {days} дней — "
        "недовольные (95 % интервал {low}-{high}; порог {threshold}).",
        "drop": "{where}: удовлетворённость за последние {recent_days} дней упала до "
        "{recent} с {history} (95 % интервалы не пересекаются).",
        "bursts": "{where}: сегодня {excluded} нажатий не учтены как серии: стоит проверить.",
        "after_login": "Устройство {device} в центре {centre} (стойка {desk}): {count} "
        "оценок сегодня пришли в течение {seconds} с после входа сотрудника, без открытого "
        "окна: стоит проверить.",
        "opened": "Открыто",
        "reminder": "Всё ещё открыто",
        "closed": "Закрыто: условие больше не выполняется",
        "subject": "[Гнаат] {state}: {text}",
        "ack": "Подтвердите его на панели, с комментарием.",
        "info": "информация",
        "warning": "предупреждение",
        "critical": "критическое",
        "opened_at": "открыто {time} (по ереванскому времени)",
    },
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    centre_id: int | None
    severity: str
    detail: dict[str, Any]


def render(kind: str, detail: dict[str, Any], lang: str) -> str:
    texts = TEXTS.get(lang, TEXTS["en"])
    values = dict(detail)
    if kind == "unit_silent" and detail.get("never"):
        kind = "unit_never_heard"
    if lang == "hy" and "where_hy" in detail:
        values["where"] = detail["where_hy"]
    try:
        return texts[kind].format(**values)
    except (KeyError, IndexError):
        return f"{kind}: {detail}"


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"

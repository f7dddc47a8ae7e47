"""What visitors read and hear: score labels and the assessment-factor questions, in
Armenian, English and Russian. Shared by the kiosk (on the unit) and the collector's
phone page, so both ask the same questions in the same words."""

from __future__ import annotations

from typing import Final

LANGS: Final = ("hy", "en", "ru")

SCORE_LABELS: Final[dict[str, dict[int, list[str]]]] = {
    "hy": {
        3: ["Վատ", "Միջին", "Լավ"],
        4: ["Շատ վատ", "Վատ", "Լավ", "Շատ լավ"],
        5: ["Շատ վատ", "Վատ", "Միջին", "Լավ", "Գերազանց"],
    },
    "en": {
        3: ["Bad", "Fair", "Good"],
        4: ["Very bad", "Bad", "Good", "Very good"],
        5: ["Very bad", "Bad", "Fair", "Good", "Excellent"],
    },
    "ru": {
        3: ["Плохо", "Средне", "Хорошо"],
        4: ["Очень плохо", "Плохо", "Хорошо", "Очень хорошо"],
        5: ["Очень плохо", "Плохо", "Средне", "Хорошо", "Отлично"],
    },
}

#: Each factor's question, in the order they are asked.
FACTOR_QUESTIONS: Final[dict[str, dict[str, str]]] = {
    "hy": {
        "procedure": "Ինչպե՞ս էին ընթացակարգը և սպասման ժամանակը",
        "solved": "Ձեր հարցը լուծվե՞ց",
        "conduct": "Ինչպե՞ս էր աշխատակցի վարվելակերպը",
        "competence": "Ինչպե՞ս էր աշխատակցի մասնագիտական կարողությունը",
    },
    "en": {
        "procedure": "How were the procedure and the waiting time?",
        "solved": "Was your issue solved?",
        "conduct": "How was the employee's conduct?",
        "competence": "How was the employee's professional competence?",
    },
    "ru": {
        "procedure": "Как вы оцениваете порядок обслуживания и время ожидания?",
        "solved": "Решён ли ваш вопрос?",
        "conduct": "Как вы оцениваете отношение сотрудника?",
        "competence": "Как вы оцениваете профессионализм сотрудника?",
    },
}

#: ``solved`` answers, in protocol order (no, partly, yes).
SOLVED_LABELS: Final[dict[str, list[str]]] = {
    "hy": ["Ոչ", "Մասամբ", "Այո"],
    "en": ["No", "Partly", "Yes"],
    "ru": ["Нет", "Частично", "Да"],
}

FOLLOW_UP: Final[dict[str, dict[str, str]]] = {
    "hy": {
        "intro": "Եվս մի քանի հարց։ Կարող եք բաց թողնել։",
        "skip": "Բաց թողնել",
        "send": "Ուղարկել",
        "service": "Ո՞ր ծառայության համար էիք եկել",
        "service_none": "Չեմ ուզում նշել",
        "thanks": "Շնորհակալություն",
    },
    "en": {
        "intro": "A few more questions. You may skip them.",
        "skip": "Skip",
        "send": "Send",
        "service": "Which service did you come for?",
        "service_none": "I would rather not say",
        "thanks": "Thank you",
    },
    "ru": {
        "intro": "Ещё несколько вопросов. Их можно пропустить.",
        "skip": "Пропустить",
        "send": "Отправить",
        "service": "За какой услугой вы приходили?",
        "service_none": "Не хочу указывать",
        "thanks": "Спасибо",
    },
}

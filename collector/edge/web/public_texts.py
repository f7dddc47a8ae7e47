"""The public pages' words (what each centre's visitors said, and what was done) in
Armenian, English and Russian, and the words the dashboard uses for its answers."""

from __future__ import annotations

from datetime import date

PUBLIC_LANGS = ("hy", "en", "ru")
LANG_NAMES = {"hy": "Հայերեն", "en": "English", "ru": "Русский"}

MONTHS = {
    "hy": ["Հունվար", "Փետրվար", "Մարտ", "Ապրիլ", "Մայիս", "Հունիս", "Հուլիս", "Օգոստոս",
           "Սեպտեմբեր", "Հոկտեմբեր", "Նոյեմբեր", "Դեկտեմբեր"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "ru": ["Январь", "Февраль", "Март", "Апрель", "Май", "Июнь", "Июль", "Август",
           "Сентябрь", "Октябрь", "Ноябрь", "Декабрь"],
}  # fmt: skip

#: The assessment factors in a few words (a heading or a table cell, not a question).
FACTOR_NAMES = {
    "hy": {
        "procedure": "Ընթացակարգ և սպասում",
        "solved": "Հարցը լուծվեց",
        "conduct": "Աշխատակցի վարվելակերպ",
        "competence": "Մասնագիտական կարողություն",
    },
    "en": {
        "procedure": "Procedure and waiting",
        "solved": "Issue solved",
        "conduct": "Staff conduct",
        "competence": "Staff competence",
    },
    "ru": {
        "procedure": "Порядок и ожидание",
        "solved": "Вопрос решён",
        "conduct": "Отношение сотрудников",
        "competence": "Профессионализм",
    },
}

PUBLIC_TEXT: dict[str, dict[str, str]] = {
    "hy": {
        "app": "Գնահատ",
        "skip": "Անցնել բովանդակությանը",
        "index_title": "Սոցիալական ծառայությունների կենտրոններ․ ինչ են ասում այցելուները",
        "index_intro": "Ընտրեք կենտրոնը՝ տեսնելու այցելուների գնահատականները և այն, "
        "ինչ կենտրոնն արել է դրանց պատասխանում։",
        "title_rest": "․ ինչ են ասում այցելուները",
        "intro": "Այցելուները գնահատում են սպասարկումը գրասեղանի մոտ և հեռախոսով։ Յուրաքանչյուր "
        "ամսվա համար՝ գոհ այցելուների բաժինը (երկու բարձրագույն գնահատականները) և այն, ինչ "
        "կենտրոնն արել է, երբ այցելուները գոհ չէին։ {n}-ից պակաս գնահատականից ստացված թվերը "
        "ցույց չեն տրվում, որպեսզի ոչ մի այցելու հնարավոր չլինի տարբերել։",
        "address": "Հասցե",
        "satisfied": "Գոհ այցելուներ",
        "what": "Ինչ",
        "share": "Բաժին",
        "ratings": "Գնահատականներ",
        "interval": "95 % միջակայք",
        "too_few": "Ցույց չի տրվում ({n}-ից պակաս)",
        "low": "ցածր",
        "you_said": "Դուք ասացիք, մենք արեցինք",
        "about_total": "Ընդհանուր գնահատականի մասին",
        "about": "Թեմա՝ {factor}",
        "no_answer": "Դեռ պատասխան չկա։",
        "nothing_low": "Ցածր գնահատական չկա։",
        "written": "Գրված է {day}",
        "no_ratings": "Այս ամսին գնահատականներ չկան։",
        "all_centres": "Բոլոր կենտրոնները",
        "open_data": "Բաց տվյալներ",
        "not_found": "Այս ծածկագրով կենտրոն չկա։",
        "bad_input": "Հարցումը չհասկացանք։",
        "language": "Լեզու",
    },
    "en": {
        "app": "Gnahat",
        "skip": "Skip to content",
        "index_title": "Social service centres: what visitors say",
        "index_intro": "Choose a centre to see how visitors rated it and what the centre "
        "did in answer.",
        "title_rest": ": what visitors say",
        "intro": "Visitors rate the service at the desk and by phone. For each month: the "
        "share of satisfied visitors (the top two ratings) and what the centre did where "
        "visitors were not satisfied. Figures from fewer than {n} ratings are not shown, so "
        "that no visitor can be told apart.",
        "address": "Address",
        "satisfied": "Satisfied visitors",
        "what": "What",
        "share": "Share",
        "ratings": "Ratings",
        "interval": "95 % interval",
        "too_few": "Not shown (fewer than {n})",
        "low": "low",
        "you_said": "You said, we did",
        "about_total": "About the score",
        "about": "About: {factor}",
        "no_answer": "No answer yet.",
        "nothing_low": "No low figure.",
        "written": "Written {day}",
        "no_ratings": "No ratings this month.",
        "all_centres": "All centres",
        "open_data": "Open data",
        "not_found": "No centre has this code.",
        "bad_input": "We did not understand the request.",
        "language": "Language",
    },
    "ru": {
        "app": "Гнаат",
        "skip": "Перейти к содержанию",
        "index_title": "Центры социальных услуг: что говорят посетители",
        "index_intro": "Выберите центр, чтобы увидеть оценки посетителей и что центр "
        "сделал в ответ.",
        "title_rest": ": что говорят посетители",
        "intro": "Посетители оценивают обслуживание у стойки и по телефону. За каждый месяц: "
        "доля довольных посетителей (две высшие оценки) и что центр сделал, когда посетители "
        "были недовольны. Цифры по менее чем {n} оценкам не показываются, чтобы ни одного "
        "посетителя нельзя было узнать.",
        "address": "Адрес",
        "satisfied": "Довольные посетители",
        "what": "Что",
        "share": "Доля",
        "ratings": "Оценки",
        "interval": "95 % интервал",
        "too_few": "Не показано (меньше {n})",
        "low": "низкая",
        "you_said": "Вы сказали — мы сделали",
        "about_total": "Об общей оценке",
        "about": "Тема: {factor}",
        "no_answer": "Ответа пока нет.",
        "nothing_low": "Низких оценок нет.",
        "written": "Написано {day}",
        "no_ratings": "В этом месяце оценок нет.",
        "all_centres": "Все центры",
        "open_data": "Открытые данные",
        "not_found": "Центра с таким кодом нет.",
        "bad_input": "Мы не поняли запрос.",
        "language": "Язык",
    },
}


def month_name(lang: str, start: date) -> str:
    """ "November 2026" in the page's language."""
    return f"{MONTHS[lang][start.month - 1]} {start.year}"

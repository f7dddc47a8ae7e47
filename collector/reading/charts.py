"""Server-rendered SVG pictures for the dashboard: no script, no CDN, nothing to fetch.

Each picture is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` in the page's
language, and the page puts the same figures in a table beside it, so a screen reader
(or a printout) loses nothing. Values are written on the marks as well as shown by
length or shade, never by colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape
from sqlalchemy import Integer, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from collector.models import HourlyCount

W, H = 640, 220
#: The narrow drawing, for a phone: shown instead of the wide one below 40rem (the CSS).
NARROW = 300
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 40
#: Text in user units. A picture is never drawn larger than its own width and the narrow
#: one is used below 40rem, so this is never shown under 12 px.
FONT = 13
ACCENT = "#0b4f8a"
BAND = "#9cc3e6"
WEEKDAYS = {
    "hy": ("Երկ", "Երք", "Չրք", "Հնգ", "Ուրբ", "Շբթ", "Կիր"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "ru": ("Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"),
}


def _svg(
    body: str,
    title: str,
    desc: str,
    ident: str,
    width: int = W,
    height: int = H,
) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{ident}-t {ident}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
        f"{body}</svg>"
    )


#: Letters far wider than the rest (widths in em, generous across DejaVu and Noto Sans).
_WIDE = set("mwMWШЩЖшщжЮюФфЫыМ%")


def _em(ch: str) -> float:
    if ch == " ":
        return 0.32
    if ch in _WIDE:
        return 1.02
    if "\u0530" <= ch <= "\u058f":  # Armenian
        return 0.8
    if ch.isdigit():
        return 0.64
    if ch in "=+<>":
        return 0.84
    if not ch.isalpha():
        return 0.42
    if ch.isupper():
        return 0.78
    return 0.64 if ch.isascii() else 0.68


def text_width(text: str, size: float = FONT) -> float:
    """The drawn width of ``text``, measured generously (each letter at the width it has
    in the wider of the fonts the pages fall back to, DejaVu Sans and Noto Sans, and 5 %
    over), so a label that fits here fits on the screen."""
    return 1.05 * size * sum(_em(ch) for ch in text)


def fit(text: str, room: float, size: float = FONT) -> str:
    """``text``, or as much of it as fits in ``room`` with an ellipsis."""
    if text_width(text, size) <= room:
        return text
    out = text
    while out and text_width(out + "…", size) > room:
        out = out[:-1]
    return out.rstrip() + "…"


def _label(x: float, y: float, text: str, room: float, anchor: str = "start") -> str:
    """A label that fits in ``room``; cut short, it keeps its whole text as a tooltip."""
    shown = fit(text, room)
    tip = f"<title>{escape(text)}</title>" if shown != text else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{FONT}">'
        f"{tip}{escape(shown)}</text>"
    )


def responsive(wide: Markup, narrow: Markup) -> Markup:
    """The same picture drawn twice, for a desk and for a phone; the page's CSS shows
    one (a picture scaled down would shrink its text below reading size)."""
    # str first: Markup.replace would escape the new attribute's quotes.
    return Markup(
        str(wide).replace('class="chart"', 'class="chart chart-wide"', 1)
        + str(narrow).replace('class="chart"', 'class="chart chart-narrow"', 1)
    )


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def trend(
    days: Sequence[dict[str, Any]], title: str, desc: str, ident: str = "trend", width: int = W
) -> Markup:
    """CSAT per day (or per any period: an item's ``label``, else its ``day``) as a line
    with its 95 % band, and the number of ratings as bars."""
    if not days:
        return Markup("")
    inner_w, inner_h = width - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / max(1, len(days))
    top_n = max(d["n"] for d in days) or 1

    def x(i: int) -> float:
        return PAD_L + step * (i + 0.5)

    def y(v: float) -> float:
        return PAD_T + inner_h * (1 - v)

    parts = []
    for v in (0, 0.5, 1):
        parts.append(
            f'<line x1="{PAD_L}" x2="{width - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#ccc" stroke-width="1"/><text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end" font-size="{FONT}">{_pct(v)}</text>'
        )
    # Ratings per day: short bars along the bottom (their height: n against the busiest).
    for i, d in enumerate(days):
        h = 28 * d["n"] / top_n
        parts.append(
            f'<rect x="{x(i) - step * 0.35:.1f}" y="{H - PAD_B - h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{h:.1f}" fill="#ddd"><title>{escape(_point_label(d))}: '
            f"n = {d['n']}</title></rect>"
        )
    upper = " ".join(f"{x(i):.1f},{y(d['csat_ci95'][1]):.1f}" for i, d in enumerate(days))
    lower = " ".join(
        f"{x(i):.1f},{y(d['csat_ci95'][0]):.1f}" for i, d in reversed(list(enumerate(days)))
    )
    parts.append(f'<polygon points="{upper} {lower}" fill="{BAND}" opacity="0.6"/>')
    line = " ".join(f"{x(i):.1f},{y(d['csat']):.1f}" for i, d in enumerate(days))
    parts.append(f'<polyline points="{line}" fill="none" stroke="{ACCENT}" stroke-width="2"/>')
    for i, d in enumerate(days):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(d["csat"]):.1f}" r="3" fill="{ACCENT}">'
            f"<title>{escape(_point_label(d))}: {_pct(d['csat'])} "
            f"({_pct(d['csat_ci95'][0])}–{_pct(d['csat_ci95'][1])}), n = {d['n']}</title></circle>"
        )
    first, last = _point_label(days[0]), _point_label(days[-1])
    parts.append(f'<text x="{PAD_L}" y="{H - 8}" font-size="{FONT}">{first}</text>')
    if len(days) > 1:
        parts.append(
            f'<text x="{width - PAD_R}" y="{H - 8}" font-size="{FONT}" text-anchor="end">'
            f"{last}</text>"
        )
    return _svg("".join(parts), title, desc, ident, width=width)


def _point_label(point: dict[str, Any]) -> str:
    label = point.get("label")
    return str(label) if label is not None else str(point["day"].isoformat())


def bars(
    items: Sequence[tuple[str, float, tuple[float, float] | None, str]],
    title: str,
    desc: str,
    ident: str,
    width: int = W,
) -> Markup:
    """Horizontal bars (0..100 %) with a label, the value written, and an optional 95 %
    interval as a whisker: ``(label, share, (low, high) or None, note)``.

    Every text is measured: the value column is as wide as its longest value, labels get
    what is left (at most 40 %) and are cut short with an ellipsis and a tooltip only
    when they must be. Narrower than 400, each label stands on its own line above its bar.
    """
    if not items:
        return Markup("")
    values = [f"{_pct(share)}{note}" for _label_text, share, _ci, note in items]
    value_w = max(text_width(v) for v in values) + 10
    stacked = width < 400
    if stacked:
        row, label_w = 48, 8.0
    else:
        row = 30
        label_w = min(max(text_width(label) for label, *_ in items) + 16, width * 0.4)
    inner = width - label_w - value_w - 8
    height = PAD_T + row * len(items) + 12
    parts = []
    for i, ((label, share, ci, _note), value) in enumerate(zip(items, values, strict=True)):
        top = PAD_T + i * row + (18 if stacked else 0)
        if stacked:
            parts.append(_label(8, top - 4, label, width - 16))
        else:
            parts.append(_label(label_w - 8, top + 18, label, label_w - 16, anchor="end"))
        parts.append(
            f'<rect x="{label_w}" y="{top + 6}" width="{inner * share:.1f}" height="16" '
            f'fill="{ACCENT}"/>'
        )
        if ci is not None:
            lo, hi = label_w + inner * ci[0], label_w + inner * ci[1]
            parts.append(
                f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{top + 14}" y2="{top + 14}" '
                f'stroke="#111" stroke-width="1.5"/>'
                f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{top + 9}" y2="{top + 19}" stroke="#111"/>'
                f'<line x1="{hi:.1f}" x2="{hi:.1f}" y1="{top + 9}" y2="{top + 19}" stroke="#111"/>'
            )
        parts.append(
            f'<text x="{label_w + inner + 8:.1f}" y="{top + 18}" font-size="{FONT}">'
            f"{escape(value)}</text>"
        )
    return _svg("".join(parts), title, desc, ident, width=width, height=height)


def hour_counts(
    session: Session, centre_id: int, first: date, last: date, tz: ZoneInfo
) -> list[list[int]]:
    """Counted ratings of a centre by weekday (rows, Monday first) and local hour.

    Read from the hourly counts kept beside the daily cells (by local day and UTC hour:
    a few thousand rows for a year, never one per press), shifted by the zone's offset
    on each day."""
    grid = [[0] * 24 for _ in range(7)]
    h = HourlyCount
    shifts = {_shift(tz, first + timedelta(days=i)) for i in range((last - first).days + 1)}
    where = (h.centre_id == centre_id, h.day >= first, h.day <= last, h.n != 0)
    if len(shifts) == 1:  # one offset all period (no DST change): grouped by weekday in SQL
        shift = shifts.pop()
        dow = sql_cast(func.extract("dow", h.day), Integer)  # 0 = Sunday on both databases
        for weekday, utc_hour, n in session.execute(
            select(dow, h.utc_hour, func.sum(h.n)).where(*where).group_by(dow, h.utc_hour)
        ):
            grid[(int(weekday) - 1) % 7][(int(utc_hour) + shift) % 24] += int(n)
        return grid
    per_day: dict[date, int] = {}
    for day, utc_hour, n in session.execute(select(h.day, h.utc_hour, h.n).where(*where)):
        ahead = per_day.get(day)
        if ahead is None:
            ahead = per_day[day] = _shift(tz, day)
        grid[day.weekday()][(int(utc_hour) + ahead) % 24] += int(n)
    return grid


def _shift(tz: ZoneInfo, day: date) -> int:
    """Whole hours the zone is ahead of UTC at noon of ``day``."""
    offset = tz.utcoffset(datetime.combine(day, time(12)))
    return int(offset.total_seconds() // 3600) if offset is not None else 0


def heatmap(
    grid: list[list[int]],
    lang: str,
    title: str,
    desc: str,
    ident: str = "heatmap",
    width: int = W,
) -> Markup:
    """Ratings by hour of day (columns) and weekday (rows); the count is written in each
    cell where it fits, the shade repeats it (and the table beside has every figure)."""
    hours = [h for h in range(24) if any(grid[d][h] for d in range(7))] or list(range(9, 18))
    first_h, last_h = min(hours), max(hours)
    cols = list(range(first_h, last_h + 1))
    left = 50
    cell_w = min(40, (width - left - 4) / max(1, len(cols)))
    cell_h = 24
    peak = max(max(r) for r in grid) or 1
    every = 1 if cell_w >= text_width("00") + 4 else 2 if 2 * cell_w >= text_width("00") + 4 else 3
    parts = []
    for j, h in enumerate(cols):
        if j % every == 0:
            parts.append(
                f'<text x="{left + j * cell_w + cell_w / 2:.1f}" y="15" text-anchor="middle" '
                f'font-size="{FONT}">{h:02d}</text>'
            )
    for d in range(7):
        y = 22 + d * cell_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 16}" text-anchor="end" font-size="{FONT}">'
            f"{WEEKDAYS[lang][d]}</text>"
        )
        for j, h in enumerate(cols):
            n = grid[d][h]
            shade = n / peak
            fill = f"rgba(11,79,138,{0.08 + 0.85 * shade:.2f})" if n else "#f4f4f4"
            ink = "#fff" if shade > 0.55 else "#111"
            x = left + j * cell_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 2:.1f}" height="{cell_h - 2}" '
                f'fill="{fill}"><title>{WEEKDAYS[lang][d]} {h:02d}: {n}</title></rect>'
            )
            if n and text_width(str(n)) + 4 <= cell_w - 2:
                parts.append(
                    f'<text x="{x + cell_w / 2 - 1:.1f}" y="{y + 16}" text-anchor="middle" '
                    f'font-size="{FONT}" fill="{ink}">{n}</text>'
                )
    height = 22 + 7 * cell_h + 6
    return _svg("".join(parts), title, desc, ident, width=width, height=height)

"""The kiosk: a touch-screen page served by the unit itself, rating like its buttons.

The page runs full screen in the unit's own browser and talks only to this small
server on the loopback address (standard library only, nothing more on the Pi). A
touch goes through :meth:`device.unit.Unit.rate`, so it gets exactly what a button
press gets: the cooldown or the armed window, the durable write before any
confirmation, the light, tone and spoken "thank you" from the unit. The page then
shows the outcome in large type and announces it to screen readers.

Only our page may rate: requests must name a loopback ``Host`` (no DNS rebinding)
and carry the ``X-Gnahat-Kiosk`` header, which a foreign page cannot send without a
CORS preflight that this server never grants.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from device import protocol as p
from device.config import KioskConfig
from device.faces import face
from device.unit import Outcome, Unit
from device.visitcode import DeskCode
from device.wording import FACTOR_QUESTIONS, FOLLOW_UP, LANGS, SCORE_LABELS, SOLVED_LABELS

log = logging.getLogger(__name__)
HEADER = "X-Gnahat-Kiosk"

LABELS = SCORE_LABELS
TEXT: dict[str, dict[str, str]] = {
    "hy": {
        "title": "Գնահատեք մեր ծառայությունը",
        "ask": "Խնդրում ենք գնահատել մեր ծառայությունը",
        "wait_staff": "Գնահատումը կսկսվի սպասարկումից հետո",
        "counted": "Շնորհակալություն",
        "cooldown": "Չհաշվվեց։ Մի պահ սպասեք։",
        "not_armed": "Չհաշվվեց։ Գնահատումը կսկսվի սպասարկումից հետո։",
        "refused": "Սարքը հիմա չի ընդունում գնահատականներ։ Խնդրում ենք տեղեկացնել աշխատակցին։",
        "error": "Կապ չկա սարքի հետ։ Խնդրում ենք տեղեկացնել աշխատակցին։",
        "no_rating": "Պատասխանները չհաշվվեցին։",
        "sent": "Շնորհակալություն պատասխանների համար",
        "phone": "Գնահատեք ձեր հեռախոսով․ սկանավորեք կամ մուտքագրեք կոդը",
    },
    "en": {
        "title": "Rate our service",
        "ask": "Please rate our service",
        "wait_staff": "Rating opens after you have been served",
        "counted": "Thank you",
        "cooldown": "Not counted. Please wait a moment.",
        "not_armed": "Not counted. Rating opens after you have been served.",
        "refused": "This unit cannot take ratings now. Please tell a member of staff.",
        "error": "The unit does not answer. Please tell a member of staff.",
        "no_rating": "The answers were not counted.",
        "sent": "Thank you for your answers",
        "phone": "Rate on your own phone: scan, or type the code",
    },
    "ru": {
        "title": "Оцените наше обслуживание",
        "ask": "Пожалуйста, оцените наше обслуживание",
        "wait_staff": "Оценка откроется после обслуживания",
        "counted": "Спасибо",
        "cooldown": "Не засчитано. Подождите немного.",
        "not_armed": "Не засчитано. Оценка откроется после обслуживания.",
        "refused": "Устройство сейчас не принимает оценки. Пожалуйста, сообщите сотруднику.",
        "error": "Устройство не отвечает. Пожалуйста, сообщите сотруднику.",
        "no_rating": "Ответы не засчитаны.",
        "sent": "Спасибо за ответы",
        "phone": "Оцените на своём телефоне: отсканируйте или введите код",
    },
}
LANG_NAMES = {"hy": "Հայերեն", "en": "English", "ru": "Русский"}

PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/kiosk.css?scale={scale}">
<script type="application/json" id="kiosk-text">{text_json}</script>
<script src="/kiosk.js" defer></script>
</head>
<body data-header="{header}" data-idle-ms="{idle_ms}">
<nav id="lang" aria-label="Language">{lang_links}</nav>
<main>
<section id="rate">
<h1>{title}</h1>
<p id="prompt"></p>
<div id="buttons" role="group" aria-label="{title}">
{buttons}
</div>
</section>
<section id="more" hidden aria-labelledby="more-title">
<h1 id="more-title">{intro}</h1>
<div class="questions">
{questions}
</div>
<div class="actions">
<button type="button" id="send" class="action">{send}</button>
<button type="button" id="skip" class="action">{skip}</button>
</div>
</section>
<p id="status" role="status" aria-live="assertive"></p>
<aside id="phone" hidden aria-labelledby="phone-title">
<img id="phone-qr" alt="" width="132" height="132">
<p><span id="phone-title">{phone}</span><br><span id="phone-code" class="code"></span></p>
</aside>
</main>
</body>
</html>
"""

#: The page's style, a file of its own (no inline style: the page's CSP forbids it).
CSS = """[hidden] {{ display: none !important; }}
html, body {{ margin: 0; height: 100%; background: #000; color: #fff;
  font-family: "Noto Sans Armenian", "Noto Sans", system-ui, sans-serif; }}
body {{ display: flex; flex-direction: column; }}
#lang {{ display: flex; flex-wrap: wrap; justify-content: flex-end; gap: .3rem 1.2rem;
  padding: .4rem 1rem 0; }}
#lang a {{ color: #fff; font-size: 1.2rem; }}
main {{ flex: 1; min-height: 0; display: flex; flex-direction: column; }}
section {{ display: flex; flex-direction: column; min-height: 0; }}
#rate {{ flex: 1; }}
h1 {{ font-size: clamp(1.5rem, 4.4vw, 3rem); text-align: center; margin: .2rem 1rem .3rem; }}
#prompt {{ text-align: center; font-size: clamp(1.1rem, 2.6vw, 2rem); margin: 0 1rem .5rem; }}
#buttons {{ flex: 1; min-height: 0; display: grid;
  grid-template-columns: repeat({scale}, minmax(0, 1fr)); gap: 1rem; padding: .4rem 1.5rem; }}
button {{ font: inherit; font-size: clamp(1.3rem, 3.3vw, 2.6rem); color: #000;
  border: 6px solid #fff; border-radius: 1.5rem; min-height: 6rem; cursor: pointer;
  display: flex; flex-direction: column; align-items: center; justify-content: center;
  gap: .3rem; padding: .3rem; min-width: 0; }}
button .n {{ font-size: 2em; font-weight: 700; line-height: 1; }}
button .mark {{ display: flex; align-items: center; gap: .4em; }}
button .face {{ width: 1.9em; height: 1.9em; flex: none; }}
button span {{ overflow-wrap: anywhere; }}
button:focus-visible {{ outline: 8px solid #ffd400; outline-offset: 4px; }}
button:disabled {{ opacity: .45; }}
{colours}
#status {{ min-height: 2.6rem; text-align: center; font-size: clamp(1.4rem, 4vw, 3rem);
  font-weight: 700; margin: .2rem 1rem .4rem; }}
#more {{ padding: 0 1.5rem; }}
#more h1 {{ font-size: clamp(1.2rem, 3.2vw, 2.2rem); margin: .2rem 0 .4rem; }}
.question {{ margin: 0 0 .5rem; }}
.question h2 {{ font-size: clamp(1.05rem, 2.4vw, 1.7rem); margin: 0 0 .3rem; }}
.choices {{ display: flex; gap: .6rem; }}
.choices button {{ flex: 1 1 0; min-height: 3.2rem; background: #fff; border-width: 4px;
  border-radius: 1rem; padding: .2rem .1rem; font-size: clamp(1rem, 2.2vw, 1.6rem);
  overflow-wrap: break-word; hyphens: auto; }}
.choices button[aria-pressed="true"] {{ background: #ffd400; border-color: #ffd400; }}
.actions {{ display: flex; gap: 1rem; margin: .3rem 0 .4rem; }}
.actions button {{ flex: 1 1 0; min-height: 3.4rem; background: #fff; border-width: 4px;
  overflow-wrap: anywhere; }}
#send {{ background: #81c784; }}
#phone {{ display: flex; align-items: center; gap: 1rem; margin: 0 1.5rem .6rem;
  font-size: clamp(1rem, 2.2vw, 1.4rem); }}
#phone img {{ background: #fff; flex: none; width: 7.5rem; height: 7.5rem; }}
#phone .code {{ font-size: 1.5em; font-weight: 700; letter-spacing: .12em; white-space: nowrap; }}
@media (min-width: 40rem) {{
  /* A unit's landscape screen: the phone code stands beside the rating, not below it. */
  main {{ display: grid; grid-template-columns: minmax(0, 1fr) auto;
    grid-template-rows: minmax(0, 1fr) auto; }}
  #rate, #more {{ grid-column: 1; grid-row: 1; }}
  #status {{ grid-column: 1; grid-row: 2; }}
  #phone {{ grid-column: 2; grid-row: 1 / span 2; flex-direction: column; justify-content: center;
    text-align: center; width: 10rem; margin: 0 1rem .6rem 0; }}
  /* The follow-up questions two by two, over the whole width: all on one screen. */
  .questions {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 0 1.5rem; }}
  #more:not([hidden]) ~ #phone {{ display: none; }}
}}
@media (min-height: 40rem) {{
  button {{ min-height: 9rem; }}
  .choices button {{ min-height: 4.5rem; }}
  .actions button {{ min-height: 5rem; }}
  .question {{ margin-bottom: 1rem; }}
  #phone img {{ width: 9rem; height: 9rem; }}
}}
@media (max-width: 40rem) {{
  #buttons {{ grid-template-columns: minmax(0, 1fr); padding: .75rem; gap: .75rem; }}
  button {{ min-height: 5rem; flex-direction: row; gap: 1rem; }}
  .choices {{ flex-wrap: wrap; }}
  .choices button {{ flex: 1 1 7rem; }}
}}
"""

#: The page's behaviour, a file of its own (no inline script: the page's CSP forbids it).
JS = """"use strict";
const TEXT = JSON.parse(document.getElementById("kiosk-text").textContent);
const HEADER = document.body.dataset.header;
const IDLE_MS = Number(document.body.dataset.idleMs);
const status = document.getElementById("status");
const prompt = document.getElementById("prompt");
const rateView = document.getElementById("rate");
const moreView = document.getElementById("more");
const buttons = Array.from(document.querySelectorAll("#buttons button"));
const choices = Array.from(document.querySelectorAll(".choices button"));
let clearTimer = null;
let idleTimer = null;
function show(key) {
  status.textContent = TEXT[key] || TEXT.error;
  clearTimeout(clearTimer);
  clearTimer = setTimeout(() => { status.textContent = ""; }, 6000);
}
async function call(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: {"Content-Type": "application/json", [HEADER]: "1"},
    body: JSON.stringify(body),
  });
  const answer = await r.json();
  return r.ok ? answer.outcome : "error";
}
function backToRating() {
  clearTimeout(idleTimer);
  choices.forEach(c => c.setAttribute("aria-pressed", "false"));
  moreView.hidden = true;
  rateView.hidden = false;
  buttons.forEach(b => b.disabled = false);
  buttons[0].focus();
}
function answers() {
  const out = {};
  choices.forEach(c => {
    if (c.getAttribute("aria-pressed") === "true") {
      const v = c.dataset.value;
      out[c.dataset.factor] = c.dataset.factor === "solved" ? v : Number(v);
    }
  });
  return out;
}
async function finish(send) {
  const given = answers();
  if (send && Object.keys(given).length) {
    try { show((await call("/factors", {answers: given})) === "counted" ? "sent" : "no_rating"); }
    catch (e) { show("error"); }
  }
  backToRating();
}
function touched() {  // every touch gives the visitor another IDLE_MS; then what is answered goes
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => finish(true), IDLE_MS);
}
function askMore() {
  rateView.hidden = true;
  moreView.hidden = false;
  document.getElementById("more-title").focus();
  touched();
}
async function rate(score) {
  buttons.forEach(b => b.disabled = true);
  let outcome = "error";
  try { outcome = await call("/press", {score: score}); } catch (e) {}
  show(outcome);
  if (outcome === "counted") { askMore(); return; }
  setTimeout(() => buttons.forEach(b => b.disabled = false), 1500);
}
buttons.forEach(b => b.addEventListener("click", () => rate(Number(b.dataset.score))));
choices.forEach(c => c.addEventListener("click", () => {
  const group = choices.filter(o => o.dataset.factor === c.dataset.factor);
  const on = c.getAttribute("aria-pressed") !== "true";
  group.forEach(o => o.setAttribute("aria-pressed", "false"));
  c.setAttribute("aria-pressed", on ? "true" : "false");
  touched();
}));
document.getElementById("send").addEventListener("click", () => finish(true));
document.getElementById("skip").addEventListener("click", () => finish(false));
document.addEventListener("keydown", e => {
  if (!rateView.hidden) {
    const n = Number(e.key);
    if (n >= 1 && n <= buttons.length && !buttons[0].disabled) rate(n);
  } else {
    touched();
    if (e.key === "Escape") finish(false);
  }
});
async function poll() {
  try {
    const s = await (await fetch("/state", {headers: {[HEADER]: "1"}})).json();
    prompt.textContent = (s.mode === "armed" && !s.armed) ? TEXT.wait_staff : TEXT.ask;
    const phone = document.getElementById("phone");
    phone.hidden = !s.phone_code;
    if (s.phone_code) {
      const code = document.getElementById("phone-code");
      if (code.textContent !== s.phone_code) {
        code.textContent = s.phone_code;
        document.getElementById("phone-qr").src = "/phone.svg?c=" + s.phone_code.replace(" ", "");
      }
    }
  } catch (e) {}
}
poll();
setInterval(poll, 1000);
"""

#: Headers on every answer of the kiosk server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

# Worst to best: not colour alone — each button also has its number and word.
COLOURS = {
    3: ["#ff8a80", "#ffe082", "#a5d6a7"],
    4: ["#ff8a80", "#ffcc80", "#c5e1a5", "#81c784"],
    5: ["#ff8a80", "#ffcc80", "#fff59d", "#c5e1a5", "#81c784"],
}


#: Seconds without a touch after which the follow-up questions end (what is answered is
#: sent): the whole follow-up takes about this long at most.
IDLE_S = 20


def _questions(scale: int, lang: str) -> str:
    out = []
    for factor in p.FACTORS:
        if factor == "solved":
            options = list(zip(p.SOLVED_ANSWERS, SOLVED_LABELS[lang], strict=True))
        else:
            options = [(str(i), label) for i, label in enumerate(LABELS[lang][scale], start=1)]
        buttons = "".join(
            f'<button type="button" data-factor="{factor}" data-value="{value}" '
            f'aria-pressed="false">{html.escape(label)}</button>'
            for value, label in options
        )
        out.append(
            f'<div class="question" role="group" aria-labelledby="q-{factor}">'
            f'<h2 id="q-{factor}">{html.escape(FACTOR_QUESTIONS[lang][factor])}</h2>'
            f'<div class="choices">{buttons}</div></div>'
        )
    return "\n".join(out)


def render_page(scale: int, lang: str) -> str:
    labels = LABELS[lang][scale]
    buttons = "\n".join(
        f'<button type="button" data-score="{i}" aria-label="{i} — {label}">'
        f'<span class="mark" aria-hidden="true"><span class="n">{i}</span>{face(i, scale)}</span>'
        f"<span>{label}</span></button>"
        for i, label in enumerate(labels, start=1)
    )
    links = "".join(
        f'<a href="/?lang={code}" lang="{code}" hreflang="{code}">{LANG_NAMES[code]}</a>'
        for code in LANGS
        if code != lang
    )
    # "</" cannot end the data block early: the JSON escapes "<" everywhere.
    text_json = json.dumps(TEXT[lang], ensure_ascii=False).replace("<", "\\u003c")
    follow = FOLLOW_UP[lang]
    return PAGE.format(
        lang=lang,
        title=TEXT[lang]["title"],
        scale=scale,
        buttons=buttons,
        lang_links=links,
        text_json=text_json,
        header=HEADER,
        idle_ms=IDLE_S * 1000,
        intro=html.escape(follow["intro"]),
        questions=_questions(scale, lang),
        phone=html.escape(TEXT[lang]["phone"]),
        send=html.escape(follow["send"]),
        skip=html.escape(follow["skip"]),
    )


def render_css(scale: int) -> str:
    colours = "\n".join(
        f"button[data-score='{i}'] {{ background: {c}; }}"
        for i, c in enumerate(COLOURS[scale], start=1)
    )
    return CSS.format(scale=scale, colours=colours) + (FIVE if scale == 5 else "")


#: Five buttons side by side on an 800 px screen: their words smaller and the gaps
#: narrower, so a word stays whole on its line (the number and face stay large).
FIVE = """@media (min-width: 40rem) {
  #buttons { gap: .6rem; padding: .4rem 1rem; }
  #buttons button > span:last-child { font-size: clamp(.85rem, 1.75vw, 2rem); }
  #buttons button { padding: .3rem .15rem; }
}
"""


class KioskServer:
    """The kiosk page and its two calls, on a loopback port, in a background thread."""

    def __init__(self, unit: Unit, config: KioskConfig) -> None:
        self.unit = unit
        self.config = config
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> KioskServer:
        handler = _handler(self.unit, self.config)
        self._httpd = ThreadingHTTPServer((self.config.host, self.config.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="gnahat-kiosk", daemon=True
        )
        self._thread.start()
        log.info("kiosk page on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None


def _handler(unit: Unit, config: KioskConfig) -> type[BaseHTTPRequestHandler]:
    desk = DeskCode(config.phone_url, config.visit_key) if config.visit_key else None

    def shown_code() -> str | None:
        """The desk code while the unit asks for a rating (armed mode: while armed)."""
        if desk is None or (unit.config.mode == "armed" and not unit.is_armed):
            return None
        return desk.code(unit.clock.now())

    class Handler(BaseHTTPRequestHandler):
        server_version = "gnahat-kiosk"
        sys_version = ""  # no Python version announced

        def send_response(self, code: int, message: str | None = None) -> None:
            # As the standard one, without announcing a server name and version.
            self.log_request(code)
            self.send_response_only(code, message)
            self.send_header("Date", self.date_time_string())

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the unit's log
            log.debug("kiosk: " + format, *args)

        def _host_ok(self) -> bool:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return host in ("127.0.0.1", "localhost", "::1")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            if not self._host_ok():
                self._json(HTTPStatus.FORBIDDEN, {"error": "loopback only"})
                return
            path, _, query = self.path.partition("?")
            if path == "/":
                lang = config.language
                for part in query.split("&"):
                    if part.startswith("lang=") and part[5:] in LANGS:
                        lang = part[5:]
                page = render_page(unit.config.scale, lang).encode("utf-8")
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif path == "/kiosk.css":
                css = render_css(unit.config.scale).encode("utf-8")
                self._send(HTTPStatus.OK, css, "text/css; charset=utf-8")
            elif path == "/kiosk.js":
                self._send(HTTPStatus.OK, JS.encode("utf-8"), "text/javascript; charset=utf-8")
            elif path == "/state":
                code = shown_code()
                self._json(
                    HTTPStatus.OK,
                    {
                        "mode": unit.config.mode,
                        "armed": unit.is_armed,
                        "scale": unit.config.scale,
                        "phone_code": f"{code[:3]} {code[3:]}" if code else None,
                    },
                )
            elif path == "/phone.svg" and desk is not None and shown_code():
                # The current code's QR only, whatever the query asks.
                svg = desk.qr_svg(unit.clock.now())
                self._send(HTTPStatus.OK, svg, "image/svg+xml")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            if not self._host_ok() or self.headers.get(HEADER) != "1":
                self._json(HTTPStatus.FORBIDDEN, {"error": "only the kiosk page may rate"})
                return
            if self.path == "/factors":
                self._factors()
                return
            if self.path != "/press":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 1024)) or b"{}")
                score = body["score"]
                if not isinstance(score, int) or isinstance(score, bool):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                self._json(HTTPStatus.BAD_REQUEST, {"error": 'send {"score": N}'})
                return
            if not 1 <= score <= unit.config.scale:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"score is 1..{unit.config.scale}"})
                return
            outcome: Outcome = unit.rate(score)
            if outcome is Outcome.COUNTED:
                unit.feedback.follow_up()  # the page asks the factors next; read them out
            self._json(HTTPStatus.OK, {"outcome": outcome.value})

        def _factors(self) -> None:
            """``{"answers": {...}, "service": "CODE"?}`` for the last counted rating,
            judged by the protocol's own rules before the unit keeps it."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 2048)) or b"{}")
                answers = body["answers"]
                service = body.get("service")
                if not isinstance(answers, dict) or not answers:
                    raise TypeError
                probe = {"scale": unit.config.scale, **answers}
                if service is not None:
                    probe["service"] = service
                checked = p.check_answers(probe, unit.config.scale)
                if set(answers) - set(p.FACTORS):
                    raise ValueError("unknown factor")
                if service is not None and (
                    not isinstance(service, str) or not p.SERVICE_RE.match(service)
                ):
                    raise ValueError("bad service")
            except (ValueError, KeyError, TypeError, p.ProtocolError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad answers: {exc}"})
                return
            outcome = unit.follow_up(checked, service)
            self._json(HTTPStatus.OK, {"outcome": outcome.value})

    return Handler

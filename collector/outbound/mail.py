"""Email out: one message built the same way for alert notices and digests, and one
SMTP send whose outcome the outbox understands (``sent``, ``retry`` on a server that
does not answer or a 4xx, ``parked`` on a 5xx refusal or no server configured)."""

from __future__ import annotations

import smtplib
import ssl
import unicodedata
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from collector.config import Settings
from collector.outbound import outbox


def one_line(text: str) -> str:
    """``text`` fit for a header: every run of whitespace or control characters (a line
    break in a registry name) one space."""
    return " ".join("".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text).split())


def message(settings: Settings, to: str, subject: str, ident: int, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = one_line(subject)[:200]
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=str(ident), domain="gnahat")
    return msg


def send(settings: Settings, msg: EmailMessage) -> tuple[str, str, int | None]:
    """Send ``msg`` through ``GNAHAT_SMTP_HOST``: (outcome, reason, SMTP code)."""
    st = settings
    if not st.smtp_host:
        return outbox.PARKED, "no SMTP server configured (GNAHAT_SMTP_HOST)", None
    try:
        with smtplib.SMTP(st.smtp_host, st.smtp_port, timeout=st.webhook_timeout_s) as smtp:
            if st.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if st.smtp_username:
                smtp.login(st.smtp_username, st.smtp_password or "")
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [c for c, _m in exc.recipients.values()]
        if all(c >= 500 for c in codes):
            return outbox.PARKED, f"SMTP refused the recipient: {exc.recipients}", codes[0]
        return "retry", f"SMTP: {exc.recipients}", codes[0] if codes else None
    except smtplib.SMTPResponseException as exc:
        kind = outbox.PARKED if exc.smtp_code >= 500 else "retry"
        return kind, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", exc.smtp_code
    except (OSError, smtplib.SMTPException) as exc:
        return "retry", f"SMTP: {type(exc).__name__}: {exc}", None
    return outbox.SENT, "", 250

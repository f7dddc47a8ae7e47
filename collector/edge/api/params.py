"""Parameters checked at the edge: every bound is in the OpenAPI schema, every refusal is
one shape (FastAPI's validation error: ``{"detail": [{"loc", "msg", "type"}]}``)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Form, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator

#: The days any period can name: nothing was rated before the first, and a calendar
#: that ends far beyond the last keeps every default period computable.
MIN_DAY = date(2000, 1, 1)
MAX_DAY = date(2100, 12, 31)
#: Longest period, in days.
MAX_DAYS = 366
#: Largest cursor (ids are signed 64-bit integers).
MAX_ID = 2**63 - 1
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_RULE = f"YYYY-MM-DD, {MIN_DAY.isoformat()}..{MAX_DAY.isoformat()}"


def _day(value: Any) -> Any:
    """Only ``YYYY-MM-DD`` within the bounds: no integers (``0`` is not 1970-01-01)."""
    if value is None or isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DAY.match(value):
        raise ValueError(f"a day is written {DAY_RULE}")
    day = date.fromisoformat(value)
    if not MIN_DAY <= day <= MAX_DAY:
        raise ValueError(f"a day lies within {MIN_DAY.isoformat()}..{MAX_DAY.isoformat()}")
    return day


_DAY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date",
    # The years the bounds allow, so that a client (or a schema-driven fuzzer) generating
    # from this schema produces days inside them.
    "pattern": r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
    "x-minimum": MIN_DAY.isoformat(),
    "x-maximum": MAX_DAY.isoformat(),
}
Start = Annotated[
    date | None,
    BeforeValidator(_day),
    Query(
        description=f"First day ({DAY_RULE}); default: 30 days before `end`. "
        f"`start` <= `end`, at most {MAX_DAYS} days.",
        json_schema_extra=_DAY_SCHEMA,
    ),
]
End = Annotated[
    date | None,
    BeforeValidator(_day),
    Query(
        description=f"Last day, inclusive ({DAY_RULE}); default today.",
        json_schema_extra=_DAY_SCHEMA,
    ),
]
FormDay = Annotated[date, BeforeValidator(_day), Form(json_schema_extra=_DAY_SCHEMA)]

_ISO_INSTANT = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d"
    r"(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$"
)
INSTANT_RULE = "ISO 8601, e.g. 2026-11-24T06:00:00Z (without a zone: UTC)"


def _instant(value: Any) -> Any:
    """Only an ISO 8601 date and time within the day bounds (no numbers: ``0.5`` is not a
    time); without a zone it is UTC."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_INSTANT.match(value):
        raise ValueError(f"a time is written {INSTANT_RULE}")
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if not MIN_DAY <= when.date() <= MAX_DAY:
        raise ValueError(f"a time lies within {MIN_DAY.isoformat()}..{MAX_DAY.isoformat()}")
    return when


Instant = Annotated[
    datetime | None,
    BeforeValidator(_instant),
    Query(
        description=f"A moment ({INSTANT_RULE}).",
        json_schema_extra={
            "type": "string",
            "format": "date-time",
            "pattern": _ISO_INSTANT.pattern.replace("\\d{4}", "(20[0-9]{2}|2100)", 1),
        },
    ),
]
Cursor = Annotated[
    int,
    Query(ge=0, le=MAX_ID, description="Cursor: id of the last event already read (0..2^63-1)"),
]


def refuse(where: tuple[str, ...], message: str) -> RequestValidationError:
    """A refusal in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"loc": where, "msg": message, "type": "value_error"}])


def period(start: date | None, end: date | None, today: date, days: int = 30) -> tuple[date, date]:
    """``start..end`` with the documented defaults and rules; raises the 422 shape."""
    last = end or min(max(today, MIN_DAY), MAX_DAY)
    first = start or max(last - timedelta(days=days - 1), MIN_DAY)
    if first > last:
        raise refuse(("query", "start"), "start is after end")
    if (last - first).days >= MAX_DAYS:
        raise refuse(("query", "start"), f"a period is at most {MAX_DAYS} days")
    return first, last


class Problem(BaseModel):
    """An error that is not about a parameter: ``{"detail": "why"}``."""

    detail: str


#: Declared on every route that needs a bearer token.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No bearer token, or an invalid or revoked one"},
    403: {"model": Problem, "description": "The token's role or centres do not cover this"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such unit or centre"},
}
_TEXT = {"schema": {"type": "string"}}
NDJSON_OR_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One JSON object a line (`format=ndjson`), or CSV with a header row",
        "content": {"application/x-ndjson": _TEXT, "text/csv": _TEXT},
    }
}
JSON_OR_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (`format=json`), or CSV with a header row (`format=csv`)",
        "content": {"application/json": {"schema": {"type": "object"}}, "text/csv": _TEXT},
    }
}

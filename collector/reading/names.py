"""Centres and services, read once per process and again only when the registry changes.

Every page names centres and services several times; reading them from the database
each time cost more than the page's figures. The cache is keyed by the engine (so two
databases never mix) and checked against the registry's version, which every import
moves on (:func:`collector.registry.bump_registry_version`): one tiny query a request.
Rows are plain, read-only :class:`sqlalchemy.engine.Row` objects with the columns as
attributes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import Centre, Service
from collector.registry import registry_version


@dataclass(frozen=True)
class Names:
    version: int
    centres: tuple[Any, ...]
    """Every centre, by code."""
    centre_by_id: dict[int, Any]
    services: tuple[Any, ...]
    """Every service, by code."""
    service_code: dict[int, str]


_cache: WeakKeyDictionary[Any, Names] = WeakKeyDictionary()
_lock = threading.Lock()


def names(session: Session) -> Names:
    """The registry's names; asked once per session (a request), then remembered in it."""
    kept = session.info.get("gnahat_names")
    if kept is not None:
        return kept  # type: ignore[no-any-return]
    found = _names(session)
    session.info["gnahat_names"] = found
    return found


def _names(session: Session) -> Names:
    bind = session.get_bind()
    version = registry_version(session)
    hit = _cache.get(bind)
    if hit is not None and hit.version == version:
        return hit
    centres = tuple(session.execute(select(Centre.__table__).order_by(Centre.code)))
    services = tuple(session.execute(select(Service.__table__).order_by(Service.code)))
    fresh = Names(
        version=version,
        centres=centres,
        centre_by_id={c.id: c for c in centres},
        services=services,
        service_code={s.id: s.code for s in services},
    )
    with _lock:
        _cache[bind] = fresh
    return fresh

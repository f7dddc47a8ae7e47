"""What was heard from each unit: presence, health, firmware, last seen."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from collector.intake.store.driver import Driver, newer
from collector.models import DeviceState


class DeviceStateWriter:
    """Unit states of a batch (a part of :class:`collector.intake.store.Store`)."""

    def _store_states(self, session: Session, states: dict[str, dict[str, Any]]) -> None:
        """Upsert what was heard from each unit: one executemany per set of columns."""
        table = DeviceState.__table__
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for device, state in sorted(states.items()):
            groups.setdefault(tuple(sorted(state)), []).append(
                {"device": device, "online": False, **state}
            )
        fast = Driver(session.connection(), table)
        for cols, rows in groups.items():
            columns = ("device", "online", *(c for c in cols if c != "online"))
            fast.upsert_many(columns, rows, "device", ", ".join(newer(c, cols) for c in cols))

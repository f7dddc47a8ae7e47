"""Driver-level SQL for the hot path (shared by every writer of a batch)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar

from sqlalchemy import JSON, Date

from collector.intake.dating import CLOCK_STALE_MS
from collector.models import UTCDateTime, sqlite_time_text


class Driver:
    """Driver-level SQL for the hot path, with SQLAlchemy's own per-type conversions.

    Compiling a fresh multi-row statement through SQLAlchemy on every batch costs more
    than running it; these statements are plain text (identical on SQLite and
    PostgreSQL: both speak ``ON CONFLICT ... excluded``), values converted exactly as
    SQLAlchemy would convert them.
    """

    _converters: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    _pg_types: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, conn: Any, table: Any) -> None:
        self.conn = conn
        self.table = table.name
        dialect = conn.dialect
        self.pg = dialect.name == "postgresql"
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        key = (table.name, dialect.name)
        if key not in self._converters:  # once per table and database kind
            # The dialect's own form of each type (on SQLite a datetime is stored as the
            # text SQLAlchemy writes, so raw rows compare equal to those the ORM writes).
            procs = {
                c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns
            }
            if dialect.name == "sqlite":  # the same text, without SQLAlchemy's formatting
                for c in table.columns:
                    if isinstance(c.type, UTCDateTime):
                        procs[c.name] = sqlite_time_text
                    elif type(c.type) is Date:
                        procs[c.name] = date.isoformat
            if self.pg:
                from psycopg.types.json import Json

                procs.update({c.name: Json for c in table.columns if isinstance(c.type, JSON)})
                self._pg_types[table.name] = {
                    c.name: "json" if isinstance(c.type, JSON) else c.type.compile(dialect)
                    for c in table.columns
                }
            self._converters[key] = procs
        self.procs = self._converters[key]

    def values(self, cols: Sequence[str], row: dict[str, Any]) -> list[Any]:
        out = []
        for c in cols:
            proc = self.procs[c]
            v = row.get(c)
            out.append(proc(v) if proc is not None and v is not None else v)
        return out

    def insert_returning(
        self, cols: Sequence[str], rows: list[dict[str, Any]], conflict: str, returning: str
    ) -> list[Any]:
        if self.pg:
            return self._insert_unnest(cols, rows, conflict, returning)
        one = "(" + ", ".join([self.mark] * len(cols)) + ")"
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES "
            f"{', '.join([one] * len(rows))} ON CONFLICT ({conflict}) DO NOTHING "
            f"RETURNING {returning}"
        )
        params: list[Any] = []
        for row in rows:
            params += self.values(cols, row)
        return list(self.conn.exec_driver_sql(sql, tuple(params)))

    def _insert_unnest(
        self, cols: Sequence[str], rows: list[dict[str, Any]], conflict: str, returning: str
    ) -> list[Any]:
        """PostgreSQL: one array per column, whatever the number of rows.

        The statement stays short and identical from batch to batch, so psycopg keeps
        its parsed form (and the server can prepare it); a multi-row ``VALUES`` with
        thousands of placeholders is re-parsed by the driver on every batch.
        """
        source, arrays = self._unnest(cols, rows)
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) {source} "
            f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}"
        )
        return list(self.conn.exec_driver_sql(sql, tuple(arrays)))

    def _unnest(self, cols: Sequence[str], rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
        """``SELECT ... FROM unnest(...)`` over one array per column, and the arrays."""
        types = self._pg_types[self.table]
        arrays: list[list[Any]] = [[] for _ in cols]
        for row in rows:
            for i, c in enumerate(cols):
                v = row.get(c)
                if v is not None:
                    if types[c] == "json":
                        v = json.dumps(v, ensure_ascii=False)  # cast back to json below
                    else:
                        proc = self.procs[c]
                        v = proc(v) if proc is not None else v
                arrays[i].append(v)
        args = ", ".join("%b::text[]" if types[c] == "json" else f"%b::{types[c]}[]" for c in cols)
        picks = ", ".join(f"{c}::json" if types[c] == "json" else c for c in cols)
        return f"SELECT {picks} FROM unnest({args}) AS t({', '.join(cols)})", arrays

    def upsert_many(
        self,
        cols: Sequence[str],
        rows: list[dict[str, Any]],
        conflict: str,
        update: str,
        *,
        distinct: bool = True,
    ) -> None:
        """Insert or update ``rows``. ``distinct``: no two rows share a conflict key (then
        PostgreSQL takes them all in one ``unnest`` statement; an upsert may not touch a
        row twice in one statement, so repeated keys go row by row)."""
        if self.pg and distinct:
            source, arrays = self._unnest(cols, rows)
            sql = (
                f"INSERT INTO {self.table} ({', '.join(cols)}) {source} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {update}"
            )
            self.conn.exec_driver_sql(sql, tuple(arrays))
            return
        sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES "
            f"({', '.join([self.mark] * len(cols))}) ON CONFLICT ({conflict}) "
            f"DO UPDATE SET {update}"
        )
        self.conn.exec_driver_sql(sql, [tuple(self.values(cols, r)) for r in rows])


#: :func:`collector.intake.dating.better` in SQL: whether a unit's clock zero heard now
#: replaces the kept one (several ingest workers commit in any order).
_CLOCK_TAKEN = (
    "(device_state.clock_boot IS NULL"
    " OR (device_state.clock_boot <> excluded.clock_boot"
    " AND excluded.clock_heard_ms >= device_state.clock_heard_ms)"
    " OR (device_state.clock_boot = excluded.clock_boot"
    " AND (excluded.clock_zero_ms <= device_state.clock_zero_ms"
    f" OR excluded.clock_heard_ms - device_state.clock_heard_ms > {CLOCK_STALE_MS})))"
)


def newer(col: str, cols: Sequence[str]) -> str:
    """``col = excluded.col`` only where what came is newer than what is kept.

    Several ingest workers commit in any order: a status, health report or last-seen
    time committed later but received earlier must not overwrite a newer one.
    """
    if col.startswith("clock_") and "clock_boot" in cols:
        return f"{col} = CASE WHEN {_CLOCK_TAKEN} THEN excluded.{col} ELSE device_state.{col} END"
    if col == "last_seen":
        stamp = "last_seen"
    elif col in ("health", "health_at") or (col == "firmware" and "health_at" in cols):
        stamp = "health_at"
    else:
        stamp = "status_at"
    if stamp not in cols:
        return f"{col} = excluded.{col}"
    kept = f"device_state.{stamp}"
    return (
        f"{col} = CASE WHEN {kept} IS NULL OR excluded.{stamp} >= {kept} "
        f"THEN excluded.{col} ELSE device_state.{col} END"
    )

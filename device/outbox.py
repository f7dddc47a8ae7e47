"""The unit's durable outbox: every event stays here until the collector's ack names it.

SQLite in WAL mode with ``synchronous=FULL``: once :meth:`Outbox.append` returns,
the event survives power loss and ``kill -9``; only then does the visitor get
light and sound. The ``stream`` id is minted when the file is first created and
``seq`` is persisted, so it is never reused, even after every event is acked.

A file that SQLite cannot read (a worn SD card, a half-written sector) is moved
aside, not retried for ever: a new outbox with a *new stream* starts, so nothing
that file held can be counted twice, and :attr:`Outbox.recovered_from` names the
moved file (health and ``gnahat-device status`` show it; a technician may recover
what it still holds with ``sqlite3 .recover``).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from device import protocol as p
from device.errors import OutboxFull

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    created_mono_ms INTEGER NOT NULL
);
"""


#: SQLite's verdicts that a file is damaged (not a passing condition of the system).
CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _proven_corrupt(path: Path, exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` at open means the file is damaged: SQLite said so by its error
    code, or its integrity check on a connection of its own does not come back "ok". A
    locked file, an I/O error or a full disk prove nothing."""
    if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorname", "") not in (
        CORRUPT
    ):
        return False
    if getattr(exc, "sqlite_errorname", None) in CORRUPT:
        return True
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as again:
        return getattr(again, "sqlite_errorname", None) in CORRUPT
    return bool(verdict != "ok")


def _readable_rows(path: Path) -> int:
    """How many events can still be read in a moved outbox (0 when none can)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return 0


class Outbox:
    """A durable, ordered queue of encoded events for one stream."""

    def __init__(
        self, path: str | Path, *, max_events: int = 200_000, busy_timeout_s: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.max_events = max_events
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.stream = ""
        self.recovered_from: str | None = None
        """Where a corrupt outbox file was moved at open, if one was."""
        self.recovered_unsent: int | None = None
        """How many unsent events could still be read in that file (reported, not sent)."""
        self._last_seq = 0
        self._depth = 0

    # ------------------------------------------------------------ lifecycle

    def open(self) -> Outbox:
        """Open (or create) the outbox. A file SQLite *proves* corrupt (its own integrity
        check fails, or it is not a database) is moved aside and a new stream starts; any
        other failure (locked by another process, an I/O error, a full disk) is raised as
        it is, the file left alone with every unacked press in it: the daemon exits and
        systemd starts it again."""
        if self._conn is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not _proven_corrupt(self.path, exc):
                log.error("outbox %s cannot be opened now (%s); left as it is", self.path, exc)
                raise
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is corrupt (%s); moved to %s", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(f"{aside}{suffix}")
            unsent = _readable_rows(aside)
            self._open()
            self.recovered_from = str(aside)
            self.recovered_unsent = unsent
            with self._lock:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("recovered_from", str(aside)), ("recovered_unsent", str(unsent))],
                )
            if unsent:
                log.error(
                    "%d unsent event(s) could still be read in %s: recover them with "
                    "sqlite3 .recover (see docs/device.md)", unsent, aside,
                )  # fmt: skip
            return self

    def _open(self) -> Outbox:
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout_s
        )
        try:
            return self._init(conn)
        except BaseException:
            conn.close()
            raise

    def _init(self, conn: sqlite3.Connection) -> Outbox:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM meta WHERE key='stream'").fetchone()
        if row is None:
            stream = secrets.token_urlsafe(12)
            conn.execute("INSERT INTO meta VALUES ('stream', ?), ('last_seq', '0')", (stream,))
        conn.execute("COMMIT")
        self.stream = conn.execute("SELECT value FROM meta WHERE key='stream'").fetchone()[0]
        meta_seq = int(conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0])
        max_row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        self._last_seq = max(meta_seq, max_row)
        self._depth = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        row = conn.execute("SELECT value FROM meta WHERE key='recovered_from'").fetchone()
        self.recovered_from = None if row is None else str(row[0])
        row = conn.execute("SELECT value FROM meta WHERE key='recovered_unsent'").fetchone()
        self.recovered_unsent = None if row is None else int(row[0])
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("outbox is not open")
        return self._conn

    # ------------------------------------------------------------ writes

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def is_full(self) -> bool:
        return self._depth >= self.max_events

    def append(self, make: Callable[[int], p.Event], *, mono_ms: int) -> p.Event:
        """Assign the next seq, build the event with it, and write it durably.

        ``make(seq)`` returns the event; raises :class:`OutboxFull` when full (the
        press is refused visibly; nothing already queued is dropped).
        """
        with self._lock:
            if self._depth >= self.max_events:
                raise OutboxFull(f"outbox holds {self._depth} events (limit {self.max_events})")
            seq = self._last_seq + 1
            event = make(seq)
            payload = p.encode_event(event)
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, payload, mono_ms))
                conn.execute("UPDATE meta SET value=? WHERE key='last_seq'", (str(seq),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._last_seq = seq
            self._depth += 1
            return event

    def ack(self, ranges: Iterable[tuple[int, int]], *, at: str | None = None) -> int:
        """Forget acknowledged events; returns how many were removed."""
        ranges = list(ranges)
        if not ranges:
            return 0
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            removed = 0
            for lo, hi in ranges:
                removed += conn.execute(
                    "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi)
                ).rowcount
            if at is not None:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_ack_at', ?)", (at,))
            conn.execute("COMMIT")
            self._depth -= removed
            return removed

    # ------------------------------------------------------------ reads

    def pending(self, *, after: int = 0, limit: int = 256) -> list[tuple[int, bytes]]:
        with self._lock:
            return self.conn.execute(
                "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()

    def get(self, seqs: Sequence[int]) -> list[tuple[int, bytes]]:
        if not seqs:
            return []
        with self._lock:
            marks = ",".join("?" * len(seqs))
            return self.conn.execute(
                f"SELECT seq, payload FROM outbox WHERE seq IN ({marks}) ORDER BY seq",
                list(seqs),
            ).fetchall()

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            return None if row is None else str(row[0])

    def oldest(self) -> tuple[int, int] | None:
        """``(seq, created_mono_ms)`` of the oldest unacked event.

        ``created_mono_ms`` is a reading of the monotonic clock of the boot that wrote the
        row: compare it with the current clock only when :meth:`oldest_event` says that
        boot is this one.
        """
        with self._lock:
            row = self.conn.execute(
                "SELECT seq, created_mono_ms FROM outbox ORDER BY seq LIMIT 1"
            ).fetchone()
            return (int(row[0]), int(row[1])) if row else None

    def oldest_event(self) -> tuple[int, p.Event] | None:
        """``(created_mono_ms, event)`` of the oldest unacked event (its boot and time)."""
        with self._lock:
            row = self.conn.execute(
                "SELECT created_mono_ms, payload FROM outbox ORDER BY seq LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), p.decode_event(bytes(row[1]))

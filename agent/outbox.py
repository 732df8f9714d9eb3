"""Durable outbox: every message is on disk before the first publish attempt.

The KPI engine writes its messages here (together with its checkpoint, in one
transaction), and the MQTT publisher reads them oldest first and deletes a row only when
the broker has acknowledged it (PUBACK). A crash or a power cut between the two loses
nothing: the rows are published again after the restart, and the downstream writes are
idempotent, so a repeat is harmless.

The outbox is bounded in bytes and in age. When a bound is exceeded the oldest rows are
dropped, counted, and logged at WARNING: data is never dropped silently.

Storage is one SQLite file in WAL mode. ``synchronous="full"`` fsyncs every commit of new
messages (durable against power loss); ``"normal"`` survives a process crash but may lose
the last commits on power loss. Deletions (acks) are committed without an fsync of their
own: losing one to a power cut only means a message is published twice.

Deleted rows leave free pages behind; without more, a file grown during a long outage
would keep its size after the backlog drained. The file uses SQLite's incremental
auto-vacuum: once more than :data:`_RECLAIM_PAGES` pages are free, acks hand them back to
the file system a step at a time, and the WAL file is capped after each checkpoint.

The same file holds the KPI engine's *sample journal* (:meth:`SqliteOutbox.journal_append`):
every batch of samples the engine consumes is appended (and committed) before the engine
sees it, and a checkpoint written with :meth:`SqliteOutbox.put_many` records the journal
position it covers and truncates the journal up to it, in the same transaction. After a
crash the runtime restores the checkpoint and replays the journal after that position, so
no sample that entered the engine is lost and none is counted twice.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from rules.errors import InputError, StorageError

log = logging.getLogger(__name__)

__all__ = [
    "JournalEntry",
    "Outbox",
    "OutboxError",
    "OutboxMessage",
    "OutboxStats",
    "SqliteOutbox",
]

# Rows per DELETE statement: well below SQLite's limit on bound parameters.
_ACK_CHUNK = 500

# Free pages (4 KiB each by default) tolerated before acks start giving them back, and
# the most one ack gives back: a drained backlog shrinks the file in bounded steps.
_RECLAIM_PAGES = 1024
_RECLAIM_STEP = 4096
_PAGE_BYTES = 4096  # SQLite's default page size

# The WAL file is truncated to this after a checkpoint (it keeps its largest size
# otherwise).
_WAL_LIMIT_BYTES = 16 * 2**20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_ms);
CREATE TABLE IF NOT EXISTS state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    entry      TEXT    NOT NULL,
    items      INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


class OutboxError(StorageError):
    """The outbox file could not be read or written (disk full, I/O error, corrupt file)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled batch of engine input; ``seq`` grows strictly and is never reused.

    ``entry`` is JSON text whose meaning belongs to the writer (the runtime); ``items``
    is how many samples it holds, so the journal's size can be bounded without parsing.
    """

    seq: int
    entry: str
    items: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One stored message; ``id`` grows strictly with insertion order and is never reused."""

    id: int
    topic: str
    payload: bytes
    created_ms: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counters since the outbox was opened, plus its current size.

    ``bytes`` counts topic and payload bytes of the stored rows (what ``max_bytes``
    bounds); ``file_bytes`` is what the SQLite file and its WAL take on disk.
    """

    enqueued: int
    acked: int
    dropped_full: int
    dropped_age: int
    depth: int
    bytes: int
    journal_rows: int = 0
    journal_items: int = 0
    file_bytes: int = 0


class Outbox(Protocol):
    """The seam between the producers, the publisher and the storage.

    The runtime and the publisher use only this, so unit tests can give them a fake.
    """

    def put_many(
        self, items: Sequence[tuple[str, bytes]], *, state: Mapping[str, str] | None = None
    ) -> list[int]:
        """Store messages and checkpoint state in one transaction; durable on return."""
        ...

    def pending(self, limit: int, after_id: int = 0) -> list[OutboxMessage]:
        """Up to ``limit`` stored messages with ``id > after_id``, oldest first."""
        ...

    def ack(self, ids: Iterable[int]) -> None:
        """Delete delivered messages (unknown ids are ignored)."""
        ...

    def load_state(self, key: str) -> str | None:
        """The checkpoint stored under ``key`` by ``put_many``, or None."""
        ...

    def depth(self) -> int:
        """How many messages wait for delivery."""
        ...

    @property
    def stats(self) -> OutboxStats:
        """Counters and current size, for health and metrics."""
        ...


@dataclass(slots=True)
class _Drops:
    """What one enforcement of the bounds deleted."""

    age_rows: int = 0
    age_bytes: int = 0
    full_rows: int = 0
    full_bytes: int = 0


def _row_size(topic: str, payload: bytes) -> int:
    return len(topic.encode()) + len(payload)


class SqliteOutbox:
    """The outbox in one SQLite file (WAL mode).

    Every method takes one lock, so the object may be shared between the asyncio thread
    and worker threads; each call is short (one transaction).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 256 * 2**20,
        max_age_s: float = 7 * 86400,
        synchronous: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._sync = synchronous.upper()
        self._clock = clock
        self._lock = threading.Lock()
        self._enqueued = 0
        self._acked = 0
        self._dropped_full = 0
        self._dropped_age = 0
        self._freed = 0  # row bytes deleted since the free list was last looked at
        # When the oldest row reaches max_age_s; no age query is needed before then.
        self._expires_at = -math.inf
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            db = self._db
            # Must precede the first write of a new file (WAL mode is one) to take effect.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={self._sync}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                # A file made by an earlier version: a one-time VACUUM switches it.
                log.info("outbox %s: enabling incremental vacuum (one-time rewrite)", self.path)
                db.execute("VACUUM")
            db.executescript(_SCHEMA)
            count, total = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
            ).fetchone()
            jrows, jitems = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(items), 0) FROM journal"
            ).fetchone()
        except (sqlite3.Error, OSError) as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
        self._depth = int(count)
        self._bytes = int(total)
        self._journal_rows = int(jrows)
        self._journal_items = int(jitems)
        if self._depth:
            log.info("outbox %s holds %d undelivered messages (%d bytes) from before",
                     self.path, self._depth, self._bytes)
        with self._lock:
            with self._transaction(durable=True) as db:
                drops = self._enforce_limits(db, self._bytes, force_age=True)
            self._apply_drops(drops)

    # -- plumbing --------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; caller holds the lock.

        ``durable=False`` commits without waiting for an fsync (used for deletions only).
        """
        db = self._conn()
        relaxed = not durable and self._sync == "FULL"
        try:
            if relaxed:
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {self.path}: {err}") from err
        finally:
            if relaxed:
                try:
                    db.execute(f"PRAGMA synchronous={self._sync}")
                except sqlite3.Error as err:
                    log.error("outbox %s: cannot restore synchronous=%s: %s",
                              self.path, self._sync, err)

    def _enforce_limits(
        self, db: sqlite3.Connection, stored_bytes: int, *, force_age: bool = False
    ) -> _Drops:
        """Delete the oldest rows beyond ``max_age_s`` and ``max_bytes`` inside the
        caller's transaction and say what went; the caller counts it after COMMIT."""
        drops = _Drops()
        now = self._clock()
        if force_age or now >= self._expires_at:
            cutoff_ms = int((now - self.max_age_s) * 1000)
            n, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE created_ms < ?",
                (cutoff_ms,),
            ).fetchone()
            if n:
                db.execute("DELETE FROM outbox WHERE created_ms < ?", (cutoff_ms,))
                drops.age_rows, drops.age_bytes = int(n), int(size)
            (oldest_ms,) = db.execute("SELECT MIN(created_ms) FROM outbox").fetchone()
            self._expires_at = (math.inf if oldest_ms is None
                                else int(oldest_ms) / 1000 + self.max_age_s)
        excess = stored_bytes - drops.age_bytes - self.max_bytes
        if excess > 0:
            last_id = 0
            for row_id, size in db.execute("SELECT id, size FROM outbox ORDER BY id"):
                drops.full_bytes += int(size)
                drops.full_rows += 1
                last_id = int(row_id)
                if drops.full_bytes >= excess:
                    break
            db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
        return drops

    def _apply_drops(self, drops: _Drops) -> None:
        """Count committed drops and say so loudly: dropping data must never be silent."""
        if drops.age_rows:
            self._forget(drops.age_rows, drops.age_bytes)
            self._dropped_age += drops.age_rows
            log.warning(
                "OUTBOX DROPPED %d undelivered messages (%d bytes) older than max_age_s=%.0f: "
                "the broker has been unreachable for too long",
                drops.age_rows, drops.age_bytes, self.max_age_s,
            )
        if drops.full_rows:
            self._forget(drops.full_rows, drops.full_bytes)
            self._dropped_full += drops.full_rows
            log.warning(
                "OUTBOX FULL: dropped the %d oldest undelivered messages (%d bytes) to stay "
                "under max_bytes=%d", drops.full_rows, drops.full_bytes, self.max_bytes,
            )

    def _forget(self, rows: int, size: int) -> None:
        self._depth -= rows
        self._bytes -= size

    # -- the Outbox protocol ---------------------------------------------------------

    def put_many(
        self, items: Sequence[tuple[str, bytes]], *, state: Mapping[str, str] | None = None,
        journal_upto: int | None = None,
    ) -> list[int]:
        """Store ``items`` (topic, payload) and the checkpoint ``state`` atomically.

        Either everything is committed (and fsynced with ``synchronous="full"``) or
        nothing is. Returns the new ids in the order of ``items``. If the batch pushes the
        outbox over ``max_bytes``, the oldest rows are dropped (possibly some of these).
        ``journal_upto`` deletes the journal entries up to that sequence number in the same
        transaction: the checkpoint in ``state`` covers them, so they are never replayed.
        """
        rows: list[tuple[str, bytes, int, int]] = []
        now = self._clock()
        now_ms = int(now * 1000)
        for i, (topic, payload) in enumerate(items):
            if not isinstance(topic, str) or not topic:
                raise InputError(f"outbox item {i}: topic must be a non-empty string")
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise InputError(
                    f"outbox item {i} ({topic}): payload must be bytes, "
                    f"not {type(payload).__name__}"
                )
            data = bytes(payload)
            rows.append((topic, data, now_ms, _row_size(topic, data)))
        states: list[tuple[str, str, int]] = []
        for key, value in (state or {}).items():
            if not isinstance(value, str):
                raise InputError(f"outbox state {key!r}: value must be JSON text (str)")
            try:
                json.loads(value)
            except ValueError as err:
                raise InputError(f"outbox state {key!r}: not valid JSON: {err}") from err
            states.append((key, value, now_ms))
        if not rows and not states and journal_upto is None:
            return []
        ids: list[int] = []
        added = 0
        cut_rows = cut_items = 0
        with self._lock:
            with self._transaction(durable=True) as db:
                for row in rows:
                    cur = db.execute(
                        "INSERT INTO outbox (topic, payload, created_ms, size) "
                        "VALUES (?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cur.lastrowid or 0))
                    added += row[3]
                if states:
                    db.executemany(
                        "INSERT INTO state (key, value, updated_ms) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                        "updated_ms = excluded.updated_ms",
                        states,
                    )
                if journal_upto is not None:
                    cut_rows, cut_items = db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(items), 0) FROM journal WHERE seq <= ?",
                        (journal_upto,),
                    ).fetchone()
                    if cut_rows:
                        db.execute("DELETE FROM journal WHERE seq <= ?", (journal_upto,))
                if rows:
                    self._expires_at = min(self._expires_at, now + self.max_age_s)
                drops = self._enforce_limits(db, self._bytes + added)
            # Committed: only now do the in-memory counters change.
            self._journal_rows -= int(cut_rows)
            self._journal_items -= int(cut_items)
            self._depth += len(rows)
            self._bytes += added
            self._enqueued += len(rows)
            self._apply_drops(drops)
        return ids

    def pending(self, limit: int, after_id: int = 0) -> list[OutboxMessage]:
        """Up to ``limit`` messages with ``id > after_id``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT id, topic, payload, created_ms FROM outbox WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: {err}") from err
        return [OutboxMessage(int(i), str(t), bytes(p), int(c)) for i, t, p, c in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Delete the acknowledged rows; ids already gone (dropped, acked twice) are ignored."""
        todo = sorted(set(ids))
        if not todo:
            return
        removed = size = 0
        with self._lock:
            with self._transaction(durable=False) as db:
                for start in range(0, len(todo), _ACK_CHUNK):
                    chunk = todo[start:start + _ACK_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for (row_size,) in db.execute(
                        f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING size", chunk
                    ).fetchall():
                        removed += 1
                        size += int(row_size)
            self._forget(removed, size)
            self._acked += removed
            self._freed += size
            # Look at the free list only once enough was deleted to matter, not with
            # one more query per ack on the steady-state path.
            if self._freed >= _RECLAIM_PAGES * _PAGE_BYTES:
                self._freed = 0
                self._reclaim()

    def _reclaim(self) -> None:
        """Give free pages back to the file system once there are many; caller holds the
        lock. A failure only leaves the file larger, so it is logged, not raised."""
        db = self._conn()
        try:
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
            if int(free) > _RECLAIM_PAGES:
                # executescript steps the pragma to completion; execute() would free one page.
                db.executescript(f"PRAGMA incremental_vacuum({_RECLAIM_STEP});")
        except sqlite3.Error as err:
            log.warning("outbox %s: reclaiming free pages failed: %s", self.path, err)

    def load_state(self, key: str) -> str | None:
        """The checkpoint stored under ``key``, or None when there is none."""
        with self._lock:
            try:
                row = self._conn().execute(
                    "SELECT value FROM state WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: {err}") from err
        return None if row is None else str(row[0])

    # -- the sample journal ----------------------------------------------------------

    def journal_append(self, entry: str, items: int) -> int:
        """Append one journal entry (JSON text holding ``items`` samples); durable on return.

        Returns its sequence number. The commit is fsynced like a new message (with
        ``synchronous="full"``), because a sample the engine has consumed exists nowhere
        else once the collectors have moved on.
        """
        if not isinstance(entry, str):
            raise InputError("journal entry must be JSON text (str)")
        now_ms = int(self._clock() * 1000)
        with self._lock:
            with self._transaction(durable=True) as db:
                cur = db.execute(
                    "INSERT INTO journal (entry, items, created_ms) VALUES (?, ?, ?)",
                    (entry, int(items), now_ms),
                )
                seq = int(cur.lastrowid or 0)
            self._journal_rows += 1
            self._journal_items += int(items)
        return seq

    def journal_after(self, seq: int, limit: int = 1000) -> list[JournalEntry]:
        """Up to ``limit`` journal entries with ``seq`` greater than ``seq``, oldest first."""
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT seq, entry, items FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                ).fetchall()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: {err}") from err
        return [JournalEntry(int(q), str(e), int(n)) for q, e, n in rows]

    def journal_clear(self) -> int:
        """Delete the whole journal (its checkpoint was unusable); returns the rows deleted."""
        with self._lock:
            with self._transaction(durable=True) as db:
                n = db.execute("DELETE FROM journal").rowcount
            self._journal_rows = 0
            self._journal_items = 0
        return int(n)

    @property
    def journal_items(self) -> int:
        """Samples held by the journal (kept in memory: no query), for bounding it."""
        return self._journal_items

    def depth(self) -> int:
        """How many messages wait for delivery (kept in memory: no query)."""
        return self._depth

    @property
    def stats(self) -> OutboxStats:
        """Counters since open plus the current depth and stored bytes."""
        return OutboxStats(
            enqueued=self._enqueued,
            acked=self._acked,
            dropped_full=self._dropped_full,
            dropped_age=self._dropped_age,
            depth=self._depth,
            bytes=self._bytes,
            journal_rows=self._journal_rows,
            journal_items=self._journal_items,
            file_bytes=self._file_bytes(),
        )

    def _file_bytes(self) -> int:
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with suppress(OSError):
                total += path.stat().st_size
        return total

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; later calls raise OutboxError."""
        with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:
                log.warning("outbox %s: WAL checkpoint on close failed: %s", self.path, err)
            finally:
                db.close()

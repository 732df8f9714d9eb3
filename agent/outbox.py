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

Beside it, in a file of its own (``outbox.sqlite.journal``), lives the KPI engine's
*sample journal* (:meth:`SqliteOutbox.journal_append`): every batch of samples the engine
consumes is appended before the engine sees it, and a checkpoint written with
:meth:`SqliteOutbox.put_many` records the journal position it covers (the journal is
emptied once a checkpoint covers all of it). After a crash the runtime restores the
checkpoint and replays the journal after that position, so no sample that entered the
engine is lost and none is counted twice.

The journal is built to spare the flash of a small industrial PC: one compressed,
append-only file rather than SQLite rows (a WAL commit rewrites whole pages, twice), and
*group commits*: an append is handed to the operating system at once, so a killed
process (``kill -9``, a crash) loses nothing of it, but fsynced at most every
``journal_sync_s`` seconds (:data:`JOURNAL_SYNC_S`). The worst case is a power cut: it
can take the samples of the last ``journal_sync_s`` seconds, never more, and never
anything a message depends on, because the journal is fsynced before every commit of
messages or checkpoints (a stored record's input is always durable first). Large
checkpoint values are stored compressed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from rules.errors import InputError, StorageError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

__all__ = [
    "JOURNAL_SYNC_S",
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

JOURNAL_SYNC_S = 1.0
"""Longest time a journal append waits for its fsync: what a power cut can take."""

# A journal record: sequence number, samples, length and CRC-32 of the deflated entry,
# flags; then the entry.
_RECORD = struct.Struct("<QIIIB")
_RESET = 1  # the record starts a new compression stream
_JOURNAL_SUFFIX = ".journal"

# Checkpoint values longer than this are stored deflated (the engine's snapshot is).
_STATE_DEFLATE_BYTES = 4096

# How a row's payload is stored (``outbox.codec``): as given, or deflated with
# :data:`_PAYLOAD_DICT` as preset dictionary. A message is a few hundred bytes of JSON
# whose keys repeat from message to message; with the dictionary it shrinks to about a
# tenth, without it to less than half. The dictionary belongs to codec 1 for good: a
# different one needs a new codec number, or stored rows could not be read back.
_CODEC_RAW = 0
_CODEC_DEFLATE = 1
_PAYLOAD_DICT = (
    b'{"schema":"factory-alarm/1","ts":"2025-01-01T00:00:00.000Z","rule":"","state":'
    b'"raised","cleared","severity":"warning","message":"","value":null,'
    b'{"schema":"factory-kpi/1","site":"","line":"line-","machine":"cnc-","window":"1m",'
    b'"15m","1h","1d","shift","window_start":"2025-01-01T00:00:00.000Z","window_end":'
    b'"2025-01-01T00:01:00.000Z","observed_s":60.0,"planned_busy_time_s":0.0,'
    b'"producing_time_s":0.0,"setup_time_s":0.0,"unplanned_down_time_s":0.0,'
    b'"idle_time_s":0.0,"parts_produced":0,"parts_good":0,"parts_scrap":0,'
    b'"availability":null,"performance":null,"quality_ratio":null,"oee":null,'
    b'"defect_rate":null,"scrap_all_machines":null,"rolled_throughput_yield":null,'
    b'"cycle_time_mean_s":null,"ideal_cycle_time_s":45.0,"energy_kwh":null,'
    b'"energy_per_unit_kwh":null,"energy_per_good_unit_kwh":null,"natural_gas_m3":null,'
    b'"steam_kg":null,"water_m3":null,"compressed_air_m3":null,"kgce":null,'
    b'"kgce_per_good_unit":null,"co2_kg":null,"co2_per_good_unit_kg":null,'
    b'"energy_cost":null,"energy_cost_per_good_unit":null,"flags":["no_energy_data"]}'
)


def _store_payload(data: bytes) -> tuple[bytes, int]:
    """The payload as stored and its codec: deflated when that is smaller."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=_PAYLOAD_DICT)
    packed = deflate.compress(data) + deflate.flush()
    return (packed, _CODEC_DEFLATE) if len(packed) < len(data) else (data, _CODEC_RAW)


def _load_payload(stored: bytes, codec: int) -> bytes:
    """The inverse of :func:`_store_payload`."""
    if codec == _CODEC_RAW:
        return stored
    inflate = zlib.decompressobj(-zlib.MAX_WBITS, zdict=_PAYLOAD_DICT)
    return inflate.decompress(stored) + inflate.flush()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    codec      INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS journal_mark (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    upto       INTEGER NOT NULL
);
"""
# The ``journal`` table is where earlier versions kept the journal; its rows move to the
# journal file when such an outbox is opened. ``journal_mark`` holds the last sequence
# number a checkpoint covers, committed with that checkpoint.


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
    bounds); ``file_bytes`` is what the SQLite file, its WAL and the journal file take
    on disk.
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

    The runtime and the publisher use only this, so unit tests can give them a fake:
    messages (``put_many``, ``pending``, ``ack``), the engine checkpoint (``state`` and
    ``load_state``), the sample journal (``journal_*``), size and counters.
    """

    def put_many(
        self, items: Sequence[tuple[str, bytes]], *, state: Mapping[str, str] | None = None,
        journal_upto: int | None = None,
    ) -> list[int]:
        """Store messages and checkpoint state in one transaction; durable on return.
        ``journal_upto`` deletes the journal entries up to it in the same transaction."""
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

    def journal_append(self, entry: str, items: int) -> int:
        """Append one journal entry holding ``items`` samples; returns its sequence
        number."""
        ...

    @property
    def journal_sync_due(self) -> bool:
        """Whether an append waits for its fsync longer than the journal allows."""
        ...

    def journal_sync(self) -> None:
        """fsync the journal's appends now."""
        ...

    def journal_after(self, seq: int, limit: int = 1000) -> list[JournalEntry]:
        """Up to ``limit`` journal entries after ``seq``, oldest first."""
        ...

    def journal_clear(self) -> int:
        """Delete the whole journal; returns the entries deleted."""
        ...

    @property
    def journal_items(self) -> int:
        """Samples the journal holds (what bounds replay time)."""
        ...

    def depth(self) -> int:
        """How many messages wait for delivery."""
        ...

    @property
    def stats(self) -> OutboxStats:
        """Counters and current size, for health and metrics."""
        ...

    def close(self) -> None:
        """Flush and close; later calls fail."""
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


class _JournalFile:
    """The sample journal's file: appended records, each one deflated entry.

    One compressor runs across the records (each flushed whole with ``Z_SYNC_FLUSH``), so
    the device and signal names every entry repeats cost a few bytes; a record flagged
    :data:`_RESET` starts a new stream (the first of a file, the first after a reopen or
    a failed write). Reading stops at the first damaged or incomplete record, the tail a
    power cut may leave, and the file is cut back to the last good one on open. Entries
    up to ``floor`` are covered by a checkpoint: never returned, and the file is emptied
    once it holds no other. The caller holds the outbox lock.
    """

    def __init__(self, path: Path, *, floor: int, sync_every_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.floor = floor
        self._sync_every_s = sync_every_s
        self._clock = clock
        found, end = self._read() if path.exists() else ([], 0)
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if created:
            _fsync_dir(path.parent)
        if os.fstat(self._fd).st_size > end:
            log.warning("sample journal %s: cutting a damaged tail after %d bytes", path, end)
            os.ftruncate(self._fd, end)
        self._end = end
        self._deflate: zlib._Compress | None = None
        self._unsynced_since: float | None = None
        self.last_seq = max([floor, *(e.seq for e in found)])
        self.live: list[tuple[int, int]] = [(e.seq, e.items) for e in found if e.seq > floor]
        self.items = sum(n for _, n in self.live)

    def _read(self) -> tuple[list[JournalEntry], int]:
        """Every intact record in file order, and where the last one ends."""
        data = self.path.read_bytes()
        out: list[JournalEntry] = []
        pos = 0
        inflate: zlib._Decompress | None = None
        while pos + _RECORD.size <= len(data):
            seq, items, size, crc, flags = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size:pos + _RECORD.size + size]
            if len(body) < size or zlib.crc32(body) != crc:
                break
            if flags & _RESET:
                inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            if inflate is None:
                break
            try:
                text = inflate.decompress(body).decode()
            except (zlib.error, UnicodeDecodeError):
                break
            out.append(JournalEntry(seq, text, items))
            pos += _RECORD.size + size
        return out, pos

    def entries(self) -> list[JournalEntry]:
        """The entries no checkpoint covers, oldest first."""
        return [e for e in self._read()[0] if e.seq > self.floor] if self.live else []

    def append(self, entry: str, items: int) -> int:
        """Write one entry (to the operating system at once); fsync if the oldest unsynced
        write is older than the interval. Returns its sequence number."""
        seq = self.last_seq + 1
        flags = 0
        if self._deflate is None:
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            flags = _RESET
        body = self._deflate.compress(entry.encode()) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        record = _RECORD.pack(seq, items, len(body), zlib.crc32(body), flags) + body
        try:
            written = 0
            while written < len(record):
                written += os.pwrite(self._fd, record[written:], self._end + written)
        except OSError:
            # The stream no longer matches the file: the next record starts a new one.
            self._deflate = None
            with suppress(OSError):
                os.ftruncate(self._fd, self._end)
            raise
        self._end += len(record)
        self.last_seq = seq
        self.live.append((seq, items))
        self.items += items
        if self._unsynced_since is None:
            self._unsynced_since = self._clock()
        if self.sync_due:
            self.sync()
        return seq

    @property
    def sync_due(self) -> bool:
        """Whether an unsynced write has waited the whole interval."""
        return (self._sync_every_s is not None and self._unsynced_since is not None
                and self._clock() - self._unsynced_since >= self._sync_every_s)

    def sync(self) -> None:
        """fsync what was written (nothing to do when nothing was)."""
        if self._unsynced_since is not None:
            os.fsync(self._fd)
            self._unsynced_since = None

    def cut(self, upto: int) -> tuple[int, int]:
        """Forget the entries up to ``upto`` (a committed checkpoint covers them); empty
        the file when nothing else is left. Returns the entries and samples forgotten."""
        self.floor = max(self.floor, upto)
        gone = [(q, n) for q, n in self.live if q <= self.floor]
        if gone:
            self.live = self.live[len(gone):]
            self.items -= sum(n for _, n in gone)
        if not self.live and self._end:
            os.ftruncate(self._fd, 0)
            self._end = 0
            self._deflate = None
            self._unsynced_since = None  # what was unsynced is covered by the checkpoint
        return len(gone), sum(n for _, n in gone)

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self._fd)


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable (POSIX); a no-op where it cannot be."""
    with suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mark_journal(db: sqlite3.Connection, upto: int) -> None:
    """Record, in the caller's transaction, that a checkpoint covers the journal up to
    ``upto`` (the mark only grows)."""
    db.execute("INSERT INTO journal_mark (id, upto) VALUES (1, ?) ON CONFLICT (id) "
               "DO UPDATE SET upto = max(upto, excluded.upto)", (upto,))


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
        journal_sync_s: float = JOURNAL_SYNC_S,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if not journal_sync_s >= 0:
            raise ValueError("journal_sync_s must be >= 0")
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
            if "codec" not in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
                db.execute("ALTER TABLE outbox ADD COLUMN codec INTEGER NOT NULL DEFAULT 0")
            count, total = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
            ).fetchone()
            self._journal = self._open_journal(db, journal_sync_s)
        except (sqlite3.Error, OSError) as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
        self._depth = int(count)
        self._bytes = int(total)
        if self._depth:
            log.info("outbox %s holds %d undelivered messages (%d bytes) from before",
                     self.path, self._depth, self._bytes)
        with self._lock:
            with self._transaction(durable=True) as db:
                drops = self._enforce_limits(db, self._bytes, force_age=True)
            self._apply_drops(drops)

    # -- plumbing --------------------------------------------------------------------

    def _open_journal(self, db: sqlite3.Connection, sync_s: float) -> _JournalFile:
        """The journal file, continuing the sequence numbers of the checkpoint mark and of
        a journal an earlier version kept in the ``journal`` table (moved into the file)."""
        mark = db.execute("SELECT upto FROM journal_mark WHERE id = 1").fetchone()
        used = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        journal = _JournalFile(
            self.path.with_name(self.path.name + _JOURNAL_SUFFIX),
            floor=int(mark[0]) if mark else 0,
            sync_every_s=sync_s if self._sync == "FULL" else None)
        legacy = db.execute("SELECT seq, entry, items FROM journal ORDER BY seq").fetchall()
        for seq, entry, items in legacy:
            journal.last_seq = max(journal.last_seq, int(seq) - 1)
            journal.append(str(entry), int(items))
        journal.sync()
        if legacy:
            db.execute("DELETE FROM journal")
            log.info("outbox %s: moved %d sample journal entries into %s", self.path,
                     len(legacy), journal.path)
        journal.last_seq = max(journal.last_seq, int(used[0]) if used else 0)
        return journal

    def _journal_io(self, action: Callable[[], _T]) -> _T:
        """Run a journal file operation, its OSError as an OutboxError; caller holds the
        lock."""
        try:
            return action()
        except OSError as err:
            raise OutboxError(f"sample journal {self._journal.path}: {err}") from err

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
        rows: list[tuple[str, bytes, int, int, int]] = []
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
            stored, codec = _store_payload(data)
            rows.append((topic, stored, now_ms, _row_size(topic, data), codec))
        states: list[tuple[str, str | bytes, int]] = []
        for key, value in (state or {}).items():
            if not isinstance(value, str):
                raise InputError(f"outbox state {key!r}: value must be JSON text (str)")
            try:
                json.loads(value)
            except ValueError as err:
                raise InputError(f"outbox state {key!r}: not valid JSON: {err}") from err
            kept: str | bytes = value
            if len(value) > _STATE_DEFLATE_BYTES:
                kept = zlib.compress(value.encode(), 1)
            states.append((key, kept, now_ms))
        if not rows and not states and journal_upto is None:
            return []
        ids: list[int] = []
        added = 0
        with self._lock:
            if self._sync == "FULL" and self._db is not None:
                # A stored message or checkpoint never gets ahead of the input it came from.
                self._journal_io(self._journal.sync)
            with self._transaction(durable=True) as db:
                for row in rows:
                    cur = db.execute(
                        "INSERT INTO outbox (topic, payload, created_ms, size, codec) "
                        "VALUES (?, ?, ?, ?, ?)",
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
                    _mark_journal(db, journal_upto)
                if rows:
                    self._expires_at = min(self._expires_at, now + self.max_age_s)
                drops = self._enforce_limits(db, self._bytes + added)
            # Committed: only now do the in-memory counters change.
            if journal_upto is not None:
                upto = journal_upto
                self._journal_io(lambda: self._journal.cut(upto))
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
                    "SELECT id, topic, payload, created_ms, codec FROM outbox WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: {err}") from err
            try:
                return [OutboxMessage(int(i), str(t), _load_payload(bytes(p), int(k)), int(c))
                        for i, t, p, c, k in rows]
            except zlib.error as err:
                raise OutboxError(f"outbox {self.path}: a stored message is damaged: "
                                  f"{err}") from err

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
        if row is None:
            return None
        if isinstance(row[0], bytes):
            try:
                return zlib.decompress(row[0]).decode()
            except (zlib.error, UnicodeDecodeError) as err:
                raise OutboxError(f"outbox {self.path}: state {key!r} is damaged: {err}") from err
        return str(row[0])

    # -- the sample journal ----------------------------------------------------------

    def journal_append(self, entry: str, items: int) -> int:
        """Append one journal entry (JSON text holding ``items`` samples); returns its
        sequence number.

        On return the entry survives a crash of this process; with ``synchronous="full"``
        it is fsynced within ``journal_sync_s`` (group commit: one fsync for the appends
        of that interval), and always before the next commit of messages or checkpoints.
        """
        if not isinstance(entry, str):
            raise InputError("journal entry must be JSON text (str)")
        with self._lock:
            self._conn()
            return self._journal_io(lambda: self._journal.append(entry, int(items)))

    @property
    def journal_sync_due(self) -> bool:
        """Whether an append has waited ``journal_sync_s`` for its fsync (an idle agent
        calls :meth:`journal_sync` then: no later append will)."""
        return self._journal.sync_due

    def journal_sync(self) -> None:
        """fsync the journal's appends now (nothing to do when all are)."""
        with self._lock:
            self._conn()
            self._journal_io(self._journal.sync)

    def journal_after(self, seq: int, limit: int = 1000) -> list[JournalEntry]:
        """Up to ``limit`` journal entries with ``seq`` greater than ``seq``, oldest first."""
        with self._lock:
            self._conn()
            found = self._journal_io(self._journal.entries)
        return [e for e in found if e.seq > seq][:limit]

    def journal_clear(self) -> int:
        """Delete the whole journal (its checkpoint was unusable); returns the entries
        deleted."""
        with self._lock:
            upto = self._journal.last_seq
            with self._transaction(durable=True) as db:
                _mark_journal(db, upto)
            rows, _ = self._journal_io(lambda: self._journal.cut(upto))
        return rows

    @property
    def journal_items(self) -> int:
        """Samples held by the journal (kept in memory: no query), for bounding it."""
        return self._journal.items

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
            journal_rows=len(self._journal.live),
            journal_items=self._journal.items,
            file_bytes=self._file_bytes(),
        )

    def _file_bytes(self) -> int:
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self._journal.path):
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
                try:
                    self._journal.close()
                except OSError as err:
                    log.warning("sample journal %s: sync on close failed: %s",
                                self._journal.path, err)

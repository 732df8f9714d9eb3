"""SqliteOutbox: durable, ordered, atomic with the checkpoint, bounded and counted."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.outbox import Outbox, OutboxError, SqliteOutbox
from rules.errors import InputError


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite"


def test_is_an_outbox(path: Path) -> None:
    box: Outbox = SqliteOutbox(path)
    assert box.depth() == 0


def test_pending_is_oldest_first_and_pages_by_id(path: Path) -> None:
    box = SqliteOutbox(path, clock=FakeClock())
    ids = box.put_many([(f"t/{i}", bytes([i])) for i in range(5)])
    assert ids == sorted(ids) and len(set(ids)) == 5
    first = box.pending(2)
    assert [m.topic for m in first] == ["t/0", "t/1"]
    assert first[0].payload == b"\x00" and first[0].created_ms == 1_800_000_000_000
    rest = box.pending(10, after_id=first[-1].id)
    assert [m.topic for m in rest] == ["t/2", "t/3", "t/4"]
    assert box.pending(0) == []


def test_ids_are_never_reused_after_the_outbox_empties(path: Path) -> None:
    box = SqliteOutbox(path)
    ids = box.put_many([("t", b"a"), ("t", b"b")])
    box.ack(ids)
    box.close()
    box = SqliteOutbox(path)
    assert box.put_many([("t", b"c")])[0] > max(ids)


def test_ack_deletes_only_the_given_rows_and_ignores_unknown_ids(path: Path) -> None:
    box = SqliteOutbox(path)
    ids = box.put_many([("t", b"1"), ("t", b"22"), ("t", b"333")])
    box.ack([ids[1], 999_999, ids[1]])
    assert [m.id for m in box.pending(10)] == [ids[0], ids[2]]
    stats = box.stats
    assert (stats.enqueued, stats.acked, stats.depth, stats.bytes) == (3, 1, 2, 2 + 4)
    box.ack([])


def test_many_acks_in_one_call(path: Path) -> None:
    box = SqliteOutbox(path, synchronous="normal")
    ids = box.put_many([("t", b"x")] * 1_234)
    box.ack(ids[:1_200])
    assert box.depth() == 34 and box.stats.acked == 1_200


def test_messages_and_state_commit_together(path: Path) -> None:
    box = SqliteOutbox(path)
    box.put_many([("t", b"1")], state={"engine": '{"n": 1}'})
    assert box.load_state("engine") == '{"n": 1}'
    assert box.load_state("other") is None
    # The runtime checkpoints with no messages at all.
    assert box.put_many([], state={"engine": '{"n": 2}'}) == []
    assert box.load_state("engine") == '{"n": 2}'
    assert box.depth() == 1


def test_a_failing_batch_leaves_nothing_behind(path: Path) -> None:
    box = SqliteOutbox(path)
    box.put_many([("t", b"before")], state={"engine": '"old"'})
    with sqlite3.connect(path) as other:  # make the third insert fail inside SQLite
        other.execute("CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN NEW.topic = 'boom' "
                      "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    with pytest.raises(OutboxError, match="disk on fire"):
        box.put_many([("t", b"1"), ("t", b"2"), ("boom", b"3")], state={"engine": '"new"'})
    assert [m.payload for m in box.pending(10)] == [b"before"]
    assert box.load_state("engine") == '"old"'
    assert (box.stats.enqueued, box.depth()) == (1, 1)


@pytest.mark.parametrize(
    ("items", "state", "message"),
    [
        ([("t", "text")], None, "payload must be bytes"),
        ([("", b"x")], None, "topic must be a non-empty string"),
        ([("t", b"x")], {"k": "{not json"}, "not valid JSON"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    path: Path, items: list[tuple[str, bytes]], state: dict[str, str] | None, message: str
) -> None:
    box = SqliteOutbox(path)
    with pytest.raises(InputError, match=message):
        box.put_many(items, state=state)
    assert box.depth() == 0


def test_rows_survive_without_close(path: Path) -> None:
    box = SqliteOutbox(path)
    box.put_many([("t", b"kept")])
    # No close(), no ack: a second process opening the file sees the committed rows.
    again = SqliteOutbox(path)
    assert [m.payload for m in again.pending(10)] == [b"kept"]
    assert again.depth() == 1 and again.stats.bytes == len("t") + len("kept")


def test_wal_mode_and_synchronous_policy(path: Path) -> None:
    SqliteOutbox(path, synchronous="normal").close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    full = SqliteOutbox(path)
    assert full._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    full.ack(full.put_many([("t", b"x")]))  # acks relax it for their own commit only
    assert full._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    normal = SqliteOutbox(path, synchronous="normal")
    assert normal._conn().execute("PRAGMA synchronous").fetchone()[0] == 1


def test_over_max_bytes_drops_the_oldest_and_says_so(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = SqliteOutbox(path, max_bytes=100)
    box.put_many([("t", b"x" * 19)] * 4)  # 4 x 20 bytes
    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        box.put_many([("t", b"y" * 29)] * 2)  # +60 -> 140: the two oldest must go
    assert [m.payload[:1] for m in box.pending(10)] == [b"x", b"x", b"y", b"y"]
    stats = box.stats
    assert (stats.dropped_full, stats.depth, stats.bytes) == (2, 4, 100)
    assert "OUTBOX FULL: dropped the 2 oldest" in caplog.text
    assert "max_bytes=100" in caplog.text


def test_older_than_max_age_is_dropped_and_counted(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    box = SqliteOutbox(path, max_age_s=3600, clock=clock)
    box.put_many([("t", b"old")] * 3)
    clock.now += 3599
    box.put_many([("t", b"new")])
    assert box.depth() == 4
    clock.now += 2
    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        box.put_many([("t", b"newer")])
    assert [m.payload for m in box.pending(10)] == [b"new", b"newer"]
    assert box.stats.dropped_age == 3
    assert "OUTBOX DROPPED 3 undelivered messages" in caplog.text


def test_age_is_enforced_when_opening(path: Path) -> None:
    clock = FakeClock()
    SqliteOutbox(path, clock=clock).put_many([("t", b"x")])
    clock.now += 8 * 86400
    box = SqliteOutbox(path, clock=clock)
    assert box.depth() == 0 and box.stats.dropped_age == 1


def test_concurrent_writers_and_acks(path: Path) -> None:
    box = SqliteOutbox(path, synchronous="normal")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for _ in range(50):
                box.put_many([(f"t/{n}", b"p")] * 4)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    acked = 0
    while any(t.is_alive() for t in threads) or box.depth():
        batch = box.pending(64)
        box.ack(m.id for m in batch)
        acked += len(batch)
    for t in threads:
        t.join()
    assert not errors
    assert acked == 800 and box.stats.acked == 800 and box.depth() == 0


def test_closed_outbox_raises(path: Path) -> None:
    box = SqliteOutbox(path)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.pending(1)


def test_unusable_path_is_an_outbox_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OutboxError, match="cannot open outbox"):
        SqliteOutbox(tmp_path / "file" / "outbox.sqlite")


def test_a_drained_backlog_gives_its_disk_space_back(path: Path) -> None:
    box = SqliteOutbox(path, synchronous="normal")
    payload = random.Random(16).randbytes(4096)  # 4 KiB the outbox cannot deflate
    ids: list[int] = []
    for _ in range(20):
        ids += box.put_many([("factory/s/l/m/kpi", payload)] * 250)
    full = box.stats.file_bytes
    assert full > 20 * 2**20
    for start in range(0, len(ids), 500):
        box.ack(ids[start:start + 500])
    assert box.depth() == 0
    box.close()
    reopened = SqliteOutbox(path)
    after = reopened.stats.file_bytes
    assert after < 8 * 2**20, (full, after)  # at most the tolerated free pages remain
    reopened.close()


def test_an_outbox_file_from_before_incremental_vacuum_is_converted(path: Path) -> None:
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT "
                "NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL, size INTEGER NOT NULL)")
    old.execute("INSERT INTO outbox (topic, payload, created_ms, size) VALUES "
                "('t', x'01', 1800000000000, 2)")
    assert old.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    old.close()
    box = SqliteOutbox(path, clock=FakeClock())
    assert box.depth() == 1 and box.pending(5)[0].payload == b"\x01"
    box.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    check.close()

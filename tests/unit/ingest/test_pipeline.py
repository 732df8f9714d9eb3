"""At-least-once logic with a fake sink and a fake acker: ack after storage, in order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.ingest.config import IngestConfig, IngestSettings
from agent.ingest.deadletter import DeadLetter, DeadLetterFile, read_dead_letters
from agent.ingest.points import InfluxPoint
from agent.ingest.service import Handoff, Inbound, IngestPipeline, IngestService, _MqttBridge
from agent.ingest.sink import WriteError
from rules.errors import ConfigError, DeliveryError
from rules.types import KpiRecord

T0 = 1_795_680_000_000


def message(i: int, *, payload: bytes | None = None, generation: int = 0) -> Inbound:
    record = KpiRecord(site="s", line="l", machine=f"m{i}", window="1m", window_start_ms=T0,
                       window_end_ms=T0 + 60_000, parts_produced=i)
    body = payload if payload is not None else json.dumps(record.to_json_dict()).encode()
    return Inbound(topic=f"factory/s/l/m{i}/kpi", payload=body, mid=100 + i, qos=1,
                   generation=generation)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[str]]] = []


class FakeSink:
    """Fails according to ``decide(points)``; records every attempt in the shared log."""

    def __init__(self, log: Log,
                 decide: Callable[[Sequence[InfluxPoint]], Exception | None] | None = None
                 ) -> None:
        self.log = log
        self.decide = decide or (lambda points: None)
        self.stored: list[InfluxPoint] = []

    def write(self, points: Sequence[InfluxPoint]) -> None:
        err = self.decide(points)
        machines = [p.tags["machine"] for p in points]
        self.log.events.append(("write-fail" if err else "write", machines))
        if err is not None:
            raise err
        self.stored.extend(points)

    def close(self) -> None:
        pass


class FakeAcker:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.mids: list[int] = []

    def ack(self, messages: Sequence[Inbound]) -> None:
        self.mids.extend(m.mid for m in messages)
        self.log.events.append(("ack", [m.topic.split("/")[3] for m in messages]))


def settings(tmp_path: Path, **kw: object) -> IngestSettings:
    return IngestSettings.model_validate({
        "dead_letter_path": str(tmp_path / "dead.jsonl"), "retry_min_s": 0.01,
        "retry_max_s": 0.02, **kw})


@dataclass
class Rig:
    pipe: IngestPipeline
    sink: FakeSink
    acker: FakeAcker
    log: Log

    @property
    def events(self) -> list[tuple[str, list[str]]]:
        return self.log.events


def rig(tmp_path: Path, decide: Callable[[Sequence[InfluxPoint]], Exception | None]
        | None = None, **kw: object) -> Rig:
    log = Log()
    sink, acker = FakeSink(log, decide), FakeAcker(log)
    return Rig(IngestPipeline(settings(tmp_path, **kw), sink, acker), sink, acker, log)


async def until(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(100_000):
        if check():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_acks_only_after_the_write_and_in_arrival_order(tmp_path: Path) -> None:
    r = rig(tmp_path)
    batch = [message(i) for i in (3, 1, 2)]
    await r.pipe.process(batch)
    assert r.events == [("write", ["m3", "m1", "m2"]), ("ack", ["m3", "m1", "m2"])]
    assert r.acker.mids == [103, 101, 102]
    assert r.pipe.stats.written == 3 and r.pipe.stats.acked == 3 and r.pipe.stats.batches == 1
    assert r.pipe.stats.last_write_latency_s is not None


async def test_retry_holds_every_ack_until_the_write_succeeds(tmp_path: Path) -> None:
    failures = [WriteError("down", retryable=True), WriteError("HTTP 503", retryable=True,
                                                                status=503)]
    r = rig(tmp_path, lambda p: failures.pop(0) if failures else None)
    await r.pipe.process([message(1), message(2)])
    assert [e[0] for e in r.events] == ["write-fail", "write-fail", "write", "ack"]
    assert r.pipe.stats.retries == 2
    assert r.pipe.stats.influx_down_since is None
    assert r.pipe.stats.last_error == "HTTP 503"


async def test_no_ack_while_influxdb_stays_down(tmp_path: Path) -> None:
    down = True
    r = rig(
        tmp_path, lambda p: WriteError("down", retryable=True) if down else None)
    task = asyncio.create_task(r.pipe.process([message(1)]))
    try:
        await until(lambda: r.pipe.stats.retries >= 3)
        assert r.acker.mids == []
        assert r.pipe.stats.influx_down_since is not None
        down = False
        await asyncio.wait_for(task, 2)
    finally:
        task.cancel()
    assert r.acker.mids == [101]


async def test_unexpected_exception_is_retried_not_fatal(tmp_path: Path) -> None:
    failures: list[Exception] = [RuntimeError("bug in a library")]
    r = rig(tmp_path, lambda p: failures.pop(0) if failures else None)
    await r.pipe.process([message(1)])
    assert [e[0] for e in r.events] == ["write-fail", "write", "ack"]


async def test_http_400_bisects_and_dead_letters_only_the_bad_points(tmp_path: Path) -> None:
    bad = {"m2", "m5"}

    def decide(points: Sequence[InfluxPoint]) -> Exception | None:
        if any(p.tags["machine"] in bad for p in points):
            return WriteError("HTTP 400: partial write: field type conflict", retryable=False,
                              status=400)
        return None

    r = rig(tmp_path, decide)
    batch = [message(i) for i in range(8)]
    await r.pipe.process(batch)
    assert sorted(p.tags["machine"] for p in r.sink.stored) == ["m0", "m1", "m3", "m4", "m6", "m7"]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["topic"] for d in dead] == ["factory/s/l/m2/kpi", "factory/s/l/m5/kpi"]
    assert all("field type conflict" in d["reason"] for d in dead)
    assert r.acker.mids == [m.mid for m in batch]
    assert r.events[-1][0] == "ack"
    assert r.pipe.stats.dead_lettered == 2 and r.pipe.stats.written == 6


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_config_errors_hold_the_acks_and_retry_instead_of_dead_lettering(
    tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token or a missing database is an outage, not bad data: nothing is
    dead-lettered, the acks wait, and the cause is logged once, loudly."""
    failures = {"left": 5}

    def decide(points: Sequence[InfluxPoint]) -> Exception | None:
        if failures["left"]:
            failures["left"] -= 1
            return WriteError(f"InfluxDB refused the write: HTTP {status}: nope",
                              retryable=True, status=status)
        return None

    r = rig(tmp_path, decide)
    with caplog.at_level("DEBUG", logger="agent.ingest"):
        await r.pipe.process([message(i) for i in range(4)])
    assert [e[0] for e in r.events] == ["write-fail"] * 5 + ["write", "ack"]
    assert not (tmp_path / "dead.jsonl").exists() or not read_dead_letters(
        tmp_path / "dead.jsonl")
    assert r.pipe.stats.written == 4 and r.pipe.stats.dead_lettered == 0
    loud = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(loud) == 1 and f"HTTP {status}" in loud[0].getMessage()
    assert "REFUSES WRITES" in loud[0].getMessage()
    assert r.pipe.stats.influx_down_since is None


def test_status_classification() -> None:
    from agent.ingest.sink import classify_status

    assert all(classify_status(s) for s in (401, 403, 404, 429, 500, 503))
    assert not any(classify_status(s) for s in (400, 413, 422))
    assert WriteError("x", retryable=True, status=404).config_problem
    assert WriteError("x", retryable=False, status=413).bad_data


async def test_bad_payload_is_dead_lettered_and_the_rest_lands(tmp_path: Path) -> None:
    r = rig(tmp_path)
    batch = [message(1), message(2, payload=b'{"schema": "nope"}'), message(3),
             Inbound("factory/s/l/m4/status", b"{}", 7, 1)]
    await r.pipe.process(batch)
    assert [p.tags["machine"] for p in r.sink.stored] == ["m1", "m3"]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["topic"] for d in dead] == ["factory/s/l/m2/kpi", "factory/s/l/m4/status"]
    assert "key 'schema'" in dead[0]["reason"] and "factory/s/l/m2/kpi" in dead[0]["reason"]
    assert "'kpi' or 'alarm'" in dead[1]["reason"]
    assert r.acker.mids == [101, 102, 103, 7]


async def test_only_bad_payloads_means_no_write(tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.pipe.process([message(1, payload=b"x")])
    assert r.events == [("ack", ["m1"])]


async def test_dead_letter_failure_holds_the_acks(tmp_path: Path) -> None:
    class FlakyFile(DeadLetterFile):
        calls = 0

        def append(self, entries: Sequence[DeadLetter]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise DeliveryError("disk full")
            super().append(entries)

    log = Log()
    acker = FakeAcker(log)
    flaky = FlakyFile(tmp_path / "dead.jsonl")
    pipe = IngestPipeline(settings(tmp_path), FakeSink(log), acker, dead_letters=flaky)
    await pipe.process([message(1, payload=b"x")])
    assert flaky.calls == 2
    assert acker.mids == [101]
    assert len(read_dead_letters(flaky.path)) == 1


async def test_consume_batches_by_size_and_by_time(tmp_path: Path) -> None:
    r = rig(tmp_path, batch_size=3, flush_interval_s=0.05,
                                      flush_idle_s=0)
    handoff = Handoff(asyncio.get_running_loop(), 10)
    for i in range(7):
        handoff.put_nowait(message(i))
    task = asyncio.create_task(r.pipe.consume(handoff))
    try:
        await until(lambda: r.pipe.stats.acked >= 7)
        writes = [len(e[1]) for e in r.events if e[0] == "write"]
        assert writes == [3, 3, 1]
        handoff.put_nowait(message(8))
        await asyncio.sleep(0.01)
        assert r.pipe.stats.acked == 7  # waits for more until flush_interval_s
        await until(lambda: r.pipe.stats.acked >= 8)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert r.acker.mids == [100 + i for i in (*range(7), 8)]


async def test_handoff_is_bounded(tmp_path: Path) -> None:
    handoff = Handoff(asyncio.get_running_loop(), 2)
    handoff.put_nowait(message(1))
    handoff.put_nowait(message(2))
    with pytest.raises(asyncio.QueueFull):
        handoff.put_nowait(message(3))
    # a network thread waits while full, and gives up once the handoff is closed
    result: list[bool] = []
    thread_task = asyncio.create_task(asyncio.to_thread(
        lambda: result.append(handoff.put_from_thread(message(4)))))
    await asyncio.sleep(0.05)
    assert result == []
    assert (await handoff.get()).mid == 101
    await asyncio.wait_for(thread_task, 2)
    assert result == [True]
    await asyncio.sleep(0)  # let call_soon_threadsafe run
    assert handoff.qsize() == 2
    handoff.close()
    assert handoff.put_from_thread(message(5)) is False


def test_bridge_skips_acks_from_an_earlier_connection(tmp_path: Path) -> None:
    class FakeClient:
        def __init__(self) -> None:
            self.acks: list[tuple[int, int]] = []

        def ack(self, mid: int, qos: int) -> int:
            self.acks.append((mid, qos))
            return 0

    config = IngestConfig.model_validate({"ingest": {"client_id": "t"}})
    loop = asyncio.new_event_loop()
    try:
        bridge = _MqttBridge(config, Handoff(loop, 10), rig(tmp_path).pipe.stats,
                             lambda: None)
        fake = FakeClient()
        bridge.client = fake  # type: ignore[assignment]
        bridge._generation = 2
        bridge.ack([message(1, generation=1), message(2, generation=2),
                    Inbound("t/kpi", b"", 9, 0, 2), message(3, generation=2)])
        assert fake.acks == [(102, 1), (103, 1)]
    finally:
        loop.close()


async def test_dead_letters_keep_arrival_order(tmp_path: Path) -> None:
    def decide(points: Sequence[InfluxPoint]) -> Exception | None:
        if any(p.tags["machine"] == "m3" for p in points):
            return WriteError("HTTP 400: bad", retryable=False, status=400)
        return None

    r = rig(tmp_path, decide)
    await r.pipe.process([message(1), message(2), message(3), message(4, payload=b"x")])
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["topic"].split("/")[3] for d in dead] == ["m3", "m4"]
    assert r.acker.mids == [101, 102, 103, 104]


async def test_unset_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.delenv("NO_SUCH_INGEST_TOKEN", raising=False)
    config = IngestConfig.model_validate({
        "influxdb": {"token_env": "NO_SUCH_INGEST_TOKEN"},
        "ingest": {"dead_letter_path": str(tmp_path / "d.jsonl")}})
    with pytest.raises(ConfigError, match="NO_SUCH_INGEST_TOKEN"):
        await IngestService(config).run()

"""At-least-once logic with a fake sink and a fake acker: ack after storage, in order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.ingest.config import IngestConfig, IngestSettings
from agent.ingest.deadletter import DeadLetter, DeadLetterFile, read_dead_letters
from agent.ingest.points import FieldValue, InfluxPoint, PointKey
from agent.ingest.service import Handoff, Inbound, IngestPipeline, IngestService, _MqttBridge
from agent.ingest.sink import StoredFields, WriteError
from rules.errors import ConfigError, DeliveryError
from rules.types import AlarmEvent, KpiRecord

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
    """Fails according to ``decide(points)``; records every attempt in the shared log.

    Keeps points as InfluxDB does: by key, merging the fields of a point written again.
    """

    def __init__(self, log: Log,
                 decide: Callable[[Sequence[InfluxPoint]], Exception | None] | None = None
                 ) -> None:
        self.log = log
        self.decide = decide or (lambda points: None)
        self.stored: list[InfluxPoint] = []
        self.db: dict[PointKey, dict[str, FieldValue]] = {}
        self.deleted: list[PointKey] = []

    def read_stored(self, keys: Sequence[PointKey]) -> dict[PointKey, StoredFields]:
        return {k: dict(self.db[k]) for k in keys if k in self.db}

    def delete(self, keys: Sequence[PointKey]) -> None:
        self.log.events.append(("delete", [dict(k[1])["machine"] for k in keys]))
        for key in keys:
            self.db.pop(key, None)
            self.deleted.append(key)

    def write(self, points: Sequence[InfluxPoint]) -> None:
        err = self.decide(points)
        machines = [p.tags.get("machine") or p.tags["agent"] for p in points]
        self.log.events.append(("write-fail" if err else "write", machines))
        if err is not None:
            raise err
        self.stored.extend(points)
        for p in points:
            self.db.setdefault(p.key, {}).update(p.fields)

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
    assert "'_agent' as third level" in dead[1]["reason"]
    assert [d["code"] for d in dead] == ["invalid_payload", "invalid_topic"]
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


# --- the topic is the identity; whole-record replacement; no downgrade; agent status ----


def kpi_message(record: KpiRecord, mid: int, topic: str | None = None) -> Inbound:
    line = record.line or "_site"
    machine = record.machine or ("_line" if record.line else "_site")
    return Inbound(topic=topic or f"factory/{record.site}/{line}/{machine}/kpi",
                   payload=json.dumps(record.to_json_dict()).encode(), mid=mid, qos=1)


def window(machine: str | None = "m1", **kw: object) -> KpiRecord:
    base: dict[str, object] = {"site": "s", "line": "l", "machine": machine, "window": "1m",
                               "window_start_ms": T0, "window_end_ms": T0 + 60_000,
                               "observed_s": 60.0, "planned_busy_time_s": 60.0}
    base.update(kw)
    return KpiRecord(**base)  # type: ignore[arg-type]


def stored_fields(r: Rig, record: KpiRecord) -> dict[str, FieldValue]:
    from agent.ingest.points import record_to_point

    return r.sink.db[record_to_point(record).key]


async def test_payload_ids_must_be_the_topic_s(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A factory's credentials can only publish under its own site (the broker's ACL);
    a payload naming another site, line or machine there is refused, counted and logged."""
    r = rig(tmp_path)
    forged_site = kpi_message(window(site="hb-bd-02"), 1, topic="factory/demo-site/l/m1/kpi")
    forged_machine = kpi_message(window(machine="m9"), 2, topic="factory/s/l/m1/kpi")
    line_as_machine = kpi_message(window(machine=None), 3, topic="factory/s/l/m1/kpi")
    alarm = AlarmEvent(ts_ms=T0, site="other", line="l", machine="m1", rule="r",
                       state="raised")
    forged_alarm = Inbound("factory/s/l/m1/alarm", json.dumps(alarm.to_json_dict()).encode(),
                           4, 1)
    genuine = kpi_message(window(), 5)
    with caplog.at_level("WARNING", logger="agent.ingest"):
        await r.pipe.process([forged_site, forged_machine, line_as_machine, forged_alarm,
                              genuine])
    assert [p.tags["site"] for p in r.sink.stored] == ["s"]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["code"] for d in dead] == ["ids_differ_from_topic"] * 4
    assert r.pipe.stats.rejected == {"ids_differ_from_topic": 4}
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 4
    assert "factory/demo-site/l/m1/kpi" in lines[0] and "'hb-bd-02'" in lines[0]
    assert "site 'demo-site'" in lines[0]
    assert "machine 'm9'" in lines[1] and "machine None" in lines[2]
    assert r.acker.mids == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("topic", [
    "factory/_x/l/m1/kpi", "factory/s/_site/m1/kpi", "factory/s/l/m1/kpi/extra",
    "other/s/l/m1/kpi", "factory/s/l/m1/state", "factory/s//m1/kpi",
    "factory/s/_agent/a1/kpi",
])
async def test_topics_that_are_not_ids_are_refused(tmp_path: Path, topic: str) -> None:
    r = rig(tmp_path)
    await r.pipe.process([kpi_message(window(), 1, topic=topic)])
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["code"] for d in dead] == ["invalid_topic"]
    assert repr(topic) in dead[0]["reason"]
    assert r.sink.stored == []


async def test_a_rewrite_leaves_exactly_the_newer_record(tmp_path: Path) -> None:
    """InfluxDB merges fields; a field null in the newer version must not survive."""
    r = rig(tmp_path)
    old = window(oee=0.5, energy_kwh=2.0, cycle_time_mean_s=4.0, flags=("meter_reset",))
    new = window(oee=0.4, planned_busy_time_s=60.0)
    await r.pipe.process([kpi_message(old, 1)])
    await r.pipe.process([kpi_message(new, 2)])
    from agent.ingest.points import record_to_point

    assert stored_fields(r, new) == dict(record_to_point(new).fields)
    assert ("delete", ["m1"]) in r.events
    assert r.pipe.stats.replaced == 1
    # a plain replay of the same record needs no delete
    await r.pipe.process([kpi_message(new, 3)])
    assert [e for e in r.events if e[0] == "delete"] == [("delete", ["m1"])]


async def test_a_less_complete_record_is_refused_and_logged_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(tmp_path)
    machines = [f"m{i}" for i in range(4)]
    full = [window(m, energy_kwh=1.0, parts_produced=10, parts_good=10) for m in machines]
    await r.pipe.process([kpi_message(x, i) for i, x in enumerate(full)])
    partial = [window(m, observed_s=12.5, parts_produced=0) for m in machines]
    with caplog.at_level("WARNING", logger="agent.ingest"):
        await r.pipe.process([kpi_message(x, 10 + i) for i, x in enumerate(partial[:2])])
        await r.pipe.process([kpi_message(x, 20 + i) for i, x in enumerate(partial[2:])])
    for x in full:
        assert stored_fields(r, x)["parts_produced"] == 10
        assert stored_fields(r, x)["observed_s"] == 60.0
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["code"] for d in dead] == ["less_complete_than_stored"] * 4
    assert "observed 12.5 s of its window, the one stored 60 s" in dead[0]["reason"]
    assert r.pipe.stats.rejected == {"less_complete_than_stored": 4}
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1 and "less complete than the stored ones" in warnings[0]
    assert r.acker.mids[-4:] == [10, 11, 20, 21]


async def test_a_server_that_cannot_delete_refuses_instead_of_merging(tmp_path: Path) -> None:
    from agent.ingest.sink import DeleteUnsupported

    class NoDelete(FakeSink):
        def delete(self, keys: Sequence[PointKey]) -> None:
            raise DeleteUnsupported("InfluxDB 3 cannot delete a single point")

    log = Log()
    sink, acker = NoDelete(log), FakeAcker(log)
    pipe = IngestPipeline(settings(tmp_path), sink, acker)
    old = window(energy_kwh=2.0)
    await pipe.process([kpi_message(old, 1)])
    await pipe.process([kpi_message(window(), 2), kpi_message(window("m2"), 3)])
    from agent.ingest.points import record_to_point

    assert sink.db[record_to_point(old).key]["energy_kwh"] == 2.0
    assert [p.tags["machine"] for p in sink.stored] == ["m1", "m2"]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(d["code"], d["topic"]) for d in dead] == [
        ("cannot_replace_stored", "factory/s/l/m1/kpi")]
    assert acker.mids == [1, 2, 3]


async def test_a_failed_write_after_the_delete_is_retried_whole(tmp_path: Path) -> None:
    failures = [None, WriteError("down", retryable=True)]
    r = rig(tmp_path, lambda p: failures.pop(0) if failures else None)
    await r.pipe.process([kpi_message(window(energy_kwh=3.0), 1)])
    new = window()
    await r.pipe.process([kpi_message(new, 2)])
    assert [e[0] for e in r.events] == ["write", "ack", "delete", "write-fail", "write", "ack"]
    from agent.ingest.points import record_to_point

    assert stored_fields(r, new) == dict(record_to_point(new).fields)


async def test_status_messages_become_agent_status_points(tmp_path: Path) -> None:
    r = rig(tmp_path)
    online = {"state": "online", "agent_id": "a1", "version": "1.4.0",
              "started": "2026-11-26T08:00:00.000Z", "uptime_s": 30.0, "outbox_depth": 0}
    offline = {"state": "offline", "agent_id": "a1", "version": "1.4.0",
               "started": "2026-11-26T08:00:00.000Z", "reason": "connection lost"}
    topic = "factory/s/_agent/a1/status"
    await r.pipe.process([
        Inbound(topic, json.dumps(online).encode(), 1, 1, received_ms=T0 + 31_000),
        Inbound(topic, json.dumps(offline).encode(), 2, 1, received_ms=T0 + 95_000),
        Inbound(topic, b"", 3, 1, received_ms=T0 + 99_000),  # retained status cleared
        Inbound(topic, json.dumps({**online, "agent_id": "a2"}).encode(), 4, 1),
    ])
    points = [(p.measurement, dict(p.tags), dict(p.fields), p.time_ms) for p in r.sink.stored]
    assert points == [
        ("agent_status", {"site": "s", "agent": "a1"},
         {"state": "online", "version": "1.4.0", "started": "2026-11-26T08:00:00.000Z",
          "last_seen": "2026-11-26T08:00:31.000Z", "uptime_s": 30.0, "outbox_depth": 0},
         T0 + 31_000),
        ("agent_status", {"site": "s", "agent": "a1"},
         {"state": "offline", "version": "1.4.0", "started": "2026-11-26T08:00:00.000Z",
          "reason": "connection lost"}, T0 + 95_000),
    ]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["code"] for d in dead] == ["ids_differ_from_topic"]
    assert "agent 'a2'" in dead[0]["reason"] and "agent 'a1'" in dead[0]["reason"]
    assert r.pipe.stats.ignored == 1 and r.acker.mids == [1, 2, 3, 4]


def test_rejections_by_reason_on_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from agent.health import IngestStatus
    from agent.metrics import Registry

    stats = rig(tmp_path).pipe.stats
    stats.rejected.update({"ids_differ_from_topic": 3, "less_complete_than_stored": 2})
    stats.replaced = 4
    reg = Registry()
    IngestStatus(SimpleNamespace(stats=stats), clock=lambda: 0.0).collect(reg)
    fams = {f.name: f for f in text_string_to_metric_families(reg.render())}
    by_reason = {s.labels["reason"]: s.value for s in fams["edge_ingest_rejected"].samples}
    assert by_reason["ids_differ_from_topic"] == 3
    assert by_reason["less_complete_than_stored"] == 2
    assert by_reason["invalid_payload"] == 0  # every reason is exported, zero or not
    assert fams["edge_ingest_replaced"].samples[0].value == 4

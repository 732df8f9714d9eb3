"""The sample journal: the engine's input is durable before it is consumed, a checkpoint
truncates what it covers, and a restart after a crash reaches exactly the same state."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.config import load_agent_config
from agent.config.model import AgentConfig
from agent.outbox import SqliteOutbox
from agent.runtime import (
    ENGINE_STATE_KEY,
    JOURNAL_POS_KEY,
    Agent,
    decode_journal_entry,
    encode_journal_entry,
)
from agent.samplelog import OBSERVATION_DEVICE, observation_marker
from rules.engine import EngineOutput
from rules.types import Sample, rfc3339_to_ms

REPO = Path(__file__).resolve().parents[3]
T0 = 1_800_000_000_000  # a whole minute in epoch milliseconds


class Clock:
    """Wall clock for the agent under test, moved by the test."""

    def __init__(self, now_s: float) -> None:
        self.now = now_s

    def __call__(self) -> float:
        return self.now


def _config(tmp_path: Path) -> AgentConfig:
    raw = tomllib.loads((REPO / "deploy/examples/small-plant.toml").read_text())
    raw["agent"]["state_dir"] = str(tmp_path / "state")
    raw["kpi"]["windows"] = ["1m"]
    raw["kpi"]["lateness_s"] = 2
    raw.pop("calendar", None)
    # Only the devices the tests feed: the engine loop holds the watermark at a start until
    # every configured device has reported.
    raw["meters"] = [m for m in raw["meters"] if m["id"] in ("meter-01", "meter-02")]
    path = tmp_path / "agent.toml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(raw))
    return load_agent_config(path)


def _samples(start_ms: int, seconds: int) -> list[Sample]:
    """Two machines producing a part every 3 s, meters counting up every second."""
    out: list[Sample] = []
    for i in range(seconds):
        ts = start_ms + i * 1000
        for n, machine in enumerate(("cnc-01", "cnc-02")):
            if i == 0:
                out.append(Sample(ts, machine, "state", "producing"))
            if i % 3 == n:
                out.append(Sample(ts, machine, "parts_total", 100 + (ts - T0) // 3000))
        for meter in ("meter-01", "meter-02"):
            out.append(Sample(ts, meter, "energy_kwh", 1000.0 + (ts - T0) / 3_600_000 * 20))
    return out


def test_journal_entry_round_trip() -> None:
    samples = [Sample(T0, "cnc-01", "parts_total", 7), Sample(T0 + 1, "m", "energy_kwh", 0.1,
                                                             "uncertain", "server")]
    assert decode_journal_entry(encode_journal_entry(samples, T0 + 5, T0)) == (
        T0, samples, T0 + 5)
    assert decode_journal_entry(encode_journal_entry([], None)) == (None, [], None)
    with pytest.raises(ValueError, match="damaged"):
        decode_journal_entry('{"s": [[1]]}')


def test_outbox_journal_append_truncate_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = SqliteOutbox(path, synchronous="normal")
    seqs = [box.journal_append(f'{{"n": {i}}}', items=10) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert box.journal_items == 50
    assert [e.seq for e in box.journal_after(seqs[1])] == seqs[2:]
    # A checkpoint covering the first three entries removes them in the same transaction.
    box.put_many([("t/a", b"{}")], state={"k": "1"}, journal_upto=seqs[2])
    assert [e.seq for e in box.journal_after(0)] == seqs[3:]
    assert box.stats.journal_rows == 2 and box.journal_items == 20
    box.close()
    again = SqliteOutbox(path, synchronous="normal")
    assert [e.entry for e in again.journal_after(0)] == ['{"n": 3}', '{"n": 4}']
    assert again.journal_items == 20
    # Sequence numbers are never reused, even after the journal was emptied.
    again.put_many([], journal_upto=seqs[-1])
    assert again.journal_append("{}", 0) > seqs[-1]
    assert again.journal_clear() == 1 and again.journal_items == 0
    again.close()


async def _feed(agent: Agent, clock: Clock, batches: list[list[Sample]]) -> None:
    """Run the engine loop over ``batches`` (one per tick) and cancel it: a crash, not a stop."""
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    stopping = asyncio.Event()
    task = asyncio.create_task(agent._engine_loop(queue, stopping))
    for batch in batches:
        for s in batch:
            queue.put_nowait(s)
        clock.now = max(s.ts_ms for s in batch) / 1000 + 0.5
        want = sum(len(b) for b in batches[: batches.index(batch) + 1])
        while agent.samples_in < want:  # noqa: ASYNC110 - the loop has no event to offer
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _final(agent: Agent, end_ms: int) -> EngineOutput:
    return agent.engine.finish(end_ms)


async def test_restart_after_a_crash_replays_the_journal_exactly(tmp_path: Path) -> None:
    """A crash between checkpoints: restore + journal replay equals the uninterrupted engine."""
    cfg = _config(tmp_path)
    samples = _samples(T0, 150)
    batches = [samples[i:i + 7] for i in range(0, len(samples), 7)]

    clock = Clock(T0 / 1000)
    crashed = Agent(cfg, clock=clock)
    await _feed(crashed, clock, batches)
    expected_state = crashed.engine.snapshot()
    # The loop checkpointed when windows closed, but samples after the last checkpoint
    # exist only in the journal.
    assert crashed.outbox.journal_items > 0
    published = [m.payload for m in crashed.outbox.pending(10_000)]
    crashed.outbox._db = None  # drop the connection without a checkpoint: like kill -9

    restarted = Agent(cfg, clock=clock)
    assert restarted.restored
    assert restarted.engine.snapshot() == expected_state
    assert restarted.outbox.journal_items == 0  # the replay ended in a checkpoint
    assert [m.payload for m in restarted.outbox.pending(10_000)] == published
    restarted.outbox.close()


async def test_crash_before_a_checkpoint_wrote_its_output_replays_it(tmp_path: Path) -> None:
    """Windows closed by journaled input whose checkpoint never committed are produced on
    replay, once."""
    cfg = _config(tmp_path)
    clock = Clock(T0 / 1000)
    agent = Agent(cfg, clock=clock)
    seq = 0
    for batch in (_samples(T0, 70), _samples(T0 + 70_000, 60)):
        wm = max(s.ts_ms for s in batch) + 500
        seq = agent.outbox.journal_append(encode_journal_entry(batch, wm), len(batch))
    agent.outbox._db = None
    assert seq > 0

    reference = Agent(_config(tmp_path / "ref"), clock=clock)
    ref_records: list[Any] = []
    for batch in (_samples(T0, 70), _samples(T0 + 70_000, 60)):
        out = reference._apply(reference.engine, None, batch, max(s.ts_ms for s in batch) + 500)
        ref_records += out.records
    assert ref_records, "the input should close at least one window"

    restarted = Agent(cfg, clock=clock)
    stored = restarted.outbox.pending(10_000)
    assert len(stored) == len(ref_records)
    assert restarted.engine.snapshot() == reference.engine.snapshot()
    assert restarted.outbox.load_state(JOURNAL_POS_KEY) == str(seq)
    restarted.outbox.close()
    again = Agent(cfg, clock=clock)  # nothing left to replay: no second copy
    assert len(again.outbox.pending(10_000)) == len(ref_records)
    again.outbox.close()
    reference.outbox.close()


async def test_stop_writes_a_final_checkpoint(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    clock = Clock(T0 / 1000)
    agent = Agent(cfg, clock=clock)
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    stopping = asyncio.Event()
    for s in _samples(T0, 20):
        queue.put_nowait(s)
    clock.now = T0 / 1000 + 20
    stopping.set()
    await asyncio.wait_for(agent._engine_loop(queue, stopping), 30)
    assert agent.outbox.journal_items == 0
    assert agent.outbox.load_state(ENGINE_STATE_KEY) is not None
    state = agent.engine.snapshot()
    agent.outbox.close()
    restarted = Agent(cfg, clock=clock)
    assert restarted.engine.snapshot() == state
    restarted.outbox.close()


def test_unusable_checkpoint_discards_its_journal(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    box = SqliteOutbox(cfg.agent.state_dir / "outbox.sqlite")
    box.put_many([], state={ENGINE_STATE_KEY: '{"version": -1}', JOURNAL_POS_KEY: "0"})
    box.journal_append(encode_journal_entry(_samples(T0, 5), T0 + 6000), 5)
    box.close()
    agent = Agent(cfg)
    assert not agent.restored
    assert agent.outbox.journal_items == 0
    agent.outbox.close()


def _kpi_payloads(agent: Agent) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in agent.outbox.pending(10_000)
            if m.topic.endswith("/kpi")]


async def test_a_fresh_start_observes_from_the_clock_and_replays_exactly(
    tmp_path: Path,
) -> None:
    """No checkpoint: the engine observes from the agent's clock at the start. That start
    is checkpointed before any sample, so a kill -9 soon after replays exactly; an initial
    value dated an hour earlier counts from the start, and nothing earlier has a record."""
    cfg = _config(tmp_path)
    start_ms = T0 + 37_500
    clock = Clock(start_ms / 1000)
    record = tmp_path / "samples.jsonl"
    fresh = Agent(cfg, clock=clock, record_path=record)
    assert not fresh.restored and fresh.observing_from_ms == start_ms
    saved = fresh.outbox.load_state(ENGINE_STATE_KEY)
    assert saved is not None and json.loads(saved)["observe_from"] == start_ms

    initial = [Sample(T0 - 3_600_000, machine, "state", "producing")
               for machine in ("cnc-01", "cnc-02")]
    initial += [s for s in _samples(start_ms, 1) if s.signal != "state"]
    later = _samples(start_ms + 1_000, 120)
    batches = [initial] + [later[i:i + 9] for i in range(0, len(later), 9)]
    await _feed(fresh, clock, batches)
    expected_state = fresh.engine.snapshot()
    published = _kpi_payloads(fresh)
    fresh.outbox._db = None  # like kill -9

    again = Agent(cfg, clock=clock, record_path=record)
    assert again.restored and again.observing_from_ms is None
    assert again.engine.snapshot() == expected_state
    assert _kpi_payloads(again) == published
    again.outbox.close()

    assert published, "the samples should close windows"
    assert min(rfc3339_to_ms(p["window_end"]) for p in published) > start_ms
    first = [p for p in published if rfc3339_to_ms(p["window_start"]) == T0]
    assert len(first) == 2 + 1 + 1  # both machines, their line, the site
    for p in first:
        assert p["observed_s"] == 22.5 and "incomplete" in p["flags"]
    by_machine = {p["machine"]: p for p in first}
    assert by_machine["cnc-01"]["producing_time_s"] == 22.5
    # 112 at the start is a baseline, not 112 parts; the last count in the minute is 119.
    assert by_machine["cnc-01"]["parts_produced"] == 119 - 112
    whole = [p for p in published if rfc3339_to_ms(p["window_start"]) == T0 + 60_000]
    assert whole and all(p["observed_s"] == 60.0 for p in whole)

    lines = record.read_text().splitlines()
    assert json.loads(lines[0]) == observation_marker(start_ms)
    assert sum(OBSERVATION_DEVICE in line for line in lines) == 1


def test_an_unusable_checkpoint_starts_observing_afresh(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    box = SqliteOutbox(cfg.agent.state_dir / "outbox.sqlite")
    box.put_many([], state={ENGINE_STATE_KEY: '{"version": -1}', JOURNAL_POS_KEY: "0"})
    box.close()
    agent = Agent(cfg, clock=Clock(T0 / 1000))
    assert not agent.restored and agent.observing_from_ms == T0
    saved = agent.outbox.load_state(ENGINE_STATE_KEY)
    assert saved is not None and json.loads(saved)["observe_from"] == T0
    agent.outbox.close()

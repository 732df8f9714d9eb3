"""The production agent's asyncio runtime: collectors -> KPI engine -> outbox -> MQTT.

One TaskGroup owns every task. Start order follows the data backwards (the publisher
before the collectors) and the stop order forwards (collectors first, then a final
engine checkpoint, then a bounded drain of the outbox), so nothing accepted is lost.

Restart safety is exact, not approximate. Every batch of samples the engine consumes is
first appended to the sample journal beside the outbox (an append-only file, fsynced
at most every ``journal_sync_s`` and always before a commit of messages), together with
the watermark the engine is then advanced to. Output is stored as it is produced, with
the journal position it came from; the engine's snapshot is written every
:data:`CHECKPOINT_EVERY_S` (and at a stop), atomically with the journal position it
covers, and truncates the journal up to there. After a crash or a kill -9 the runtime
restores the snapshot and replays the journal after that position, reaching exactly the
state the engine had, before it takes any new sample; a power cut can take at most the
journal's last unsynced second, never input a stored message depends on. It then holds
the watermark until every configured device has reported again (or a grace period has
passed), so values that changed while the agent was down land in the right windows
instead of being dropped as late.

Without a usable checkpoint (a first start, a wiped or replaced disk) there is no
continuity to restore: the engine observes afresh from the agent's clock at the start
(:meth:`KpiEngine.observe_from`), so no record is made for time before it, a device's
initial value counts as found at the start whatever its source timestamp, and the first
counter and register readings are baselines. That start is checkpointed before the
first sample, so a crash right after it replays exactly; ``--record`` writes it into the
sample log as the observation marker. The watermark is held in the same way until every
device has reported its initial value.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent import __version__
from agent.config.build import engine_spec, make_collectors
from agent.config.model import AgentConfig
from agent.health import AgentStatus, HealthSnapshot, serve_health
from agent.logs import config_secrets, install_redaction
from agent.metrics import Registry
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.topics import alarm_topic, kpi_topic
from agent.outbox import Outbox, SqliteOutbox
from agent.reload import ReloadOutcome, rebuild_engine, reload_config
from agent.samplelog import SampleRecorder
from collectors.base import Collector
from rules.engine import EngineOutput, KpiEngine
from rules.power_state import PowerStateSpec
from rules.spec import EngineSpec
from rules.types import AlarmEvent, KpiRecord, Sample, ms_to_rfc3339

log = logging.getLogger(__name__)

ENGINE_STATE_KEY = "kpi-engine"
JOURNAL_POS_KEY = "kpi-engine-journal"
"""State key of the last journal sequence number the engine checkpoint covers."""
SAMPLE_QUEUE_SIZE = 50_000
BATCH_MAX = 10_000
TICK_S = 0.25
"""The engine loop's period: it takes what the collectors delivered once per tick (a
journal record, an engine pass), not once per notification, and closes windows on it."""
GC_THRESHOLDS = (5_000, 10, 10)
"""The cyclic garbage collector's thresholds while the agent runs. The engine holds each
sample until its slice is sealed, so nearly every sample outlives the young generations;
with the default (700, 10, 10) that promotion rate makes a full collection of the whole
heap every few seconds, a large share of the agent's CPU. A larger first threshold makes
full collections about ten times rarer; garbage cycles live a little longer."""
JOURNAL_EMITTED_KEY = "kpi-engine-emitted"
"""State key of the last journal sequence number whose output (records, alarms) is stored."""
CHECKPOINT_EVERY_S = 300.0
"""How often the engine's snapshot is written. Output is stored as it is produced, with
the journal position it came from; the snapshot only bounds the replay after a restart,
so it is written rarely: at 250 machines it is hundreds of kilobytes."""
JOURNAL_MAX_ITEMS = 300_000
"""Checkpoint early once the journal holds this many samples: it bounds replay time."""
RESTART_HOLD_S = 15.0
"""After a restore, the longest the watermark waits for every device to report again."""
DRAIN_ON_STOP_S = 5.0


def encode_journal_entry(
    samples: list[Sample], watermark_ms: int | None, before_ms: int | None = None
) -> str:
    """One journal entry: an optional earlier advance, the samples, then an advance.

    ``before_ms`` carries the watermark of ticks that had no samples (those are not
    journaled on their own, to keep an idle agent from writing four times a second).
    """
    # A Sample is a named tuple in to_row's field order: JSON writes it as that row.
    return json.dumps({"b": before_ms, "s": samples, "w": watermark_ms},
                      separators=(",", ":"))


def decode_journal_entry(text: str) -> tuple[int | None, list[Sample], int | None]:
    """The inverse of :func:`encode_journal_entry`; raises ValueError on a damaged entry."""
    try:
        data = json.loads(text)
        samples = [Sample.from_row(r) for r in data["s"]]
        before = None if data["b"] is None else int(data["b"])
        after = None if data["w"] is None else int(data["w"])
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"damaged journal entry: {err!r}") from err
    return before, samples, after


def encode_output(cfg: AgentConfig, out: EngineOutput) -> list[tuple[str, bytes]]:
    """The MQTT messages for an engine output: one per KPI record and per alarm event."""
    prefix = cfg.mqtt.prefix
    items: list[tuple[str, bytes]] = []
    for rec in out.records:
        payload = json.dumps(rec.to_json_dict(), separators=(",", ":")).encode()
        items.append((kpi_topic(prefix, rec.site, rec.line, rec.machine), payload))
    for alarm in out.alarms:
        payload = json.dumps(alarm.to_json_dict(), separators=(",", ":")).encode()
        items.append((alarm_topic(prefix, alarm.site, alarm.line, alarm.machine), payload))
    return items


class _SampleSource(Protocol):
    """What the engine loop reads: a :class:`SampleBuffer`, or an ``asyncio.Queue`` (a
    harness driving the loop; it is read as soon as a sample arrives)."""

    def empty(self) -> bool: ...

    def get_nowait(self) -> Sample: ...

    async def get(self) -> Sample: ...


class SampleBuffer:
    """The collectors' sink and the engine loop's input: a bounded buffer the loop empties
    once per tick.

    An ``asyncio.Queue`` costs a few microseconds per sample in ``put_nowait``, ``full``
    and ``get_nowait`` (and a wake-up of the consumer per notification); here a sample is
    one append and a batch one slice. ``put`` waits while the buffer is full: that is the
    back-pressure collectors rely on.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self._items: deque[Sample] = deque()
        self._room: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        """True while :meth:`put_nowait` would exceed the bound."""
        return len(self._items) >= self.maxsize

    def empty(self) -> bool:
        """Whether nothing waits for the engine."""
        return not self._items

    def put_nowait(self, sample: Sample, /) -> None:
        """Take one sample now; raises asyncio.QueueFull when full, as a queue does."""
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(sample)

    async def put(self, sample: Sample, /) -> None:
        """Take one sample, waiting while the buffer is full."""
        while len(self._items) >= self.maxsize:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()
        self._items.append(sample)

    def get_nowait(self) -> Sample:
        """The oldest sample; raises asyncio.QueueEmpty when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        sample = self._items.popleft()
        self._made_room()
        return sample

    def take(self, limit: int) -> list[Sample]:
        """Up to ``limit`` samples, oldest first, removed from the buffer."""
        items = self._items
        if len(items) <= limit:
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        if batch:
            self._made_room()
        return batch

    def _made_room(self) -> None:
        room = self._room
        if room is not None and len(self._items) < self.maxsize:
            self._room = None
            room.set()


async def _next_batch(source: SampleBuffer | _SampleSource) -> list[Sample]:
    """The next batch: what a :class:`SampleBuffer` holds now (the loop paces itself); from
    a queue, what arrived by the first sample or within :data:`TICK_S`."""
    if isinstance(source, SampleBuffer):
        return source.take(BATCH_MAX)
    batch: list[Sample] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TICK_S):
            batch.append(await source.get())
    while not source.empty() and len(batch) < BATCH_MAX:
        batch.append(source.get_nowait())
    return batch


def _tune_gc() -> Callable[[], None]:
    """Run with :data:`GC_THRESHOLDS`, and with what was built before the start (modules,
    config, the restored engine) frozen out of every collection; returns the undo."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore


def build_collectors(cfg: AgentConfig) -> list[Collector]:
    """Every collector the config asks for."""
    return make_collectors(cfg)


class Agent:
    """One running agent: owns the outbox, the engine, the collectors and the publisher."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        record_path: Path | None = None,
        on_output: Callable[[EngineOutput], None] | None = None,
        on_samples: Callable[[list[Sample]], None] | None = None,
        clock: Callable[[], float] = time.time,
        config_path: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.clock = clock
        self.on_output = on_output
        self.on_samples = on_samples
        self.record_path = record_path
        cfg.agent.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox: Outbox = SqliteOutbox(
            cfg.agent.state_dir / "outbox.sqlite",
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            synchronous=cfg.outbox.synchronous,
        )
        self.journal_seq = 0
        self.restored = False
        self.observing_from_ms: int | None = None
        """Where a fresh engine (no usable checkpoint) started observing; None if restored."""
        self.samples_in = 0
        self.records_out = 0
        self.engine = self._restore_engine()
        self.collectors = build_collectors(cfg)
        self.publisher = MqttPublisher(
            cfg.mqtt, self.outbox, site_id=cfg.site.id, agent_id=cfg.agent.id,
            version=__version__, drain_rate_per_s=cfg.outbox.drain_rate_per_s,
        )
        self.collector_tasks: dict[str, asyncio.Task[None]] = {}
        self._status = AgentStatus(self, tasks=self.collector_tasks, clock=clock)
        self._tg: asyncio.TaskGroup | None = None
        self._queue: SampleBuffer | None = None
        self._reload_lock = asyncio.Lock()

    def health_snapshot(self) -> HealthSnapshot:
        """Readiness for /readyz (the agent is the health endpoint's StatusProvider)."""
        return self._status.health_snapshot()

    def collect(self, registry: Registry) -> None:
        """Metrics for /metrics."""
        self._status.collect(registry)

    def _start_collector(self, collector: Collector) -> None:
        assert self._tg is not None and self._queue is not None
        self.collector_tasks[collector.name] = self._tg.create_task(
            collector.run(self._queue), name=f"collector-{collector.name}")

    def _restore_engine(self) -> KpiEngine:
        """The engine as it stood before the last stop or crash: checkpoint + journal; or,
        with nothing to continue, a fresh engine observing from now (checkpointed at once)."""
        spec = engine_spec(self.cfg)
        saved = self.outbox.load_state(ENGINE_STATE_KEY)
        pos_text = self.outbox.load_state(JOURNAL_POS_KEY)
        engine: KpiEngine | None = None
        if saved is not None:
            try:
                engine = KpiEngine.restore(spec, json.loads(saved))
            except (ValueError, KeyError, TypeError) as err:
                log.warning("could not restore the KPI engine's checkpoint (%s); "
                            "starting fresh", err)
        if engine is None and saved is not None:
            dropped = self.outbox.journal_clear()
            if dropped:
                log.warning("discarded %d sample journal entries that belong to the "
                            "unusable checkpoint", dropped)
            return self._fresh_engine(spec)
        self.restored = engine is not None
        if engine is None:
            engine = KpiEngine(spec)
        self.journal_seq = int(json.loads(pos_text)) if pos_text is not None else 0
        replayed = self._replay(engine)
        if self.restored or replayed:
            # A journal without a checkpoint is the input of a run that started before it
            # was written: its own samples are that run's observation.
            log.info("restored the KPI engine from its checkpoint (%d journal entries "
                     "replayed)", replayed)
            self.restored = True
            return engine
        return self._fresh_engine(spec)

    def _fresh_engine(self, spec: EngineSpec) -> KpiEngine:
        """An engine observing from the agent's clock now, checkpointed before any sample
        so that a crash right after the start replays exactly."""
        engine = KpiEngine(spec)
        start_ms = int(self.clock() * 1000)
        engine.observe_from(start_ms)
        # Live mode from the start (the clock, not sample times, closes windows), as it is
        # after a restore: else the watermark hold would not hold while devices connect.
        engine.advance(start_ms)
        self.observing_from_ms = start_ms
        self.outbox.put_many([], state={
            ENGINE_STATE_KEY: json.dumps(engine.snapshot(), separators=(",", ":")),
            JOURNAL_POS_KEY: str(self.journal_seq),
        })
        log.info("no KPI engine checkpoint to continue: observing from %s; earlier windows "
                 "get no record", ms_to_rfc3339(start_ms))
        return engine

    def _replay(self, engine: KpiEngine) -> int:
        """Apply the journal after the checkpoint to ``engine``; persist what it produces
        (the output of entries up to the stored output position is stored already)."""
        emitted_text = self.outbox.load_state(JOURNAL_EMITTED_KEY)
        emitted = int(json.loads(emitted_text)) if emitted_text is not None else 0
        entries = 0
        records: list[KpiRecord] = []
        alarms: list[AlarmEvent] = []
        while True:
            chunk = self.outbox.journal_after(self.journal_seq)
            if not chunk:
                break
            for entry in chunk:
                try:
                    before, samples, after = decode_journal_entry(entry.entry)
                except ValueError as err:
                    log.error("sample journal entry %d is damaged and skipped: %s",
                              entry.seq, err)
                    self.journal_seq = entry.seq
                    continue
                out = self._apply(engine, before, samples, after)
                if entry.seq > emitted:
                    records += out.records
                    alarms += out.alarms
                self.journal_seq = entry.seq
                entries += 1
        if entries:
            self.engine = engine
            self._checkpoint(EngineOutput(records, alarms))
        return entries

    @staticmethod
    def _apply(engine: KpiEngine, before: int | None, samples: list[Sample],
               watermark: int | None) -> EngineOutput:
        """One journal entry's effect on the engine, the same live and on replay."""
        records: list[KpiRecord] = []
        alarms: list[AlarmEvent] = []
        if before is not None:
            out = engine.advance(before)
            records += out.records
            alarms += out.alarms
        for sample in samples:
            engine.add(sample)
        if watermark is not None:
            out = engine.advance(watermark)
            records += out.records
            alarms += out.alarms
        return EngineOutput(records, alarms)

    def _checkpoint(self, out: EngineOutput) -> None:
        """Store the output's messages, the engine snapshot and the journal position in one
        transaction, and truncate the journal the snapshot now covers."""
        items = encode_output(self.cfg, out)
        state = {
            ENGINE_STATE_KEY: json.dumps(self.engine.snapshot(), separators=(",", ":")),
            JOURNAL_POS_KEY: str(self.journal_seq),
        }
        self.outbox.put_many(items, state=state, journal_upto=self.journal_seq)
        self.records_out += len(out.records)

    def _store_output(self, out: EngineOutput) -> None:
        """Store the output's messages with the journal position that produced them, no
        snapshot: a replay after a crash produces them again and skips them."""
        self.outbox.put_many(encode_output(self.cfg, out),
                             state={JOURNAL_EMITTED_KEY: str(self.journal_seq)})
        self.records_out += len(out.records)

    def _devices(self) -> set[str]:
        """The devices the watermark hold waits for: every machine and meter, but for a
        machine read only through a meter's power (it never reports under its own id)."""
        spec = self.engine.spec
        own = {device for device, _, _ in self.cfg.signals()}
        through_meter = {m.id for m in spec.machines if isinstance(m.state_from, PowerStateSpec)
                         and m.state_from.device != m.id and m.id not in own}
        return ({m.id for m in spec.machines} - through_meter) | {m.id for m in spec.meters}

    async def _engine_loop(self, queue: SampleBuffer | _SampleSource,
                           stopping: asyncio.Event) -> None:
        recorder = SampleRecorder(self.record_path) if self.record_path else None
        if recorder is not None and self.observing_from_ms is not None:
            recorder.observing(self.observing_from_ms)
        last_checkpoint = self.clock()
        # After a restore, hold the watermark until every device has reported again: the
        # first values after a restart carry the source timestamps of changes made while
        # the agent was down, and they belong in windows that must not close before. After
        # a fresh start likewise, so that no initial value (counted at the start) comes
        # after the start's slice was sealed.
        fresh = self.observing_from_ms is not None
        waiting = self._devices() if self.restored or fresh else set()
        hold_until = time.monotonic() + RESTART_HOLD_S
        if waiting:
            log.info("holding the KPI watermark until %d devices report%s (at most "
                     "%.0f s)", len(waiting), "" if fresh else " again", RESTART_HOLD_S)
        pending_wm: int | None = None
        try:
            while True:
                batch = await _next_batch(queue)
                if waiting:
                    waiting.difference_update(s.device for s in batch)
                    if waiting and time.monotonic() >= hold_until:
                        log.warning("devices %s did not report within %.0f s of the restart; "
                                    "closing windows without them", sorted(waiting),
                                    RESTART_HOLD_S)
                        waiting.clear()
                now = self.clock()
                watermark = None if waiting else int(now * 1000)
                if self.outbox.journal_sync_due:  # the group commit's fsync, off the loop
                    await asyncio.to_thread(self.outbox.journal_sync)
                if batch:
                    # In the journal before the engine sees it: the engine's input log. An
                    # append is a write to the operating system, no fsync (group commit).
                    self.journal_seq = self.outbox.journal_append(
                        encode_journal_entry(batch, watermark, pending_wm), len(batch))
                    out = self._apply(self.engine, pending_wm, batch, watermark)
                    pending_wm = None
                else:
                    out = self._apply(self.engine, None, batch, watermark)
                    if watermark is not None:
                        pending_wm = watermark
                self.samples_in += len(batch)
                if self.on_samples is not None and batch:
                    self.on_samples(batch)
                if recorder is not None:
                    recorder.write(batch)
                due = (now - last_checkpoint >= CHECKPOINT_EVERY_S
                       or self.outbox.journal_items >= JOURNAL_MAX_ITEMS)
                if due:
                    await self._persist(out)
                    pending_wm = None
                    last_checkpoint = now
                elif out.records or out.alarms:
                    if pending_wm is not None:
                        # Output of an advance without samples: journal the advance, so a
                        # replay reproduces this output at the position it is stored with.
                        self.journal_seq = self.outbox.journal_append(
                            encode_journal_entry([], pending_wm), 0)
                        pending_wm = None
                    await self._persist(out, snapshot=False)
                if stopping.is_set() and queue.empty():
                    await self._persist(EngineOutput([], []))
                    log.info("final KPI engine checkpoint written")
                    return
                if isinstance(queue, SampleBuffer) and len(batch) < BATCH_MAX:
                    # One pass per tick; a full batch means more waits: take it at once.
                    await asyncio.sleep(TICK_S)
        finally:
            if recorder is not None:
                recorder.close()

    async def _persist(self, out: EngineOutput, *, snapshot: bool = True) -> None:
        """Checkpoint, or store the output alone (in a worker thread: an fsync must not
        stall the event loop)."""
        await asyncio.to_thread(self._checkpoint if snapshot else self._store_output, out)
        if out.records or out.alarms:
            self.publisher.notify()
        if self.on_output is not None and (out.records or out.alarms):
            self.on_output(out)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down in order within a bounded time."""
        queue = SampleBuffer(SAMPLE_QUEUE_SIZE)
        stopping = asyncio.Event()
        restore_gc = _tune_gc()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg, self._queue = tg, queue
                publisher = tg.create_task(self.publisher.run(), name="mqtt-publisher")
                for collector in self.collectors:
                    self._start_collector(collector)
                engine = tg.create_task(self._engine_loop(queue, stopping), name="kpi-engine")
                health = None
                if self.cfg.health.enabled:
                    health = tg.create_task(serve_health(
                        self.cfg.health.host, self.cfg.health.port, self), name="health")
                await stop.wait()
                log.info("stopping: collectors first, then a final checkpoint and outbox drain")
                async with self._reload_lock:  # a reload in progress finishes first
                    for task in self.collector_tasks.values():
                        task.cancel()
                stopping.set()
                await engine
                await self._drain(DRAIN_ON_STOP_S)
                publisher.cancel()
                if health is not None:
                    health.cancel()
        finally:
            self._tg = None
            restore_gc()
            self.outbox.close()

    def request_reload(self) -> None:
        """SIGHUP handler (runs on the loop): reload in a task of the group, never raising."""
        if self._tg is None or self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        self._tg.create_task(self._reload_safely(self.config_path), name="reload")

    async def _reload_safely(self, path: Path) -> None:
        try:
            await self.reload(path)
        except Exception:
            log.exception("reload failed; the running config stays in force")

    async def reload(self, path: Path) -> ReloadOutcome:
        """Apply a changed config file: changed sources reconnect, unchanged machines keep
        their open windows; an invalid or unappliable file leaves the running one in force."""
        async with self._reload_lock:
            outcome = await reload_config(path, self.cfg)
            plan, new = outcome.plan, outcome.config
            if not outcome.applicable or plan is None:
                failed = outcome.errors or (plan is not None and not plan.accepted)
                (log.error if failed else log.info)("%s", outcome.message)
                return outcome
            try:  # build first: a missing password_env must not leave things half-applied
                fresh = [c for c in build_collectors(new) if c.name in plan.sources_to_start]
            except ValueError as err:
                log.error("reload of %s failed; the running config stays in force: %s",
                          path, err)
                return ReloadOutcome(config=self.cfg, plan=plan, message=str(err))
            # Synchronous from here to the checkpoint: no sample meets a half-swapped engine,
            # and the checkpoint is in the new plant's shape should the agent crash next.
            if plan.engine_changed:
                self.engine = rebuild_engine(self.engine, engine_spec(new), plan,
                                             now_ms=int(self.clock() * 1000))
            self.cfg = new
            self._checkpoint(EngineOutput([], []))
            stopped = [self.collector_tasks.pop(name) for name in plan.sources_to_stop
                       if name in self.collector_tasks]
            for task in stopped:
                task.cancel()
            await asyncio.gather(*stopped, return_exceptions=True)
            gone = set(plan.sources_to_stop)
            self.collectors = [c for c in self.collectors if c.name not in gone]
            for collector in fresh:
                self.collectors.append(collector)
                self._start_collector(collector)
            install_redaction(config_secrets(new))
            log.info("%s", outcome.message)
            return outcome

    async def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # Polls: the outbox has no "drained" signal, and this runs once, at shutdown.
        while self.outbox.depth() and self.publisher.connected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def status(self) -> dict[str, Any]:
        """Counters for the demo view and health endpoints."""
        return {
            "samples_in": self.samples_in,
            "records_out": self.records_out,
            "outbox_depth": self.outbox.depth(),
            "broker_connected": self.publisher.connected,
        }

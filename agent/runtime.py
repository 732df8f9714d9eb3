"""The production agent's asyncio runtime: collectors -> KPI engine -> outbox -> MQTT.

One TaskGroup owns every task. Start order follows the data backwards (the publisher
before the collectors) and the stop order forwards (collectors first, then a final
engine checkpoint, then a bounded drain of the outbox), so nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config.build import engine_spec, modbus_specs, opcua_specs
from agent.config.model import AgentConfig
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.topics import alarm_topic, kpi_topic
from agent.outbox import SqliteOutbox
from agent.samplelog import SampleRecorder
from collectors.base import Collector
from collectors.modbus import ModbusCollector
from collectors.opcua import OpcUaCollector
from rules.engine import EngineOutput, KpiEngine
from rules.types import Sample

log = logging.getLogger(__name__)

ENGINE_STATE_KEY = "kpi-engine"
SAMPLE_QUEUE_SIZE = 50_000
TICK_S = 0.25
CHECKPOINT_EVERY_S = 5.0
DRAIN_ON_STOP_S = 5.0


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


def build_collectors(cfg: AgentConfig) -> list[Collector]:
    """Every collector the config asks for."""
    out: list[Collector] = [OpcUaCollector(spec) for spec in opcua_specs(cfg)]
    out += [ModbusCollector(spec) for spec in modbus_specs(cfg)]
    return out


class Agent:
    """One running agent: owns the outbox, the engine, the collectors and the publisher."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        record_path: Path | None = None,
        on_output: Callable[[EngineOutput], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_output = on_output
        self.record_path = record_path
        cfg.agent.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = SqliteOutbox(
            cfg.agent.state_dir / "outbox.sqlite",
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            synchronous=cfg.outbox.synchronous,
        )
        self.engine = self._restore_engine()
        self.collectors = build_collectors(cfg)
        self.publisher = MqttPublisher(
            cfg.mqtt, self.outbox, site_id=cfg.site.id, agent_id=cfg.agent.id,
            version=__version__, drain_rate_per_s=cfg.outbox.drain_rate_per_s,
        )
        self.samples_in = 0
        self.records_out = 0

    def _restore_engine(self) -> KpiEngine:
        spec = engine_spec(self.cfg)
        saved = self.outbox.load_state(ENGINE_STATE_KEY)
        if saved is None:
            return KpiEngine(spec)
        try:
            engine = KpiEngine.restore(spec, json.loads(saved))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("could not restore the KPI engine's checkpoint (%s); starting fresh", err)
            return KpiEngine(spec)
        log.info("restored the KPI engine from its checkpoint")
        return engine

    def _persist(self, out: EngineOutput) -> None:
        items = encode_output(self.cfg, out)
        state = {ENGINE_STATE_KEY: json.dumps(self.engine.snapshot(), separators=(",", ":"))}
        self.outbox.put_many(items, state=state)
        self.records_out += len(out.records)
        if items:
            self.publisher.notify()
        if self.on_output is not None and (out.records or out.alarms):
            self.on_output(out)

    async def _engine_loop(self, queue: asyncio.Queue[Sample], stopping: asyncio.Event) -> None:
        recorder = SampleRecorder(self.record_path) if self.record_path else None
        last_checkpoint = self.clock()
        try:
            while True:
                batch: list[Sample] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        batch.append(await queue.get())
                while not queue.empty() and len(batch) < 10_000:
                    batch.append(queue.get_nowait())
                for sample in batch:
                    self.engine.add(sample)
                self.samples_in += len(batch)
                if recorder is not None:
                    recorder.write(batch)
                now = self.clock()
                out = self.engine.advance(int(now * 1000))
                if out.records or out.alarms or now - last_checkpoint >= CHECKPOINT_EVERY_S:
                    self._persist(out)
                    last_checkpoint = now
                if stopping.is_set() and queue.empty():
                    return
        finally:
            if recorder is not None:
                recorder.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down in order within a bounded time."""
        queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=SAMPLE_QUEUE_SIZE)
        stopping = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                publisher = tg.create_task(self.publisher.run(), name="mqtt-publisher")
                sources = [tg.create_task(c.run(queue), name=f"collector-{c.name}")
                           for c in self.collectors]
                engine = tg.create_task(self._engine_loop(queue, stopping), name="kpi-engine")
                await stop.wait()
                log.info("stopping: collectors first, then a final checkpoint and outbox drain")
                for task in sources:
                    task.cancel()
                stopping.set()
                await engine
                await self._drain(DRAIN_ON_STOP_S)
                publisher.cancel()
        finally:
            self.outbox.close()

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

"""AgentStatus and IngestStatus over typed fakes of the seams they read.

The fakes implement the Protocols of ``agent.health.status`` with the real stats types,
so a counter the providers read but a part does not offer shows up here as it would in
the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.parser import text_string_to_metric_families

from agent.health import AgentStatus, AgentView, HealthSnapshot, IngestStatus, IngestView
from agent.health.http import ProviderCollector
from agent.health.status import (
    EngineView,
    OutboxView,
    PublisherView,
    SourceView,
    StatusProvider,
    TaskView,
)
from agent.ingest.deadletter import REJECT_CODES
from agent.ingest.service import IngestStats
from agent.metrics import Registry
from agent.mqtt.publisher import PublisherStats
from agent.outbox import OutboxStats
from collectors.base import CollectorStats, DeviceHealth

NOW = 1_735_689_600.0  # 2025-01-01T00:00:00Z


@dataclass
class Source:
    name: str
    stats: CollectorStats


@dataclass
class Engine:
    stats: Mapping[str, int]


@dataclass
class Box:
    stats: OutboxStats

    def depth(self) -> int:
        return self.stats.depth


@dataclass
class Publisher:
    connected: bool
    stats: PublisherStats


@dataclass
class Task:
    finished: bool = False

    def done(self) -> bool:
        return self.finished


@dataclass
class Agent:
    cfg: Any
    collectors: Sequence[SourceView]
    engine: EngineView
    outbox: OutboxView
    publisher: PublisherView


@dataclass
class Ingest:
    stats: IngestStats = field(default_factory=IngestStats)


def agent() -> Agent:
    plc = CollectorStats(name="plc", connected=True, reconnects=1)
    plc.devices["cnc-01"] = DeviceHealth("cnc-01", connected=True, samples=7, clock_skew=2,
                                         last_sample_ms=int((NOW - 4) * 1000))
    meters = CollectorStats(name="meters", connected=False)
    meters.devices["meter-01"] = DeviceHealth("meter-01", errors=5,
                                              failing_since_ms=int((NOW - 90) * 1000))
    return Agent(
        cfg=SimpleNamespace(site=SimpleNamespace(id="site-a"), agent=SimpleNamespace(id="edge-1")),
        collectors=[Source("plc", plc), Source("meters", meters)],
        engine=Engine({"samples": 7, "windows_closed": 1, "records": 3, "alarms": 0,
                       "late_dropped": 0, "ignored_unknown": 1}),
        outbox=Box(OutboxStats(enqueued=3, acked=1, dropped_full=0, dropped_age=2, depth=2,
                               bytes=512, file_bytes=8192)),
        publisher=Publisher(True, PublisherStats(published=2, acked=1, inflight=1,
                                                 reconnects=0, last_error=None,
                                                 last_publish_latency_s=None, refused=1)),
    )


def scrape(provider: StatusProvider) -> dict[str, Any]:
    reg = Registry()
    provider.collect(reg)
    return {f.name: f for f in text_string_to_metric_families(reg.render())}


def sample(fams: dict[str, Any], family: str, **labels: str) -> float:
    for s in fams[family].samples:
        if s.labels == labels:
            return float(s.value)
    raise AssertionError(f"no {family} sample with {labels}")


def test_the_fakes_are_what_the_protocols_ask_for() -> None:
    view: AgentView = agent()
    tasks: Mapping[str, TaskView] = {"plc": Task(), "meters": Task()}
    ingest: IngestView = Ingest()
    assert AgentStatus(view, tasks=tasks).health_snapshot().ready
    assert isinstance(IngestStatus(ingest).health_snapshot(), HealthSnapshot)


def test_agent_readiness_and_info() -> None:
    a = agent()
    snap = AgentStatus(a, tasks={"plc": Task(), "meters": Task()}).health_snapshot()
    assert snap.ready
    assert [(c.name, c.detail) for c in snap.checks] == [
        ("broker", "connected"), ("collectors", "2 running"),
        ("sources", "1/2 connected; down: meters"), ("signals", "0 ok"),
    ]
    assert snap.to_json()["info"] == {"site": "site-a", "agent": "edge-1", "outbox_depth": 2}
    a.publisher = Publisher(False, PublisherStats(0, 0, 0, 0, None, None))
    snap = AgentStatus(a, tasks={"plc": Task(), "meters": Task(finished=True)}).health_snapshot()
    assert snap.reasons == ["broker: not connected (no connection yet)",
                            "collectors: not running: meters"]


def test_agent_metrics_read_every_part() -> None:
    fams = scrape(AgentStatus(agent(), clock=lambda: NOW))
    plc = {"source": "plc", "device": "cnc-01"}
    meter = {"source": "meters", "device": "meter-01"}
    assert sample(fams, "edge_agent_device_clock_skew", **plc) == 2
    assert sample(fams, "edge_agent_device_last_sample_age_seconds", **plc) == 4
    assert sample(fams, "edge_agent_device_failing_seconds", **meter) == 90
    assert sample(fams, "edge_agent_device_errors", **meter) == 5
    assert sample(fams, "edge_agent_source_reconnects", source="plc") == 1
    assert sample(fams, "edge_agent_engine_ignored", reason="unknown") == 1
    assert sample(fams, "edge_agent_outbox_dropped", reason="age") == 2
    assert sample(fams, "edge_agent_mqtt_refused") == 1
    assert sample(fams, "edge_agent_mqtt_inflight") == 1
    # no latency before the first PUBACK: absent, not a made-up 0
    assert "edge_agent_mqtt_publish_latency_seconds" not in fams
    assert sample(fams, "edge_agent_info", version=fams["edge_agent_info"].samples[0]
                  .labels["version"], site="site-a", agent="edge-1") == 1


def test_agent_metric_families_and_types_stay_as_they_are() -> None:
    a = agent()
    a.publisher = Publisher(True, PublisherStats(1, 1, 0, 0, None, 0.5))
    fams = scrape(AgentStatus(a, clock=lambda: NOW))
    assert {name: f.type for name, f in fams.items()} == {
        "edge_agent_info": "gauge",
        "edge_agent_source_connected": "gauge",
        "edge_agent_source_reconnects": "counter",
        "edge_agent_source_overflows": "counter",
        "edge_agent_source_signals": "gauge",
        "edge_agent_device_connected": "gauge",
        "edge_agent_device_samples": "counter",
        "edge_agent_device_errors": "counter",
        "edge_agent_device_last_sample_age_seconds": "gauge",
        "edge_agent_device_clock_skew": "counter",
        "edge_agent_device_failing_seconds": "gauge",
        "edge_agent_engine_samples": "counter",
        "edge_agent_engine_late_dropped": "counter",
        "edge_agent_windows_closed": "counter",
        "edge_agent_kpi_records": "counter",
        "edge_agent_alarm_events": "counter",
        "edge_agent_engine_ignored": "counter",
        "edge_agent_outbox_depth": "gauge",
        "edge_agent_outbox_bytes": "gauge",
        "edge_agent_outbox_file_bytes": "gauge",
        "edge_agent_outbox_enqueued": "counter",
        "edge_agent_outbox_dropped": "counter",
        "edge_agent_mqtt_connected": "gauge",
        "edge_agent_mqtt_published": "counter",
        "edge_agent_mqtt_acked": "counter",
        "edge_agent_mqtt_refused": "counter",
        "edge_agent_mqtt_reconnects": "counter",
        "edge_agent_mqtt_inflight": "gauge",
        "edge_agent_mqtt_publish_latency_seconds": "gauge",
    }


def test_ingest_metrics_export_every_counter_and_every_reject_code() -> None:
    stats = IngestStats(received=9, written=7, dead_lettered=2, replaced=1, ignored=1,
                        acked=9, retries=3, batches=2, max_write_latency_s=0.75,
                        rejected={"invalid_payload": 2}, connected=True)
    fams = scrape(IngestStatus(Ingest(stats), clock=lambda: NOW))
    assert {name: sample(fams, name) for name in (
        "edge_ingest_received", "edge_ingest_points_written", "edge_ingest_dead_lettered",
        "edge_ingest_acked", "edge_ingest_write_errors", "edge_ingest_batches",
        "edge_ingest_replaced", "edge_ingest_ignored", "edge_ingest_mqtt_connected",
        "edge_ingest_write_latency_max_seconds", "edge_ingest_influxdb_down_seconds",
    )} == {
        "edge_ingest_received": 9, "edge_ingest_points_written": 7,
        "edge_ingest_dead_lettered": 2, "edge_ingest_acked": 9,
        "edge_ingest_write_errors": 3, "edge_ingest_batches": 2, "edge_ingest_replaced": 1,
        "edge_ingest_ignored": 1, "edge_ingest_mqtt_connected": 1,
        "edge_ingest_write_latency_max_seconds": 0.75, "edge_ingest_influxdb_down_seconds": 0,
    }
    by_reason = {s.labels["reason"]: s.value for s in fams["edge_ingest_rejected"].samples}
    assert set(by_reason) == set(REJECT_CODES)
    assert by_reason["invalid_payload"] == 2
    # no batch written yet: no latest latency
    assert "edge_ingest_write_latency_seconds" not in fams


def test_ingest_readiness_follows_broker_and_influxdb() -> None:
    ingest = Ingest(IngestStats(connected=False))
    status = IngestStatus(ingest, clock=lambda: NOW)
    assert status.health_snapshot().reasons == ["broker: not connected"]
    ingest.stats = IngestStats(connected=True, influx_down_since=NOW - 12)
    assert status.health_snapshot().reasons == ["influxdb: writes failing for 12 s"]
    ingest.stats = IngestStats(connected=True)
    assert status.health_snapshot().ready


def test_provider_collector_hands_prometheus_client_the_families_of_one_scrape() -> None:
    calls: list[Registry] = []

    @dataclass
    class Counting:
        def health_snapshot(self) -> HealthSnapshot:
            return HealthSnapshot()

        def collect(self, registry: Registry) -> None:
            calls.append(registry)
            registry.gauge("g", "help").set(len(calls))

    collector = ProviderCollector(Counting())
    first = list(collector.collect())
    second = list(collector.collect())
    assert all(isinstance(f, PromMetric) for f in first + second)
    assert [f.samples[0].value for f in first + second] == [1, 2]
    assert calls[0] is not calls[1]  # a fresh registry per scrape: nothing carries over

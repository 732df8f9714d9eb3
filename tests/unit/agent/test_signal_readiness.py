"""Readiness and the per-source signal metric read the collectors' signal statuses: an
unresolved signal (a config mistake) makes the agent unready, named by its config place;
a failing one (an outage) does not."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.config.model import AgentConfig
from agent.health.status import (
    READY_NAMES_MAX,
    AgentStatus,
    collector_metrics,
    signal_place,
)
from agent.metrics import Registry
from agent.mqtt.publisher import PublisherStats
from agent.outbox import OutboxStats
from collectors.base import CollectorStats, SignalStatus

REPO = Path(__file__).resolve().parents[3]
CFG = AgentConfig.model_validate(
    tomllib.loads((REPO / "agent/examples/simulators.toml").read_text()))


@dataclass
class Source:
    name: str
    stats: CollectorStats


@dataclass
class Box:
    stats: OutboxStats

    def depth(self) -> int:
        return 0


@dataclass
class Publisher:
    connected: bool
    stats: PublisherStats


@dataclass
class Engine:
    stats: dict[str, int]


@dataclass
class Agent:
    cfg: Any
    collectors: list[Source]
    engine: Engine
    outbox: Box
    publisher: Publisher


def _agent(*sources: CollectorStats) -> Agent:
    return Agent(CFG, [Source(s.name, s) for s in sources], Engine({}),
                 Box(OutboxStats(0, 0, 0, 0, 0, 0, 0)),
                 Publisher(True, PublisherStats(0, 0, 0, 0, None, None)))


def _stats(name: str, **signals: SignalStatus) -> CollectorStats:
    stats = CollectorStats(name, connected=True)
    for key, status in signals.items():
        device, _, signal = key.partition("__")
        stats.signals[(device.replace("_", "-"), signal)] = status
    return stats


def test_signal_places_are_the_config_file_s() -> None:
    assert signal_place(CFG, "cnc-02", "parts_total") == 'machines[1] "cnc-02": signals.parts_total'
    assert signal_place(CFG, "meter-01", "voltage_l1") == (
        'meters[0] "meter-01": preset (voltage_l1)')
    assert signal_place(CFG, "meter-03", "power_kw") == 'meters[2] "meter-03": signals.power_kw'
    assert signal_place(CFG, "ghost", "x") == "ghost.x"


def test_an_unresolved_signal_makes_the_agent_unready_naming_it() -> None:
    plc = _stats("cnc-opcua", cnc_01__state=SignalStatus("ok"),
                 cnc_02__parts_total=SignalStatus("unresolved", "browse path not found"))
    meters = _stats("meters", meter_03__energy_kwh=SignalStatus(
        "unresolved", "holding 2304+2 unit 3: exception response 2 (illegal data address)"))
    snap = AgentStatus(_agent(plc, meters)).health_snapshot()
    assert not snap.ready
    assert snap.reasons == [
        'signals: 2 unresolved: machines[1] "cnc-02": signals.parts_total (browse path not '
        'found); meters[2] "meter-03": signals.energy_kwh (holding 2304+2 unit 3: exception '
        "response 2 (illegal data address))"]


def test_failing_and_pending_signals_leave_the_agent_ready() -> None:
    plc = _stats("cnc-opcua", cnc_01__state=SignalStatus("ok"),
                 cnc_02__state=SignalStatus("failing", "timeout"),
                 cnc_03__state=SignalStatus("pending"))
    snap = AgentStatus(_agent(plc)).health_snapshot()
    assert snap.ready
    assert snap.to_json()["checks"]["signals"] == {  # type: ignore[index]
        "ok": True, "detail": "1 ok, 1 pending, 1 failing"}


def test_a_long_list_of_unresolved_signals_is_cut() -> None:
    plc = CollectorStats("cnc-opcua", connected=True)
    for i in range(READY_NAMES_MAX + 5):
        plc.signals[(f"m{i:03d}", "state")] = SignalStatus("unresolved")
    (reason,) = AgentStatus(_agent(plc)).health_snapshot().reasons
    assert reason.startswith(f"signals: {READY_NAMES_MAX + 5} unresolved: m000.state; ")
    assert reason.endswith("; and 5 more")


def test_the_metric_counts_each_status_per_source() -> None:
    plc = _stats("cnc-opcua", cnc_01__state=SignalStatus("ok"),
                 cnc_02__state=SignalStatus("ok"),
                 cnc_02__parts_total=SignalStatus("unresolved", "x"))
    registry = Registry()
    collector_metrics(registry, [Source("cnc-opcua", plc)], 0.0)
    (family,) = [f for f in text_string_to_metric_families(registry.render())
                 if f.name == "edge_agent_source_signals"]
    assert family.type == "gauge"
    assert {s.labels["status"]: s.value for s in family.samples} == {
        "ok": 2, "pending": 0, "failing": 0, "unresolved": 1}

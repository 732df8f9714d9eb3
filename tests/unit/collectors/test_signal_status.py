"""Every configured signal's status in the collectors' stats (pending, ok, failing,
unresolved), which readiness, the per-source metric and ``edge-agent test`` read, and the
raw values commissioning sees through ``raw_tap``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from fake_modbus import FakeModbusLink, collect_until, run_virtual

from collectors.base import CollectorStats, SignalStatus
from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
from collectors.modbus_link import Reply
from collectors.opcua.clock import ClockSkew
from collectors.opcua.convert import SampleConverter
from collectors.opcua.spec import OpcUaTag

T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


class HoleyLink(FakeModbusLink):
    """A device that lacks some registers: a read covering one is refused with
    exception 2 (illegal data address), as real meters do."""

    def __init__(self, missing: set[tuple[int, str, int]], **kw: Any) -> None:
        super().__init__(**kw)
        self.missing = missing

    async def read(self, table: str, address: int, count: int, unit: int, *,
                   timeout_s: float, retries: int) -> Reply:
        reply = await super().read(table, address, count, unit, timeout_s=timeout_s,
                                   retries=retries)
        if any((unit, table, a) in self.missing for a in range(address, address + count)):
            return Reply([], exception_code=2)
        return reply


def _source(*devices: ModbusDeviceSpec) -> ModbusSourceSpec:
    return ModbusSourceSpec("gw", devices=devices, poll_interval_s=1.0, timeout_s=0.2,
                            retries=0, backoff_min_s=2.0, backoff_max_s=8.0)


ENERGY = RegisterPoint("m", "energy_kwh", "holding", 0, "u32", scale=0.01)
POWER = RegisterPoint("m", "power_kw", "holding", 4, "u16")


def test_every_signal_is_pending_until_read() -> None:
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY, POWER))))
    assert collector.stats.signal_counts() == {"ok": 0, "pending": 2, "failing": 0,
                                               "unresolved": 0}


def test_a_register_the_meter_lacks_is_unresolved_and_its_neighbours_still_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = HoleyLink({(1, "holding", 4)})
    link.set(1, "holding", 0, [0, 12345])
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY, POWER))), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 7))
    # one merged read refused, then one read per point, each poll after that too
    assert [(r.address, r.count) for r in link.reads[:5]] == [(0, 5), (0, 2), (4, 1),
                                                               (0, 2), (4, 1)]
    assert next(s.value for s in run.samples if s.signal == "energy_kwh") == 123.45
    assert {s.signal for s in run.samples} == {"energy_kwh"}
    status = run.stats.signals[("m", "power_kw")]
    assert status.state == "unresolved"
    assert status.detail == "holding 4+1 unit 1: exception response 2 (illegal data address)"
    assert run.stats.signals[("m", "energy_kwh")].state == "ok"
    assert run.health["m"].connected and run.health["m"].failing_since_ms is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("one by one" in w for w in warnings) == 1
    assert sum("has no such register" in w for w in warnings) == 1


def test_a_device_refusing_everything_is_failing_with_its_signals_unresolved() -> None:
    link = HoleyLink({(1, "holding", 0), (1, "holding", 4)})
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY, POWER))), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 3))
    assert run.samples == []
    assert not run.health["m"].connected and run.health["m"].failing_since_ms is not None
    assert run.stats.signal_counts()["unresolved"] == 2


def test_a_dead_device_makes_its_signals_failing_until_it_answers() -> None:
    link = FakeModbusLink(dead={1})
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY,))), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 1))
    status = run.stats.signals[("m", "energy_kwh")]
    assert status.state == "failing" and status.detail is not None
    assert "no valid reply" in status.detail

    link = FakeModbusLink(dead={1})
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY,))), link=link)

    def revived() -> bool:
        if len(link.reads) >= 2:
            link.dead.clear()
        return len(link.reads) >= 3

    run = run_virtual(collect_until(collector, link, revived))
    assert run.stats.signals[("m", "energy_kwh")] == SignalStatus("ok")


def test_an_unmapped_code_is_failing_and_the_tap_sees_raw_values() -> None:
    state = RegisterPoint("m", "state", "holding", 10, value_map={"1": "idle"})
    link = FakeModbusLink()
    link.set(1, "holding", 0, [0, 12345])
    link.set(1, "holding", 10, [7])
    collector = ModbusCollector(_source(ModbusDeviceSpec("m", 1, (ENERGY, state))), link=link)
    seen: dict[str, object] = {}
    collector.raw_tap = lambda device, signal, raw: seen.setdefault(signal, raw)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 1))
    assert seen == {"energy_kwh": 12345, "state": 7}
    assert run.stats.signals[("m", "state")] == SignalStatus(
        "failing", "raw value 7 is not in value_map")
    assert run.stats.signals[("m", "energy_kwh")].state == "ok"


def _dv(value: object, status: int = 0,
        vtype: ua.VariantType = ua.VariantType.Double) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype),
                        StatusCode=ua.StatusCode(status), SourceTimestamp=T0)


class Quiet:
    def clock_skewed(self, device: str, offset_ms: int) -> None: ...

    def clock_ok(self, device: str) -> None: ...

    def unmapped(self, tag: OpcUaTag, value: object) -> None: ...


def test_opcua_bad_values_make_a_signal_failing_until_a_good_one_comes() -> None:
    tag = OpcUaTag("cnc-01", "parts_total", node="ns=2;s=parts")
    stats = CollectorStats("plc")
    conv = SampleConverter(stats, ClockSkew(0, "flag"), Quiet())
    conv.to_sample(tag, _dv(3.0, ua.StatusCodes.BadSensorFailure), T0_MS)
    status = stats.signals[("cnc-01", "parts_total")]
    assert status.state == "failing" and status.detail == "status BadSensorFailure"
    conv.to_sample(tag, _dv(4.0), T0_MS)  # the fast path of a plain good value
    assert stats.signals[("cnc-01", "parts_total")] == SignalStatus("ok")


def test_opcua_tap_sees_the_value_before_map_and_scale() -> None:
    state = OpcUaTag("cnc-01", "state", node="ns=2;s=st", value_map={"2": "producing"})
    power = OpcUaTag("cnc-01", "power_kw", node="ns=2;s=p", scale=0.001)
    plain = OpcUaTag("cnc-01", "parts_total", node="ns=2;s=n")
    conv = SampleConverter(CollectorStats("plc"), ClockSkew(0, "flag"), Quiet())
    seen: list[tuple[str, object]] = []
    conv.tap = lambda device, signal, raw: seen.append((signal, raw))
    assert conv.to_sample(state, _dv(2, vtype=ua.VariantType.Int32), T0_MS).value == "producing"
    assert conv.to_sample(power, _dv(1500.0), T0_MS).value == 1.5
    assert conv.to_sample(plain, _dv(42.0), T0_MS).value == 42.0
    assert seen == [("state", 2), ("power_kw", 1500.0), ("parts_total", 42.0)]


def test_stats_snapshots_do_not_share_the_signals() -> None:
    stats = CollectorStats("x")
    assert stats.set_signal("d", "s", SignalStatus("pending"))
    snap = stats.copy()
    assert stats.set_signal("d", "s", SignalStatus("ok"))
    assert not stats.set_signal("d", "s", SignalStatus("ok"))
    assert snap.signals[("d", "s")].state == "pending"

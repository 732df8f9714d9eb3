"""Stats, presets and spec validation of the collectors."""

from __future__ import annotations

import pytest

from collectors.base import CollectorStats
from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
from collectors.opcua import OpcUaCollector, OpcUaSourceSpec, OpcUaTag, parse_browse_path
from collectors.presets import PRESETS, preset_points
from rules.errors import ConfigError


def test_stats_snapshot_is_detached() -> None:
    stats = CollectorStats("x")
    stats.device("d").samples = 3
    snap = stats.copy()
    stats.device("d").samples = 4
    assert snap.devices["d"].samples == 3


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_have_the_kpi_roles_and_plan(name: str) -> None:
    points = preset_points(name, "meter-01")
    signals = {p.signal for p in points}
    assert {"energy_kwh", "power_kw"} <= signals
    assert all(p.device == "meter-01" for p in points)
    ModbusCollector(ModbusSourceSpec("gw", devices=(ModbusDeviceSpec("meter-01", 1, points),)))


def test_sdm630_layout() -> None:
    by_signal = {p.signal: p for p in preset_points("SDM630", "m")}
    assert (by_signal["power_kw"].address, by_signal["power_kw"].scale) == (0x34, 0.001)
    assert by_signal["energy_kwh"].address == 0x48
    assert by_signal["voltage_l1"].address == 0 and by_signal["current_l1"].address == 6
    assert all(p.table == "input" and p.dtype == "f32" and p.word_order == "big"
               for p in by_signal.values())


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="sdm630"):
        preset_points("nope", "m")


def test_modbus_spec_errors_are_all_reported() -> None:
    spec = ModbusSourceSpec("gw", transport="rtu", poll_interval_s=0, devices=(
        ModbusDeviceSpec("a", 300, (RegisterPoint("a", "x", "holding", 0, "u128"),)),
        ModbusDeviceSpec("a", 1, ()),
    ))
    with pytest.raises(ConfigError) as info:
        ModbusCollector(spec)
    text = str(info.value)
    for needle in ("serial_port", "poll_interval_s", "unit 300", "u128", "duplicate"):
        assert needle in text


def test_browse_path_parsing() -> None:
    ns = {"cnc": "urn:x"}
    assert parse_browse_path("Objects/cnc:Machines/cnc:cnc-01", ns) == [
        (None, "Objects"), ("urn:x", "Machines"), ("urn:x", "cnc-01")]
    for bad in ("Objects//x", "Objects/foo:Bar", "Objects/cnc:"):
        with pytest.raises(ValueError):
            parse_browse_path(bad, ns)


def test_opcua_spec_errors() -> None:
    spec = OpcUaSourceSpec("s", "http://x", tags=(
        OpcUaTag("d", "a"),
        OpcUaTag("d", "b", node="ns=2;s=x", browse_path="Objects"),
        OpcUaTag("d", "c", browse_path="Objects/zz:Q"),
        OpcUaTag("d", "c", node="nsu=urn:x"),
    ))
    with pytest.raises(ConfigError) as info:
        OpcUaCollector(spec)
    text = str(info.value)
    for needle in ("opc.tcp", "exactly one", "alias 'zz'", "duplicate", "nsu="):
        assert needle in text

"""Injected faults, seen from plain clients, and their traces in the ledger."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from rules.types import rfc3339_to_ms
from simulators.ledger import read_ledger
from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant
from simulators.scenario import Scenario, default_scenario, scenario_from_dict

pytestmark = pytest.mark.integration


def _variant(**changes: Any) -> Scenario:
    """The fast two-machine scenario with top-level keys replaced or machines/meters edited."""
    raw = default_scenario(machines=2, seed=3, fast=True).model_dump(mode="python",
                                                                     exclude_none=True)
    machine_changes = changes.pop("machine0", {})
    meter_changes = changes.pop("meter0", {})
    raw["machines"][0].update(machine_changes)
    raw["meters"][0].update(meter_changes)
    raw.update(changes)
    return scenario_from_dict(raw)


async def _read(client: Client, ns: int, machine: str, *path: str) -> ua.DataValue:
    names = [f"{ns}:Machines", f"{ns}:{machine}", *(f"{ns}:{p}" for p in path)]
    node = await client.nodes.objects.get_child(names)
    return await node.read_data_value(raise_on_bad_status=False)


def _f32(client: AsyncModbusTcpClient, regs: list[int]) -> float:
    return float(client.convert_from_registers(regs, client.DATATYPE.FLOAT32))


def _faults(path: Path) -> list[str]:
    return [e["fault"] for e in read_ledger(path) if e["kind"] == "fault"]


async def test_modbus_exception_and_silent_unit(plant: Plant) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=0.5, retries=0)
    await client.connect()
    try:
        plant.set_modbus_fault("meter-01", "exception", code=0x04)
        rr = await client.read_input_registers(0x0048, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 0x04
        other = await client.read_input_registers(0x0048, count=2, device_id=2)
        assert not other.isError()

        plant.set_modbus_fault("meter-01", "silent")
        started = time.monotonic()
        with pytest.raises(ModbusException):
            await client.read_input_registers(0x0048, count=2, device_id=1)
        assert time.monotonic() - started >= 0.4

        plant.set_modbus_fault("meter-01", None)
        if not client.connected:
            await client.connect()
        rr = await client.read_input_registers(0x0048, count=2, device_id=1)
        assert not rr.isError()
    finally:
        client.close()
    assert _faults(plant.ledger_paths()["modbus"]) == [
        "modbus_exception", "modbus_silent", "modbus_cleared"]


async def test_part_counter_and_meter_reset(plant: Plant) -> None:
    await asyncio.sleep(2.0)
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
    await client.connect()
    try:
        async with Client(plant.opcua_endpoint) as ua_client, plant.frozen():
            ns = await ua_client.get_namespace_index(NAMESPACE_URI)
            await plant.reset_part_counters("cnc-01")
            await plant.reset_meter("meter-02")
            total = await _read(ua_client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
            scrap = await _read(ua_client, ns, "cnc-01", "Production", "PartsScrapInLifetime")
            assert total.Value.Value == 0 and scrap.Value.Value == 0
            rr = await client.read_input_registers(0x0048, count=2, device_id=2)
            assert _f32(client, rr.registers) == 0.0
        await asyncio.sleep(4.0)
        async with plant.frozen():
            counted = plant.machine_model("cnc-01").parts_total
            entries = read_ledger(plant.ledger_paths()["opcua"])
            meter_entries = read_ledger(plant.ledger_paths()["modbus"])
    finally:
        client.close()
    resets = [e for e in entries if e["kind"] == "counter_reset"]
    assert {e["signal"] for e in resets} == {"parts_total", "parts_scrap"}
    reset_ms = rfc3339_to_ms(resets[0]["ts"])
    after = [e for e in entries if e["kind"] == "part" and e["device"] == "cnc-01"
             and rfc3339_to_ms(e["ts"]) >= reset_ms]
    assert counted == len(after)
    meter_reset = [e for e in meter_entries if e["kind"] == "counter_reset"]
    assert meter_reset[0]["device"] == "meter-02" and meter_reset[0]["after"] == "0.00"


async def test_counter_wrap_and_meter_rollover(tmp_path: Path) -> None:
    scenario = _variant(machine0={"initial_parts_total": 2**32 - 2},
                        meter0={"initial_kwh": Decimal("9999.97")})
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        machine, meter = plant.machine_model("cnc-01"), plant.meter_model("meter-01")
        for _ in range(100):  # breaks and breakdowns may hold the machine for a while
            if 1 <= machine.parts_total < 1000 and meter.counts < 999_000:
                break
            await asyncio.sleep(0.25)
        async with Client(plant.opcua_endpoint) as ua_client, plant.frozen():
            ns = await ua_client.get_namespace_index(NAMESPACE_URI)
            total = await _read(ua_client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
            entries = read_ledger(plant.ledger_paths()["opcua"])
            meter_entries = read_ledger(plant.ledger_paths()["modbus"])
    parts = [e for e in entries if e["kind"] == "part" and e["device"] == "cnc-01"]
    assert len(parts) >= 3, "expected the counter to pass 2^32"
    assert total.Value.Value == (2**32 - 2 + len(parts)) % 2**32
    assert [e["parts_total"] for e in parts[:3]] == [2**32 - 1, 0, 1]
    wraps = [e for e in entries if e["kind"] == "rollover"]
    assert wraps[0]["signal"] == "parts_total" and wraps[0]["after"] == 0
    rolls = [e for e in meter_entries if e["kind"] == "rollover"]
    assert rolls and rolls[0]["device"] == "meter-01"
    steps = [e for e in meter_entries if e["kind"] == "energy" and e["device"] == "meter-01"]
    total_kwh = sum((Decimal(e["kwh"]) for e in steps), Decimal(0))
    assert (Decimal("9999.97") + total_kwh) % 10000 == Decimal(steps[-1]["register_kwh"])


async def test_opcua_restart_and_bad_status(plant: Plant) -> None:
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        await plant.set_opcua_status("cnc-02", "BadCommunicationError")
        bad = await _read(client, ns, "cnc-02", "Production", "PartsProducedInLifetime")
        assert bad.StatusCode.value == ua.StatusCodes.BadCommunicationError
        good = await _read(client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
        assert good.StatusCode.is_good()
        await plant.set_opcua_status("cnc-02", None)
        back = await _read(client, ns, "cnc-02", "Production", "PartsProducedInLifetime")
        assert back.StatusCode.is_good()
        assert back.Value.Value == plant.machine_model("cnc-02").parts_total

    await plant.stop_opcua()
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(plant.opcua_endpoint, timeout=1):
            pass
    await asyncio.sleep(2.0)
    await plant.start_opcua()
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        async with plant.frozen():
            dv = await _read(client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
            assert dv.Value.Value == plant.machine_model("cnc-01").parts_total
    assert _faults(plant.ledger_paths()["opcua"]) == [
        "opcua_bad_status", "opcua_status_cleared", "opcua_stop", "opcua_start"]


async def test_clock_skew_moves_source_timestamps(plant: Plant) -> None:
    plant.set_clock_skew(3600.0)
    await asyncio.sleep(0.5)
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        for _ in range(40):
            dv = await _read(client, ns, "cnc-01", "Monitoring", "MachineTool", "PowerOnDuration")
            stamp = dv.SourceTimestamp.replace(tzinfo=UTC).timestamp()
            if stamp > time.time() + 3000:
                break
            await asyncio.sleep(0.25)
        else:
            pytest.fail("no value stamped with the skewed clock")


async def test_scenario_scheduled_faults(tmp_path: Path) -> None:
    scenario = _variant(faults=[
        {"at_s": 0.5, "kind": "modbus_exception", "target": "meter-02", "code": 6,
         "duration_s": 1.0},
        {"at_s": 0.5, "kind": "counter_reset", "target": "cnc-02"},
    ])
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=1, retries=0)
        await client.connect()
        try:
            await asyncio.sleep(0.9)
            rr = await client.read_input_registers(0x0048, count=2, device_id=2)
            assert rr.isError() and rr.exception_code == 6
            await asyncio.sleep(1.2)
            rr = await client.read_input_registers(0x0048, count=2, device_id=2)
            assert not rr.isError()
        finally:
            client.close()
        opcua_entries = read_ledger(plant.ledger_paths()["opcua"])
    assert _faults(plant.ledger_paths()["modbus"]) == ["modbus_exception", "modbus_cleared"]
    assert any(e["kind"] == "counter_reset" and e["device"] == "cnc-02" for e in opcua_entries)

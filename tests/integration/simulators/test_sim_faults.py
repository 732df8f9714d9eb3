"""Injected faults, seen from plain clients, and their traces in the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import struct
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
from simulators.plant import Plant, SimClock
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
    # The ledger is in the order things happened: a part made in the same millisecond
    # just before the reset stands before it (a timestamp comparison would count it).
    last_reset = max(i for i, e in enumerate(entries) if e["kind"] == "counter_reset")
    after = [e for e in entries[last_reset + 1:] if e["kind"] == "part"
             and e["device"] == "cnc-01"]
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
         "duration_s": 3.0},
        {"at_s": 0.5, "kind": "counter_reset", "target": "cnc-02"},
    ])
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=1, retries=0)
        await client.connect()
        try:
            # Polled rather than timed: a loaded machine may start the plant late.
            codes: list[int | None] = []
            async with asyncio.timeout(10):
                while not codes or codes[-1] != 6:
                    rr = await client.read_input_registers(0x0048, count=2, device_id=2)
                    codes.append(rr.exception_code if rr.isError() else None)
                    await asyncio.sleep(0.1)
                while codes[-1] is not None:
                    await asyncio.sleep(0.2)
                    rr = await client.read_input_registers(0x0048, count=2, device_id=2)
                    codes.append(rr.exception_code if rr.isError() else None)
            assert set(codes) <= {None, 6}  # healthy, then the injected code 6, then healthy
            assert codes[-1] is None and 6 in codes
        finally:
            client.close()
        opcua_entries = read_ledger(plant.ledger_paths()["opcua"])
    assert _faults(plant.ledger_paths()["modbus"]) == ["modbus_exception", "modbus_cleared"]
    assert any(e["kind"] == "counter_reset" and e["device"] == "cnc-02" for e in opcua_entries)


async def _raw_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tid: int,
                    unit: int) -> None:
    """Send a Modbus TCP "read input registers 0x0048, 2 words" with transaction ``tid``."""
    pdu = struct.pack(">BHH", 4, 0x0048, 2)
    writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
    await writer.drain()


async def _raw_reply(reader: asyncio.StreamReader) -> tuple[int, int, float]:
    """One Modbus TCP reply: transaction id, unit id, the float32 it carries."""
    tid, _pid, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
    body = await reader.readexactly(length - 1)
    assert body[0] == 4 and body[1] == 4, body
    return tid, unit, struct.unpack(">f", body[2:6])[0]


async def test_slow_unit_answers_late_with_its_own_transaction_id(plant: Plant) -> None:
    async with plant.frozen():
        expected = {unit: float(plant.meter_model(m).image().energy_kwh)
                    for m, unit in plant.meters}
        plant.set_modbus_fault("meter-01", "slow", delay_s=1.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", plant.modbus_port)
        try:
            started = time.monotonic()
            # On one connection: the slow unit first, then, before its reply, a healthy one.
            await _raw_read(reader, writer, 101, 1)
            await asyncio.sleep(0.2)
            await _raw_read(reader, writer, 102, 2)
            first = await asyncio.wait_for(_raw_reply(reader), 10)
            second = await asyncio.wait_for(_raw_reply(reader), 10)
            late = time.monotonic() - started
        finally:
            writer.close()
            await writer.wait_closed()
        # The healthy unit is not held up, and the late reply is not mis-tagged.
        assert first[:2] == (102, 2) and first[2] == pytest.approx(expected[2], abs=0.001)
        assert second[:2] == (101, 1) and second[2] == pytest.approx(expected[1], abs=0.001)
        assert late >= 0.95

        # A client that gives up earlier sees a timeout; the next request is answered.
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=0.3,
                                      retries=0)
        await client.connect()
        try:
            with pytest.raises(ModbusException):
                await client.read_input_registers(0x0048, count=2, device_id=1)
            plant.set_modbus_fault("meter-01", None)
            await asyncio.sleep(1.0)  # let the late reply arrive and be discarded
            if not client.connected:
                await client.connect()
            rr = await client.read_input_registers(0x0048, count=2, device_id=2)
            assert not rr.isError()
            assert _f32(client, rr.registers) == pytest.approx(expected[2], abs=0.001)
        finally:
            client.close()
    assert _faults(plant.ledger_paths()["modbus"]) == ["modbus_slow", "modbus_cleared"]


async def test_silent_unit_while_others_on_the_gateway_answer(plant: Plant) -> None:
    plant.set_modbus_fault("meter-02", "silent")
    quiet = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=0.5, retries=0)
    other = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
    await quiet.connect()
    await other.connect()
    try:
        for _ in range(3):
            with pytest.raises(ModbusException):
                await quiet.read_input_registers(0x0048, count=2, device_id=2)
            rr = await other.read_input_registers(0x0048, count=2, device_id=1)
            assert not rr.isError()
            if not quiet.connected:
                await quiet.connect()
    finally:
        quiet.close()
        other.close()
        plant.set_modbus_fault("meter-02", None)


async def test_node_disappears_and_comes_back(plant: Plant) -> None:
    path = "Production/PartsProducedInLifetime"
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        names = [f"{ns}:Machines", f"{ns}:cnc-01", f"{ns}:Production",
                 f"{ns}:PartsProducedInLifetime"]
        node = await client.nodes.objects.get_child(names)
        await plant.hide_opcua_node("cnc-01", path)
        dv = await node.read_data_value(raise_on_bad_status=False)
        assert dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        with pytest.raises(ua.UaStatusCodeError):
            await client.nodes.objects.get_child(names)
        scrap = await _read(client, ns, "cnc-01", "Production", "PartsScrapInLifetime")
        assert scrap.StatusCode.is_good()
        await asyncio.sleep(2.0)  # the model keeps writing while the node is gone
        await plant.restore_opcua_node("cnc-01", path)
        async with plant.frozen():
            back = await node.read_data_value()
            assert back.Value.Value == plant.machine_model("cnc-01").parts_total

        machines = client.nodes.objects
        await plant.hide_opcua_node("cnc-02")
        listed = await (await machines.get_child([f"{ns}:Machines"])).get_children()
        assert [(await n.read_browse_name()).Name for n in listed] == ["cnc-01"]
        await plant.restore_opcua_node("cnc-02")
        async with plant.frozen():
            total = await _read(client, ns, "cnc-02", "Production", "PartsProducedInLifetime")
            assert total.Value.Value == plant.machine_model("cnc-02").parts_total
    assert plant.error is None
    assert _faults(plant.ledger_paths()["opcua"]) == [
        "opcua_node_missing", "opcua_node_restored", "opcua_node_missing",
        "opcua_node_restored"]


async def test_opcua_restart_old_session_fails_new_session_reads(plant: Plant) -> None:
    old = Client(plant.opcua_endpoint, timeout=2)
    await old.connect()
    try:
        ns = await old.get_namespace_index(NAMESPACE_URI)
        node = await old.nodes.objects.get_child(
            [f"{ns}:Machines", f"{ns}:cnc-01", f"{ns}:Production",
             f"{ns}:PartsProducedInLifetime"])
        assert await node.read_value() >= 0
        await plant.restart_opcua(downtime_s=0.5)
        with pytest.raises((ConnectionError, OSError, asyncio.TimeoutError,
                            ua.UaStatusCodeError)):
            await node.read_value()
    finally:
        with contextlib.suppress(Exception):
            await old.disconnect()
    async with Client(plant.opcua_endpoint) as fresh, plant.frozen():
        ns = await fresh.get_namespace_index(NAMESPACE_URI)
        dv = await _read(fresh, ns, "cnc-01", "Production", "PartsProducedInLifetime")
        assert dv.Value.Value == plant.machine_model("cnc-01").parts_total


async def test_clock_behind_stamps_values_in_the_past(tmp_path: Path) -> None:
    async with (Plant(_variant(clock_skew_s=-3600.0), ledger_dir=tmp_path) as plant,
                Client(plant.opcua_endpoint) as client):
        ns = await client.get_namespace_index(NAMESPACE_URI)
        dv = await _read(client, ns, "cnc-01", "Monitoring", "MachineTool", "MachineState")
    stamp = dv.SourceTimestamp.replace(tzinfo=UTC).timestamp()
    assert time.time() - 3700 < stamp < time.time() - 3500
    entries = read_ledger(plant.ledger_paths()["opcua"])
    assert time.time() - 3700 < rfc3339_to_ms(entries[0]["ts"]) / 1000 < time.time() - 3500


async def test_scripted_faults_fire_at_exact_model_instants(tmp_path: Path) -> None:
    start = 1_709_532_000_000
    scenario = _variant(faults=[
        {"at_s": 5, "kind": "opcua_node_missing", "target": "cnc-01",
         "node": "Production/PartsScrapInLifetime", "duration_s": 10},
        {"at_s": 5, "kind": "modbus_slow", "target": "meter-02", "value": 0.6,
         "duration_s": 10},
        {"at_s": 20, "kind": "opcua_restart", "duration_s": 5},
        {"at_s": 30, "kind": "counter_reset", "target": "cnc-02"},
        {"at_s": 30, "kind": "meter_reset", "target": "meter-01"},
        {"at_s": 40, "kind": "clock_skew", "value": 60, "duration_s": 5},
    ])
    clock = SimClock(manual=True, start_ms=start)
    async with Plant(scenario, ledger_dir=tmp_path, clock=clock) as plant:
        await plant.run_until(start + 6_000)
        async with Client(plant.opcua_endpoint) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            with pytest.raises(ua.UaStatusCodeError):  # browsing no longer finds it
                await _read(client, ns, "cnc-01", "Production", "PartsScrapInLifetime")
            kept = await _read(client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
            assert kept.StatusCode.is_good()
        modbus = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=3, retries=0)
        await modbus.connect()
        try:
            began = time.monotonic()
            rr = await modbus.read_input_registers(0x0048, count=2, device_id=2)
            assert not rr.isError() and time.monotonic() - began >= 0.55
        finally:
            modbus.close()
        await plant.run_until(start + 21_000)
        with pytest.raises((OSError, asyncio.TimeoutError)):
            async with Client(plant.opcua_endpoint, timeout=1):
                pass
        await plant.run_until(start + 120_000)
        async with Client(plant.opcua_endpoint) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            back = await _read(client, ns, "cnc-01", "Production", "PartsScrapInLifetime")
            assert back.Value.Value == plant.machine_model("cnc-01").parts_scrap
        assert plant.clock.skew_ms == 0
    opcua_faults = [(e["fault"], rfc3339_to_ms(e["ts"]) - start)
                    for e in read_ledger(plant.ledger_paths()["opcua"]) if e["kind"] == "fault"]
    assert opcua_faults == [("opcua_node_missing", 5_000), ("opcua_node_restored", 15_000),
                            ("opcua_stop", 20_000), ("opcua_start", 25_000),
                            ("clock_skew", 40_000), ("clock_skew", 105_000)]
    modbus_faults = [(e["fault"], rfc3339_to_ms(e["ts"]) - start)
                     for e in read_ledger(plant.ledger_paths()["modbus"]) if e["kind"] == "fault"]
    assert modbus_faults == [("modbus_slow", 5_000), ("modbus_cleared", 15_000),
                             ("clock_skew", 40_000), ("clock_skew", 105_000)]
    resets = [(e["device"], rfc3339_to_ms(e["ts"]) - start)
              for path in plant.ledger_paths().values() for e in read_ledger(path)
              if e["kind"] == "counter_reset"]
    assert set(resets) == {("cnc-02", 30_000), ("meter-01", 30_000)}

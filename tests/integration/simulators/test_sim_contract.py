"""The simulators' fixed contract, checked with plain library clients on real sockets.

OPC UA is read with a plain asyncua ``Client`` by browse path, Modbus with a plain
pymodbus ``AsyncModbusTcpClient``; what they read must equal the ledger exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from rules.types import rfc3339_to_ms
from simulators.ledger import read_ledger
from simulators.machine import OPERATION_MODE_CODES, PROGRAM_STATE_NAMES
from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant

pytestmark = pytest.mark.integration

CONTRACT_PATHS: dict[tuple[str, ...], ua.VariantType] = {
    ("Identification", "Manufacturer"): ua.VariantType.String,
    ("Identification", "Model"): ua.VariantType.String,
    ("Identification", "SerialNumber"): ua.VariantType.String,
    ("Monitoring", "MachineTool", "MachineState"): ua.VariantType.Int32,
    ("Monitoring", "MachineTool", "OperationMode"): ua.VariantType.Int32,
    ("Monitoring", "MachineTool", "PowerOnDuration"): ua.VariantType.UInt32,
    ("Monitoring", "Spindle", "Speed"): ua.VariantType.Double,
    ("Monitoring", "Spindle", "Load"): ua.VariantType.Double,
    ("Production", "ActiveProgram", "Name"): ua.VariantType.String,
    ("Production", "ActiveProgram", "State"): ua.VariantType.Int32,
    ("Production", "PartsProducedInLifetime"): ua.VariantType.UInt32,
    ("Production", "PartsScrapInLifetime"): ua.VariantType.UInt32,
    ("Monitoring", "Spindle", "IsRotating"): ua.VariantType.Boolean,
    ("Production", "ActiveProgram", "State", "CurrentState"): ua.VariantType.LocalizedText,
    ("Production", "Statistics", "PartsProducedInLifetime"): ua.VariantType.UInt32,
}
STATES = ["off", "idle", "producing", "setup", "unplanned_down", "planned_down"]


async def _node(client: Client, ns: int, machine: str, *path: str) -> Any:
    names = [f"{ns}:Machines", f"{ns}:{machine}", *(f"{ns}:{p}" for p in path)]
    return await client.nodes.objects.get_child(names)


def _f32(client: AsyncModbusTcpClient, regs: list[int]) -> float:
    return float(client.convert_from_registers(regs, client.DATATYPE.FLOAT32))


async def _poll(predicate: Any, seconds: float) -> None:
    for _ in range(round(seconds / 0.2)):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {seconds} s")


async def test_opcua_address_space_follows_the_contract(plant: Plant) -> None:
    assert plant.opcua_endpoint.startswith("opc.tcp://127.0.0.1:")
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        for machine in plant.machines:
            for path, vtype in CONTRACT_PATHS.items():
                node = await _node(client, ns, machine, *path)
                dv = await node.read_data_value()
                assert dv.StatusCode.is_good(), (machine, path)
                assert dv.Value.VariantType == vtype, (machine, path)
                assert dv.SourceTimestamp is not None, (machine, path)
            maker = await (await _node(client, ns, machine, "Identification",
                                       "Manufacturer")).read_value()
            assert maker
            state = await (await _node(client, ns, machine, "Monitoring", "MachineTool",
                                       "MachineState")).read_value()
            assert 0 <= state <= 5


async def test_opcua_counters_move_with_source_timestamps_from_the_ledger(plant: Plant) -> None:
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        node = await _node(client, ns, "cnc-01", "Production", "PartsProducedInLifetime")
        first = await node.read_value()

        async def moved() -> bool:
            return bool(await node.read_value() != first)

        await _poll(moved, 15.0)
        async with plant.frozen():
            dv = await node.read_data_value()
            entries = read_ledger(plant.ledger_paths()["opcua"])
    parts = [e for e in entries if e["kind"] == "part" and e["device"] == "cnc-01"]
    assert parts[-1]["parts_total"] == dv.Value.Value
    source_ms = round(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() * 1000)
    assert source_ms == rfc3339_to_ms(parts[-1]["ts"])
    assert abs(source_ms - time.time() * 1000) < 15_000


async def test_modbus_sdm630_values_are_plausible(plant: Plant) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
    await client.connect()
    try:
        assert [u for _, u in plant.meters] == [1, 2]
        for _, unit in plant.meters:
            rr = await client.read_input_registers(0x0000, count=0x4A, device_id=unit)
            assert not rr.isError(), rr
            regs = rr.registers
            volts = [_f32(client, regs[a:a + 2]) for a in (0x00, 0x02, 0x04)]
            assert all(220 < v < 240 for v in volts)
            amps = [_f32(client, regs[a:a + 2]) for a in (0x06, 0x08, 0x0A)]
            assert all(a >= 0 for a in amps)
            power = _f32(client, regs[0x34:0x36])
            assert 0 <= power < 100_000
            pf = _f32(client, regs[0x3E:0x40])
            assert 0 < pf <= 1
            freq = _f32(client, regs[0x46:0x48])
            assert 49.9 < freq < 50.1
            energy = _f32(client, regs[0x48:0x4A])
            assert energy >= 1000
        # An id no meter has gets the gateway's "path unavailable" exception.
        rr = await client.read_input_registers(0x0048, count=2, device_id=99)
        assert rr.isError() and rr.exception_code == 0x0A
        # The SDM630 map is in input registers; holding register 0x0048 does not exist.
        rr = await client.read_holding_registers(0x0048, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 0x02
    finally:
        client.close()


async def test_ledger_equals_what_clients_read_exactly(plant: Plant) -> None:
    start = {m: plant.machine_model(m).parts_total for m in plant.machines}
    energy_start = {m: plant.meter_model(m).counts for m, _ in plant.meters}

    async def everything_moved() -> bool:
        return all(plant.machine_model(m).parts_total != n for m, n in start.items()) and all(
            plant.meter_model(m).counts != n for m, n in energy_start.items())

    await _poll(everything_moved, 25.0)
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
    await client.connect()
    try:
        async with Client(plant.opcua_endpoint) as ua_client, plant.frozen():
            ns = await ua_client.get_namespace_index(NAMESPACE_URI)
            served: dict[str, dict[str, Any]] = {}
            for machine in plant.machines:
                total = await (await _node(ua_client, ns, machine, "Production",
                                           "PartsProducedInLifetime")).read_value()
                scrap = await (await _node(ua_client, ns, machine, "Production",
                                           "PartsScrapInLifetime")).read_value()
                state = await (await _node(ua_client, ns, machine, "Monitoring",
                                           "MachineTool", "MachineState")).read_value()
                served[machine] = {"total": total, "scrap": scrap, "state": state}
            energy: dict[str, float] = {}
            for meter, unit in plant.meters:
                rr = await client.read_input_registers(0x0048, count=2, device_id=unit)
                energy[meter] = _f32(client, rr.registers)
            machines_ledger = read_ledger(plant.ledger_paths()["opcua"])
            meters_ledger = read_ledger(plant.ledger_paths()["modbus"])
    finally:
        client.close()

    for machine in plant.machines:
        mine = [e for e in machines_ledger if e.get("device") == machine]
        init = mine[0]
        assert init["kind"] == "init"
        parts = [e for e in mine if e["kind"] == "part"]
        assert parts
        good = sum(1 for e in parts if e["good"])
        scrap = len(parts) - good
        assert served[machine]["total"] == init["parts_total"] + len(parts)
        assert served[machine]["scrap"] == init["parts_scrap"] + scrap
        assert served[machine]["total"] == parts[-1]["parts_total"]
        last_state = [e for e in mine if e["kind"] == "state"][-1]["state"]
        assert STATES[served[machine]["state"]] == last_state
        stamps = [rfc3339_to_ms(e["ts"]) for e in mine if "ts" in e]
        assert stamps == sorted(stamps)

    for meter, _unit in plant.meters:
        mine = [e for e in meters_ledger if e.get("device") == meter]
        init = mine[0]
        resolution = Decimal(init["resolution_kwh"])
        modulus = Decimal(init["modulus_kwh"])
        steps = [e for e in mine if e["kind"] == "energy"]
        assert steps
        total = sum((Decimal(e["kwh"]) for e in steps), Decimal(0))
        expected = (Decimal(init["register_kwh"]) + total) % modulus
        assert expected == Decimal(steps[-1]["register_kwh"])
        read = Decimal(round(energy[meter] / float(resolution))) * resolution
        assert read == expected
        # Steps tile time: each starts where the previous ended.
        for before, after in itertools.pairwise(steps):
            assert before["ts_end"] == after["ts_start"]


async def test_subscription_sees_every_part_with_its_ledger_timestamp(plant: Plant) -> None:
    received: list[tuple[int, int]] = []

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            dv = data.monitored_item.Value
            ts = round(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() * 1000)
            received.append((ts, int(val)))
            arrived.set()

    arrived = asyncio.Event()
    async with Client(plant.opcua_endpoint) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        node = await _node(client, ns, "cnc-02", "Production", "PartsProducedInLifetime")
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change(node)
        await asyncio.sleep(0.5)
        start = len(received)
        await asyncio.sleep(6.0)
        async with plant.frozen():
            entries = read_ledger(plant.ledger_paths()["opcua"])
            ledger = {(rfc3339_to_ms(e["ts"]), e["parts_total"]) for e in entries
                      if e["kind"] == "part" and e["device"] == "cnc-02"}

            def all_delivered() -> bool:
                seen = set(received[start:])
                return bool(seen) and {p for p in ledger if p[0] >= min(seen)[0]} <= seen

            # Held still, the model serves nothing new: wait for the notifications of
            # what it served before, and take them before it moves on (a loaded machine
            # may take a while to deliver them).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while not all_delivered():
                        arrived.clear()
                        await arrived.wait()
            got = received[start:]
        await sub.delete()
    assert got, "no part notification in 6 s"
    assert set(got) <= ledger
    first_ts = got[0][0]
    expected = sorted(p for p in ledger if p[0] >= first_ts)
    assert sorted(got) == expected


async def test_companion_spec_nodes_agree_with_the_contract_nodes(plant: Plant) -> None:
    """The OPC 40501-1 shaped extras carry the same facts as the fixed contract nodes."""
    async with Client(plant.opcua_endpoint) as client, plant.frozen():
        ns = await client.get_namespace_index(NAMESPACE_URI)
        for machine in plant.machines:
            async def read(*path: str, m: str = machine) -> Any:
                return await (await _node(client, ns, m, *path)).read_data_value()

            total = await read("Production", "PartsProducedInLifetime")
            stats = await read("Production", "Statistics", "PartsProducedInLifetime")
            assert stats.Value.Value == total.Value.Value
            assert stats.SourceTimestamp == total.SourceTimestamp
            speed = await read("Monitoring", "Spindle", "Speed")
            rotating = await read("Monitoring", "Spindle", "IsRotating")
            assert rotating.Value.VariantType == ua.VariantType.Boolean
            assert rotating.Value.Value == (speed.Value.Value > 0)
            code = (await read("Production", "ActiveProgram", "State")).Value.Value
            name = await read("Production", "ActiveProgram", "State", "CurrentState")
            assert name.Value.VariantType == ua.VariantType.LocalizedText
            assert name.Value.Value.Text == PROGRAM_STATE_NAMES[code]
            mode = (await read("Monitoring", "MachineTool", "OperationMode")).Value.Value
            state = (await read("Monitoring", "MachineTool", "MachineState")).Value.Value
            assert mode == OPERATION_MODE_CODES[STATES[state]]
            assert 0 <= mode <= 5  # OPC 40501-1 MachineOperationMode

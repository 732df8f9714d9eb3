"""The ``scaled32`` register layout, Modbus RTU over a pty pair, and a 50-machine plant."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from simulators.ledger import read_ledger
from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant
from simulators.registers import decode_u32_lo_hi
from simulators.scenario import default_scenario, scenario_from_dict

pytestmark = pytest.mark.integration


def _scaled32_scenario() -> Any:
    raw = default_scenario(machines=2, seed=5, fast=True).model_dump(mode="python",
                                                                     exclude_none=True)
    raw["meters"][1].update({"layout": "scaled32", "initial_kwh": Decimal("123456.78"),
                             "modulus_kwh": Decimal("1000000")})
    # High power in every state, so the register moves within seconds whatever cnc-02 does.
    raw["machines"][1]["power"] = {"producing": 40.0, "idle": 30.0, "setup": 30.0,
                                   "unplanned_down": 30.0, "planned_down": 30.0}
    return scenario_from_dict(raw)


async def test_scaled32_layout_low_word_first(tmp_path: Path) -> None:
    async with Plant(_scaled32_scenario(), ledger_dir=tmp_path) as plant:
        meter = plant.meter_model("meter-02")
        start = meter.counts
        for _ in range(100):
            if meter.counts != start:
                break
            await asyncio.sleep(0.2)
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
        await client.connect()
        try:
            async with plant.frozen():
                rr = await client.read_holding_registers(0x0000, count=0x16, device_id=2)
                entries = read_ledger(plant.ledger_paths()["modbus"])
            # The float layout of meter-01 is not in holding registers.
            other = await client.read_holding_registers(0x0000, count=2, device_id=1)
        finally:
            client.close()
    assert not rr.isError()
    regs = rr.registers
    counts = decode_u32_lo_hi(regs[0:2])
    mine = [e for e in entries if e.get("device") == "meter-02"]
    steps = [e for e in mine if e["kind"] == "energy"]
    assert steps
    assert Decimal(counts) * Decimal("0.01") == Decimal(steps[-1]["register_kwh"])
    total = sum((Decimal(e["kwh"]) for e in steps), Decimal(0))
    assert Decimal("123456.78") + total == Decimal(steps[-1]["register_kwh"])
    assert client.convert_from_registers(regs[0:2], client.DATATYPE.UINT32,
                                         word_order="little") == counts
    volts = decode_u32_lo_hi(regs[4:6]) / 10
    assert 220 < volts < 240
    assert 4990 < decode_u32_lo_hi(regs[0x12:0x14]) < 5010
    assert decode_u32_lo_hi(regs[0x14:0x16]) == 10_000  # mWh per step = 0.01 kWh
    assert other.isError() and other.exception_code == 0x02


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo terminals from socat (skipped where socat is missing)."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    a, b = tmp_path / "server-tty", tmp_path / "client-tty"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.05)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def test_modbus_rtu_over_serial(tmp_path: Path, pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair
    scenario = default_scenario(machines=2, seed=9, fast=True)
    async with Plant(scenario, ledger_dir=tmp_path, rtu_port=server_tty,
                     rtu_baudrate=115200) as plant:
        client = AsyncModbusSerialClient(client_tty, baudrate=115200, timeout=1, retries=0)
        assert await client.connect()
        try:
            await asyncio.sleep(0.3)
            async with plant.frozen():
                values = {}
                for meter, unit in plant.meters:
                    rr = await client.read_input_registers(0x0048, count=2, device_id=unit)
                    assert not rr.isError(), rr
                    values[meter] = client.convert_from_registers(rr.registers,
                                                                  client.DATATYPE.FLOAT32)
                expected = {m: float(plant.meter_model(m).image().energy_kwh)
                            for m, _ in plant.meters}
            plant.set_modbus_fault("meter-01", "exception", code=0x06)
            rr = await client.read_input_registers(0x0048, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 0x06
            plant.set_modbus_fault("meter-01", None)
        finally:
            client.close()
    for meter, value in values.items():
        assert value == pytest.approx(expected[meter], abs=0.001)


async def test_fifty_machines(tmp_path: Path) -> None:
    scenario = default_scenario(machines=50, seed=11, fast=True)
    started = time.monotonic()
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        startup = time.monotonic() - started
        assert startup < 20, f"50 machines took {startup:.1f} s to start"
        assert len(plant.meters) == 50 and plant.meters[-1] == ("meter-50", 50)
        initial = {m: plant.machine_model(m).parts_total for m in plant.machines}
        for _ in range(80):  # a planned break may hold everything for 5 s
            moved = sum(plant.machine_model(m).parts_total != n for m, n in initial.items())
            if moved >= 40:
                break
            await asyncio.sleep(0.25)
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
        await client.connect()
        try:
            async with Client(plant.opcua_endpoint) as ua_client, plant.frozen():
                ns = await ua_client.get_namespace_index(NAMESPACE_URI)
                for machine in ("cnc-01", "cnc-25", "cnc-50"):
                    node = await ua_client.nodes.objects.get_child(
                        [f"{ns}:Machines", f"{ns}:{machine}", f"{ns}:Production",
                         f"{ns}:PartsProducedInLifetime"])
                    assert await node.read_value() == plant.machine_model(machine).parts_total
                for meter, unit in plant.meters:
                    rr = await client.read_input_registers(0x0048, count=2, device_id=unit)
                    assert not rr.isError()
                    value = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
                    counts = plant.meter_model(meter).counts
                    assert round(value * 100) == counts
                entries = read_ledger(plant.ledger_paths()["opcua"])
        finally:
            client.close()
    parts = [e for e in entries if e["kind"] == "part"]
    assert len({e["device"] for e in parts}) >= 40, "most machines should have made parts"

"""Modbus collector against the simulator: presets vs served values, RTU over a socat pty
pair, RTU over TCP through a socat bridge, and a dead unit on a shared serial bus."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opcua_modbus_servers import free_port, running, wait_for_sample, wait_until

from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
from collectors.presets import PRESETS, preset_points
from rules.types import Sample
from simulators.ledger import read_ledger
from simulators.plant import Plant
from simulators.registers import LAYOUTS
from simulators.scenario import Scenario, default_scenario, scenario_from_dict

pytestmark = pytest.mark.integration

BAUD = 115200


def _three_layouts() -> Scenario:
    """meter-01 sdm630 (unit 1), meter-02 scaled32 (unit 2), meter-03 em24 (unit 3)."""
    raw = default_scenario(machines=3, seed=21, fast=True).model_dump(mode="python",
                                                                      exclude_none=True)
    raw["meters"][1].update({"layout": "scaled32", "initial_kwh": Decimal("123456.78"),
                             "modulus_kwh": Decimal("1000000")})
    raw["meters"][2].update({"layout": "em24", "initial_kwh": Decimal("98765.4"),
                             "resolution_kwh": Decimal("0.1")})
    return scenario_from_dict(raw)


def _every_layout() -> Scenario:
    """The three meters of :func:`_three_layouts`, then one meter of every other layout:
    meter-04 dtsu666 (unit 4), meter-05 adl400, meter-06 pm5xxx, meter-07 pac3200."""
    raw = _three_layouts().model_dump(mode="python", exclude_none=True)
    extra = [("dtsu666", "4321.09"), ("adl400", "76543.21"), ("pm5xxx", "1234567.89"),
             ("pac3200", "2345678.90")]
    for n, (layout, initial) in enumerate(extra, start=4):
        raw["meters"].append({**raw["meters"][0], "id": f"meter-{n:02d}", "unit_id": n,
                              "machine": raw["machines"][n % 3]["id"], "layout": layout,
                              "initial_kwh": Decimal(initial), "resolution_kwh": Decimal("0.01")})
        raw["meters"][-1].pop("modulus_kwh", None)
    return scenario_from_dict(raw)


def _devices(plant: Plant, scenario: Scenario) -> tuple[ModbusDeviceSpec, ...]:
    layouts = {m.id: (m.layout, float(m.resolution_kwh)) for m in scenario.effective_meters}
    return tuple(
        ModbusDeviceSpec(meter, unit, preset_points(layouts[meter][0], meter,
                                                    resolution_kwh=layouts[meter][1]))
        for meter, unit in plant.meters)


def _spec(devices: tuple[ModbusDeviceSpec, ...], **kw: Any) -> ModbusSourceSpec:
    params: dict[str, Any] = {"id": "bus", "devices": devices, "poll_interval_s": 0.25,
                              "timeout_s": 0.2, "retries": 0, "backoff_min_s": 1.0,
                              "backoff_max_s": 2.0, "baudrate": BAUD}
    params.update(kw)
    return ModbusSourceSpec(**params)


async def _compare_with_model(plant: Plant, sink: asyncio.Queue[Sample],
                              devices: tuple[ModbusDeviceSpec, ...]) -> None:
    """Freeze the plant, take a full poll read after the freeze, compare with the model
    (what the servers serve) and with the ledger's last energy register: the energy
    exactly, in the meter's resolution steps; the rest within a register's resolution."""
    resolution = {m.id: m.resolution_kwh for m in plant.scenario.effective_meters}
    async with plant.frozen():
        frozen_at = int(time.time() * 1000) + 50
        await asyncio.sleep(0.1)
        want = {(d.id, p.signal) for d in devices for p in d.points}
        got: dict[tuple[str, str], Sample] = {}
        async with asyncio.timeout(20):
            while set(got) != want:
                sample = await sink.get()
                if sample.ts_ms >= frozen_at:
                    got[(sample.device, sample.signal)] = sample
        images = {m: plant.meter_model(m).image() for m, _ in plant.meters}
        ledger = read_ledger(plant.ledger_paths()["modbus"])
    for meter, image in images.items():
        steps = [e for e in ledger if e.get("device") == meter and e["kind"] == "energy"]
        served = Decimal(steps[-1]["register_kwh"]) if steps else image.energy_kwh
        assert served == image.energy_kwh
        # Each value within its register's resolution of the model: the preset's scale for
        # an integer register, float32 precision for a float32 one.
        (device,) = (d for d in devices if d.id == meter)
        points = {p.signal: p for p in device.points}

        def near(signal: str, want: float, floor: float, got: dict[tuple[str, str], Sample]
                 = got, points: dict[str, RegisterPoint] = points, meter: str = meter) -> None:
            sample = got[(meter, signal)]
            assert sample.quality == "good" and sample.ts_source == "receive"
            point = points[signal]
            step = (abs(want) * 2**-22 if point.dtype == "f32" else
                    0.0 if point.dtype == "f64" else abs(point.scale))
            assert sample.value == pytest.approx(want, abs=max(floor, step)), (meter, signal)

        energy = got[(meter, "energy_kwh")].value
        assert isinstance(energy, int | float)
        res = resolution[meter]
        assert Decimal(round(energy / float(res))) * res == served, (meter, energy)
        near("energy_kwh", float(served), 1e-6)
        near("power_kw", image.power_w / 1000, 0.001)
        near("voltage_l1", image.voltages_v[0], 0.1)
        near("current_l3", image.currents_a[2], 0.01)
        near("frequency_hz", image.frequency_hz, 0.01)
        near("power_factor", image.power_factor, 0.001)


async def test_each_preset_reads_what_the_simulator_serves(tmp_path: Path) -> None:
    scenario = _every_layout()
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        devices = _devices(plant, scenario)
        assert {d.points[0].table for d in devices} == {"input", "holding"}
        assert {m.layout for m in scenario.effective_meters} == set(LAYOUTS) == set(PRESETS)
        collector = ModbusCollector(_spec(devices, port=plant.modbus_port))
        sink: asyncio.Queue[Sample] = asyncio.Queue(10_000)
        async with running(collector, sink):
            await _compare_with_model(plant, sink, devices)
        assert all(h.errors == 0 for h in collector.health.values())


async def test_a_slow_unit_gets_its_own_timeout(tmp_path: Path) -> None:
    """meter-02 answers 0.5 s late: the source's 0.2 s timeout fails it, its own 1.5 s
    override reads it, and the others keep the short timeout."""
    scenario = _three_layouts()
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        plant.set_modbus_fault("meter-02", "slow", delay_s=0.5)
        plain = _devices(plant, scenario)
        patient = tuple(replace(d, timeout_s=1.5) if d.id == "meter-02" else d for d in plain)
        results = []
        for devices in (plain, patient):
            collector = ModbusCollector(_spec(devices, port=plant.modbus_port,
                                              poll_interval_s=2.0))
            sink: asyncio.Queue[Sample] = asyncio.Queue(10_000)
            async with running(collector, sink):
                sample = await wait_for_sample(
                    sink, lambda s: s.device == "meter-01" and s.signal == "energy_kwh")
                assert sample.quality == "good"
                await wait_until(lambda c=collector: c.health["meter-02"].samples > 0
                                 or c.health["meter-02"].errors > 0, within=10)
                results.append(collector.health["meter-02"])
    slow_plain, slow_patient = results
    assert slow_plain.samples == 0 and slow_plain.errors > 0
    assert slow_patient.samples > 0 and slow_patient.errors == 0


def _wait_for(paths: list[Path], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 5
    while not all(p.exists() for p in paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"socat did not create {paths}")
        time.sleep(0.05)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo terminals from socat: (server side, client side)."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    a, b = tmp_path / "server-tty", tmp_path / "client-tty"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for([a, b], proc)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
def rtu_bridge(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A pty for the simulator's RTU server bridged to a TCP port (an RTU-over-TCP
    gateway, e.g. a serial device server in transparent mode): (pty path, port)."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    tty, port = tmp_path / "gw-tty", free_port()
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={tty}",
         f"tcp-listen:{port},bind=127.0.0.1,reuseaddr,fork"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for([tty], proc)
        yield str(tty), port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def test_rtu_over_serial_reads_every_preset(tmp_path: Path,
                                                 pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair
    scenario = _every_layout()
    async with Plant(scenario, ledger_dir=tmp_path, rtu_port=server_tty,
                     rtu_baudrate=BAUD) as plant:
        devices = _devices(plant, scenario)
        collector = ModbusCollector(_spec(devices, transport="rtu", serial_port=client_tty))
        sink: asyncio.Queue[Sample] = asyncio.Queue(10_000)
        async with running(collector, sink):
            await _compare_with_model(plant, sink, devices)


async def test_rtu_over_tcp_through_a_bridge(tmp_path: Path,
                                             rtu_bridge: tuple[str, int]) -> None:
    tty, port = rtu_bridge
    scenario = _three_layouts()
    async with Plant(scenario, ledger_dir=tmp_path, rtu_port=tty, rtu_baudrate=BAUD) as plant:
        devices = _devices(plant, scenario)
        collector = ModbusCollector(_spec(devices, transport="rtu-over-tcp", port=port))
        sink: asyncio.Queue[Sample] = asyncio.Queue(10_000)
        async with running(collector, sink):
            await _compare_with_model(plant, sink, devices)


async def test_dead_unit_on_a_serial_bus_does_not_hold_up_its_neighbours(
    tmp_path: Path, pty_pair: tuple[str, str]
) -> None:
    server_tty, client_tty = pty_pair
    scenario = default_scenario(machines=3, seed=4, fast=True)
    async with Plant(scenario, ledger_dir=tmp_path, rtu_port=server_tty,
                     rtu_baudrate=BAUD) as plant:
        devices = _devices(plant, scenario)
        # Generous timeout: on a loaded machine a healthy reply over the pty can be slow.
        spec = _spec(devices, transport="rtu", serial_port=client_tty, timeout_s=0.4,
                     poll_interval_s=0.5, backoff_min_s=3.0, backoff_max_s=6.0)
        collector = ModbusCollector(spec)
        sink: asyncio.Queue[Sample] = asyncio.Queue(100_000)
        per_poll = len(devices[0].points)

        async def polls_in(seconds: float) -> dict[str, int]:
            while not sink.empty():
                sink.get_nowait()
            await asyncio.sleep(seconds)
            counts: dict[str, int] = {}
            while not sink.empty():
                s = sink.get_nowait()
                counts[s.device] = counts.get(s.device, 0) + 1
            return {d: n // per_poll for d, n in counts.items()}

        async with running(collector, sink):
            await asyncio.sleep(1.0)
            healthy = await polls_in(4.0)
            plant.set_modbus_fault("meter-02", "silent")
            await asyncio.sleep(0.5)
            faulty = await polls_in(4.0)
            dead = collector.health["meter-02"]
            plant.set_modbus_fault("meter-02", None)
            # The next attempt comes after the unit's backoff (up to 6 s after the last
            # failure, which may fall just before the fault was cleared).
            await wait_until(lambda: collector.health["meter-02"].failing_since_ms is None,
                             within=15)
            recovered = collector.health["meter-02"]
    assert dead.failing_since_ms is not None and not dead.connected
    assert "meter-02" not in faulty or faulty["meter-02"] <= 1
    for meter in ("meter-01", "meter-03"):
        # The dead unit costs one 0.4 s timeout per backoff (3-6 s), not one per poll:
        # the neighbours keep (nearly) their healthy rate. Loose bound for busy machines.
        assert faulty[meter] >= 0.5 * healthy[meter], (healthy, faulty)
    assert recovered.failing_since_ms is None and recovered.connected

"""Modbus collector against a real pymodbus TCP server on loopback."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator

import pytest
from opcua_modbus_servers import (
    f32_regs,
    free_port,
    running,
    start_gateway,
    wait_for_sample,
    wait_until,
)

from agent.logs import setup_logging
from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
from collectors.presets import preset_points
from rules.types import Sample

pytestmark = pytest.mark.integration


def _source(port: int, devices: tuple[ModbusDeviceSpec, ...], **kw: object) -> ModbusSourceSpec:
    params: dict[str, object] = {"poll_interval_s": 0.2, "timeout_s": 0.2, "retries": 0,
                                 "backoff_min_s": 1.0, "backoff_max_s": 2.0}
    params.update(kw)
    return ModbusSourceSpec(id="gw", port=port, devices=devices, **params)  # type: ignore[arg-type]


async def _collect(sink: asyncio.Queue[Sample], n: int, within: float = 10) -> list[Sample]:
    out: list[Sample] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await sink.get())
    return out


async def test_sdm630_preset_decodes_energy_and_power() -> None:
    gw = await start_gateway(free_port(), units=(1,))
    try:
        await gw.set_input(1, 0x0000, f32_regs(230.5))
        await gw.set_input(1, 0x0034, f32_regs(12345.0))  # W
        await gw.set_input(1, 0x0048, f32_regs(15023.75))  # kWh
        points = preset_points("sdm630", "meter-01")
        spec = _source(gw.port, (ModbusDeviceSpec("meter-01", 1, points),))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        before = int(time.time() * 1000)
        collector = ModbusCollector(spec)
        async with running(collector, sink):
            samples = {s.signal: s for s in await _collect(sink, len(spec.devices[0].points))}
            health = collector.health["meter-01"]
        assert samples["energy_kwh"].value == pytest.approx(15023.75)
        assert samples["power_kw"].value == pytest.approx(12.345)
        assert samples["voltage_l1"].value == pytest.approx(230.5)
        assert all(s.ts_source == "receive" and s.quality == "good" for s in samples.values())
        assert samples["energy_kwh"].ts_ms >= before
        assert health.connected and health.samples >= 11 and health.errors == 0
    finally:
        await gw.stop()


async def test_word_and_byte_order_variants_and_types() -> None:
    gw = await start_gateway(free_port(), units=(1,))
    try:
        await gw.set_holding(1, 0, f32_regs(1.5, "big"))
        await gw.set_holding(1, 2, f32_regs(1.5, "little"))
        await gw.set_holding(1, 4, [0x0001, 0x0002])  # u32 little words -> 0x00020001
        await gw.set_holding(1, 6, [0xFFFE])  # i16 -2
        await gw.set_holding(1, 7, [0x3412])  # u16 byte-swapped 0x1234
        await gw.set_holding(1, 30, [0x4142, 0x4300])  # "ABC"
        await gw.set_holding(1, 40, [0, 0, 0x0001, 0x86A0])  # u64 100000 (gap 10 from 30)
        points = (
            RegisterPoint("m", "f32_abcd", "holding", 0, "f32"),
            RegisterPoint("m", "f32_cdab", "holding", 2, "f32", word_order="little"),
            RegisterPoint("m", "u32_cdab", "holding", 4, "u32", word_order="little"),
            RegisterPoint("m", "i16", "holding", 6, "i16", scale=0.5, offset=1.0),
            RegisterPoint("m", "u16_swapped", "holding", 7, "u16", byte_order="little"),
            RegisterPoint("m", "name", "holding", 30, "string", length=2),
            RegisterPoint("m", "u64", "holding", 40, "u64", scale=0.01),
        )
        spec = _source(gw.port, (ModbusDeviceSpec("m", 1, points),))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(ModbusCollector(spec), sink):
            got = {s.signal: s.value for s in await _collect(sink, len(points))}
        assert got == {
            "f32_abcd": 1.5, "f32_cdab": 1.5, "u32_cdab": 0x00020001, "i16": 0.0,
            "u16_swapped": 0x1234, "name": "ABC", "u64": pytest.approx(1000.0),
        }
    finally:
        await gw.stop()


async def test_coils_and_discrete_inputs_read_as_zero_or_one() -> None:
    gw = await start_gateway(free_port(), units=(1,))
    try:
        await gw.set_coils(1, 0, [True, False, True])
        await gw.set_discrete(1, 4, [False, True])
        await gw.set_holding(1, 0, [7])
        points = (
            RegisterPoint("m", "running", "coil", 0, "u16"),
            RegisterPoint("m", "alarm", "coil", 1, "u16"),
            RegisterPoint("m", "door_closed", "coil", 2, "u16"),
            RegisterPoint("m", "estop", "discrete", 4, "u16"),
            RegisterPoint("m", "interlock", "discrete", 5, "u16"),
            RegisterPoint("m", "mode", "holding", 0, "u16"),
        )
        spec = _source(gw.port, (ModbusDeviceSpec("m", 1, points),))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(ModbusCollector(spec), sink):
            got = {s.signal: s for s in await _collect(sink, len(points))}
            await gw.set_coils(1, 1, [True])
            changed = await wait_for_sample(sink, lambda s: s.signal == "alarm" and s.value == 1)
        assert {k: s.value for k, s in got.items()} == {
            "running": 1, "alarm": 0, "door_closed": 1, "estop": 0, "interlock": 1, "mode": 7}
        assert all(s.quality == "good" for s in got.values())
        assert changed.ts_ms >= got["alarm"].ts_ms
    finally:
        await gw.stop()


async def test_a_state_code_register_is_mapped_to_state_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(free_port(), units=(1,))
    try:
        await gw.set_holding(1, 50, [2])
        codes = {"0": "off", "1": "idle", "2": "producing", "3": "setup"}
        points = (RegisterPoint("cnc-01", "state", "holding", 50, "u16", value_map=codes),
                  RegisterPoint("cnc-01", "door", "coil", 0, value_map={"0": "idle",
                                                                         "1": "setup"}))
        collector = ModbusCollector(_source(gw.port, (ModbusDeviceSpec("cnc-01", 1, points),)))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(collector, sink):
            got = {s.signal: s for s in await _collect(sink, 2)}
            await gw.set_holding(1, 50, [9])  # a code the map does not know
            bad = await wait_for_sample(sink, lambda s: s.signal == "state" and s.value == "9")
            await wait_for_sample(sink, lambda s: s.signal == "state" and s.value == "9")
            await gw.set_holding(1, 50, [3])
            good = await wait_for_sample(sink, lambda s: s.signal == "state" and
                                         s.value == "setup")
            health = collector.health["cnc-01"]
        assert (got["state"].value, got["state"].quality) == ("producing", "good")
        assert (got["door"].value, got["door"].quality) == ("idle", "good")
        assert bad.quality == "bad" and good.quality == "good"
        assert health.errors >= 2 and "not in value_map" in (health.last_error or "")
        assert sum("not in value_map" in r.getMessage() for r in caplog.records) == 1
    finally:
        await gw.stop()


async def test_exception_response_marks_only_that_device_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(free_port(), units=(1, 2))
    try:
        good = ModbusDeviceSpec("m1", 1, (RegisterPoint("m1", "energy_kwh", "input", 0x48, "f32"),))
        bad = ModbusDeviceSpec("m2", 2, (RegisterPoint("m2", "energy_kwh", "input", 120, "f32"),))
        collector = ModbusCollector(_source(gw.port, (good, bad)))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(collector, sink):
            await wait_until(lambda: collector.health["m1"].samples >= 5)
            await asyncio.sleep(1.5)  # past the first backoff: a second attempt
            h1, h2 = collector.health["m1"], collector.health["m2"]
        assert not h2.connected and h2.failing_since_ms is not None
        assert "exception response 2" in (h2.last_error or "")
        assert 2 <= h2.errors <= 3  # backed off, not hammered every 0.2 s
        assert h1.connected and h1.errors == 0
        failing_logs = [r for r in caplog.records
                        if "m2" in r.getMessage() and "failing" in r.getMessage()]
        assert len(failing_logs) == 1
    finally:
        await gw.stop()


async def test_dead_unit_does_not_slow_its_neighbours() -> None:
    gw = await start_gateway(free_port(), units=(1, 2, 3), dead=frozenset({3}))
    try:
        devices = tuple(
            ModbusDeviceSpec(f"m{u}", u, preset_points("sdm630", f"m{u}")) for u in (1, 2, 3))
        collector = ModbusCollector(_source(gw.port, devices, backoff_min_s=1.0, backoff_max_s=1.0))
        sink: asyncio.Queue[Sample] = asyncio.Queue(100_000)
        async with running(collector, sink):
            await asyncio.sleep(0.5)
            start = {d: collector.health[d].samples for d in ("m1", "m2")}
            await asyncio.sleep(3.0)
            polls = {d: (collector.health[d].samples - start[d]) / 11 for d in ("m1", "m2")}
            h3 = collector.health["m3"]
        # 3 s at 0.2 s is 15 polls; the dead unit costs one 0.2 s timeout per second.
        assert all(p >= 11 for p in polls.values()), polls
        assert not h3.connected and h3.samples == 0 and h3.errors >= 2
        assert "No response" in (h3.last_error or "") or "unit 3" in (h3.last_error or "")
    finally:
        await gw.stop()


async def test_undecodable_value_is_a_bad_sample() -> None:
    gw = await start_gateway(free_port(), units=(1,))
    try:
        await gw.set_input(1, 0x48, [0x7FC0, 0x0000])  # NaN: "not available"
        await gw.set_input(1, 0x34, f32_regs(1000.0))
        dev = ModbusDeviceSpec("m", 1, (
            RegisterPoint("m", "energy_kwh", "input", 0x48, "f32"),
            RegisterPoint("m", "power_kw", "input", 0x34, "f32", scale=0.001),
        ))
        collector = ModbusCollector(_source(gw.port, (dev,)))
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(collector, sink):
            got = {s.signal: s for s in await _collect(sink, 2)}
            health = collector.health["m"]
        assert got["energy_kwh"].quality == "bad" and got["energy_kwh"].value is None
        assert got["power_kw"].value == pytest.approx(1.0)
        assert health.errors >= 1 and health.connected  # the device itself answered
    finally:
        await gw.stop()


async def test_gateway_restart_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="collectors.modbus")
    port = free_port()
    gw = await start_gateway(port, units=(1,))
    dev = ModbusDeviceSpec("m", 1, (RegisterPoint("m", "energy_kwh", "input", 0x48, "f32"),))
    collector = ModbusCollector(_source(port, (dev,), backoff_min_s=0.2, backoff_max_s=0.4))
    sink: asyncio.Queue[Sample] = asyncio.Queue(100_000)
    try:
        async with running(collector, sink):
            await wait_until(lambda: collector.health["m"].samples >= 2)
            await gw.stop()
            await wait_until(lambda: not collector.health["m"].connected)
            await asyncio.sleep(1.0)
            gw = await start_gateway(port, units=(1,))
            await gw.set_input(1, 0x48, f32_regs(42.0))
            async with asyncio.timeout(10):
                while (await sink.get()).value != 42.0:
                    pass
            assert collector.health["m"].connected
            assert collector.stats.reconnects >= 1
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(recovered) == 1
    finally:
        await gw.stop()


@pytest.fixture
def agent_log() -> Iterator[io.StringIO]:
    """The agent's own logging set-up (``--log-level info``), written to a buffer."""
    root, pymodbus = logging.getLogger(), logging.getLogger("pymodbus")
    saved = root.handlers[:], root.level, pymodbus.level
    stream = io.StringIO()
    setup_logging("info", "text")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        pymodbus.setLevel(saved[2])


async def test_pymodbus_frame_dumps_stay_out_of_the_agents_log(agent_log: io.StringIO) -> None:
    gw = await start_gateway(free_port(), units=(1, 2, 3), dead=frozenset({3}))
    try:
        devices = (
            ModbusDeviceSpec("m1", 1, (RegisterPoint("m1", "energy_kwh", "input", 0x48, "f32"),)),
            ModbusDeviceSpec("m2", 2, (RegisterPoint("m2", "energy_kwh", "input", 120, "f32"),)),
            ModbusDeviceSpec("m3", 3, (RegisterPoint("m3", "energy_kwh", "input", 0x48, "f32"),)),
        )
        collector = ModbusCollector(_source(gw.port, devices, backoff_min_s=0.2,
                                            backoff_max_s=0.4))
        sink: asyncio.Queue[Sample] = asyncio.Queue(100_000)
        async with running(collector, sink):
            await wait_until(lambda: all(collector.health[d].errors >= 3 for d in ("m2", "m3")))
    finally:
        await gw.stop()
    lines = agent_log.getvalue().splitlines()
    assert [line for line in lines if "pymodbus" in line or "0x" in line] == []
    failing = sorted(line.split("modbus gw: ")[1] for line in lines if "failing" in line)
    assert failing == [
        "device m2 (unit 2) failing: input 120+2 unit 2: exception response 2",
        "device m3 (unit 3) failing: input 72+2 unit 3: no valid reply: Modbus Error: "
        "[Input/Output] No response received after 0 retries, continue with next request"]

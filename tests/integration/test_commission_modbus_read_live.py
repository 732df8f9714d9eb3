"""``edge-agent modbus-read`` against the bundled Modbus simulator, over TCP and over RTU
through a socat pty pair, run as a process while the simulator answers from this loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

BAUD = 115200
ENERGY = 0x0048
"""sdm630: total import active energy, float32 high word first, input registers."""


async def _edge_agent(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _f32_text(value: float) -> str:
    """How the table prints a float32: the value the registers hold, 7 digits."""
    (served,) = struct.unpack(">f", struct.pack(">f", value))
    return f"{served:.7g}"


def _check_energy_rows(out: str, energy_kwh: float) -> None:
    rows = {tuple(ln.split()[:2]): ln.split() for ln in out.splitlines()
            if ln.startswith(("f32 ", "u32 ", "u16 "))}
    abcd = rows[("f32", "ABCD")]
    assert abcd[2] == _f32_text(energy_kwh)
    assert 'type = "f32"' in " ".join(abcd)
    assert float(abcd[2]) == pytest.approx(energy_kwh, abs=0.01)
    # The other orders of the same registers are not the meter's reading.
    for order in ("CDAB", "BADC", "DCBA"):
        row = rows[("f32", order)]
        assert row[2] == "-" or float(row[2]) != pytest.approx(energy_kwh, rel=1e-3)


async def _meter_reading(plant: Plant, meter: str) -> float:
    return float(plant.meter_model(meter).image().energy_kwh)


async def test_tcp_read_of_the_sdm630_energy_shows_the_float32_row() -> None:
    async with Plant(default_scenario(machines=2, seed=5)) as plant:
        meter, unit = plant.meters[0]
        async with plant.frozen():
            energy = await _meter_reading(plant, meter)
            code, out, err = await _edge_agent(
                "modbus-read", "--host", "127.0.0.1", "--port", str(plant.modbus_port),
                "--unit", str(unit), "--address", hex(ENERGY), "--function", "input")
        assert code == 0, err
        first = out.splitlines()[0]
        assert first == (f"input registers 72..73 (0x0048..0x0049), function 04, unit {unit}, "
                         f"127.0.0.1:{plant.modbus_port}")
        raw = struct.pack(">f", energy)
        assert f"0x{raw[0:2].hex().upper()}" in out and f"0x{raw[2:4].hex().upper()}" in out
        assert "30073" in out  # the manual's 1-based number of input register 72
        _check_energy_rows(out, energy)

        # A manual's 1-based number given as the address: refused by the device, and the
        # message says which address was meant.
        code, out, err = await _edge_agent(
            "modbus-read", "--host", "127.0.0.1", "--port", str(plant.modbus_port),
            "--unit", str(unit), "--address", "30073", "--function", "input")
        assert code == 1 and out == ""
        assert "exception response 2 ILLEGAL DATA ADDRESS" in err
        assert "--function input --address 72" in err
        assert len(err.strip().splitlines()) == 1


async def test_no_device_is_one_line_and_exit_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await _edge_agent("modbus-read", "--host", "127.0.0.1", "--port",
                                       str(port), "--unit", "1", "--address", "0")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"edge-agent modbus-read: cannot connect to 127.0.0.1:{port} (refused, unreachable "
        "or no such serial port)"]


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo terminals from socat: (simulator side, client side)."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    a, b = tmp_path / "server-tty", tmp_path / "client-tty"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.05)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def test_rtu_read_over_a_serial_line(pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair
    async with Plant(default_scenario(machines=2, seed=5), rtu_port=server_tty,
                     rtu_baudrate=BAUD) as plant:
        meter, unit = plant.meters[1]
        async with plant.frozen():
            energy = await _meter_reading(plant, meter)
            code, out, err = await _edge_agent(
                "modbus-read", "--serial", client_tty, "--baud", str(BAUD), "--unit",
                str(unit), "--address", str(ENERGY), "--count", "4", "--function", "input")
    assert code == 0, err
    assert out.splitlines()[0].endswith(f"unit {unit}, {client_tty} ({BAUD} 8N1)")
    _check_energy_rows(out, energy)
    assert "f64" in out and "64-bit types need" not in out

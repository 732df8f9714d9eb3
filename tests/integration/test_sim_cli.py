"""``edge-agent sim`` and ``python -m simulators``, run as a user would: as processes.

The printed endpoint and node/register map are enough for plain clients to read the
running simulators; a bad scenario exits 2 naming the key, without a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from simulators.opcua_server import NAMESPACE_URI, VARIABLES

pytestmark = pytest.mark.integration

BAD_SCENARIO = """\
name = "bad"
[[machines]]
id = "cnc-01"
colour = "red"
[[machines.programs]]
name = "O1"
cycle_time_s = 30.0
"""


def _run(*args: str, timeout: float = 25) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def _edge_agent(*args: str, timeout: float = 25) -> subprocess.CompletedProcess[str]:
    return _run("-m", "agent.cli", *args, timeout=timeout)


@pytest.fixture
def running_plant(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``edge-agent sim plant`` on free ports; yields the process and what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sim", "plant", "--opcua-port", "0",
         "--modbus-port", "0", "--ledger-dir", str(tmp_path), "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Running"):
                break
        else:
            pytest.fail("the simulator did not come up within 20 s")
        assert lines and lines[-1].startswith("Running"), "".join(lines)
        yield proc, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_sim_plant_prints_a_map_plain_clients_can_use(
        running_plant: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    proc, printed = running_plant
    endpoint = re.search(r"^OPC UA endpoint: (opc\.tcp://127\.0\.0\.1:\d+)$", printed, re.M)
    modbus = re.search(r"^Modbus TCP: 127\.0\.0\.1:(\d+)$", printed, re.M)
    assert endpoint and modbus, printed
    paths = re.findall(r"^  (Objects/\S+)  \((\w+)\)$", printed, re.M)
    assert len(paths) == 3 * len(VARIABLES)  # the bundled scenario has three machines
    assert f"namespace URI: {NAMESPACE_URI}" in printed
    unit = re.search(r"unit (\d+): meter-01 \(sdm630", printed)
    assert unit, printed
    assert "0x0048 total import active energy kWh" in printed
    assert f"Ledger (opcua): {tmp_path / 'opcua.jsonl'}" in printed

    counter = next(p for p, _ in paths if p.endswith("cnc-01/cnc:Production/"
                                                     "cnc:PartsProducedInLifetime"))
    async with Client(endpoint.group(1)) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        names = [part.replace("cnc:", f"{ns}:") for part in counter.split("/")[1:]]
        node = await client.nodes.objects.get_child(names)
        assert await node.read_value() >= 182340  # the bundled scenario's initial count
    mb = AsyncModbusTcpClient("127.0.0.1", port=int(modbus.group(1)), timeout=2, retries=1)
    await mb.connect()
    try:
        rr = await mb.read_input_registers(0x0048, count=2, device_id=int(unit.group(1)))
        assert not rr.isError(), rr
        energy = mb.convert_from_registers(rr.registers, mb.DATATYPE.FLOAT32)
        assert 4821.0 <= float(energy) < 10000.0
    finally:
        mb.close()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize(("kind", "shown", "hidden"), [
    ("modbus", "Modbus TCP: 127.0.0.1:", "OPC UA endpoint"),
    ("opcua", "OPC UA endpoint: opc.tcp://127.0.0.1:", "Modbus TCP"),
])
def test_sim_kind_prints_its_map_and_duration_ends_it(kind: str, shown: str,
                                                      hidden: str) -> None:
    res = _edge_agent("sim", kind, "--opcua-port", "0", "--modbus-port", "0",
                      "--duration", "1")
    assert res.returncode == 0, res.stderr
    assert shown in res.stdout and hidden not in res.stdout
    assert "Traceback" not in res.stderr


def test_bad_scenario_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_SCENARIO)
    res = _edge_agent("sim", "plant", "--scenario", str(bad))
    assert res.returncode == 2
    assert f'{bad}: machines[0] "cnc-01": colour: Extra inputs are not permitted' in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_bad_fault_and_missing_file_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "fault.toml"
    bad.write_text(BAD_SCENARIO.replace('colour = "red"\n', "") + "[[faults]]\nat_s = 1\n"
                   "kind = 'opcua_node_missing'\ntarget = 'cnc-01'\nnode = 'No/Such'\n")
    res = _edge_agent("sim", "opcua", "--scenario", str(bad))
    assert res.returncode == 2
    assert "faults[0]: node" in res.stderr and "Traceback" not in res.stderr
    res = _edge_agent("sim", "modbus", "--scenario", str(tmp_path / "missing.toml"))
    assert res.returncode == 2
    assert "cannot read scenario" in res.stderr and "Traceback" not in res.stderr


def test_port_in_use_exits_1_without_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _edge_agent("sim", "modbus", "--modbus-port", str(port), "--opcua-port", "0",
                          "--duration", "1")
    assert res.returncode == 1
    assert "cannot start the simulators" in res.stderr and "Traceback" not in res.stderr


def test_python_m_simulators_is_the_same_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_SCENARIO)
    res = _run("-m", "simulators", "--scenario", str(bad))
    assert res.returncode == 2
    assert 'machines[0] "cnc-01": colour' in res.stderr and "Traceback" not in res.stderr
    res = _run("-m", "simulators", "--time-scale", "-1")
    assert res.returncode == 2 and "--time-scale: must be" in res.stderr
    res = _run("-m", "simulators", "modbus", "--fast", "2", "--opcua-port", "0",
               "--modbus-port", "0", "--time-scale", "60", "--start", "2024-03-04T06:00:00Z",
               "--duration", "1")
    assert res.returncode == 0, res.stderr
    assert "unit 2: meter-02 (sdm630" in res.stdout
    assert "Clock: 60x from 2024-03-04T06:00:00." in res.stdout

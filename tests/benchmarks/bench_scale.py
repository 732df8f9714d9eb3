"""The whole agent against a large simulated plant, run as a script (prints the figures).

    python tests/benchmarks/bench_scale.py [--machines 250] [--meters 25] [--seconds 120]
        [--hz 10]

Three processes besides this one, each measured from ``/proc``:

- the bundled simulators (:class:`simulators.plant.Plant`: OPC UA and Modbus TCP) with
  ``--machines`` CNC machines on the fast scenario and ``--meters`` SDM630 meters; every
  cutting machine's spindle readings change ``--hz`` times a second
  (``telemetry_hz``), on top of its state changes and parts;
- a Mosquitto broker (:class:`agent.services.ManagedMosquitto`);
- the agent, ``edge-agent run``: per machine state, part and scrap counters and the
  spindle load (as ``power_kw``, the signal that moves at ``--hz``), subscribed with a
  publishing interval of ``1000 / --hz`` ms; the meters polled every second; 10 s KPI
  windows.

After a warm-up it prints, over ``--seconds``: the agent's CPU % of one core (utime +
stime of all its threads), its largest RSS (``VmHWM``), the samples/s its engine took
(``edge_agent_engine_samples_total`` of its ``/metrics``), the KPI records/s it made
(``edge_agent_kpi_records_total``), the bytes it caused to be written to storage per hour
(``write_bytes`` of ``/proc/PID/io``), its source reconnects and device errors, and the
simulator's CPU % and how far behind its schedule it ran (:attr:`Plant.lag_s`, sampled
every second: mean and maximum; fewer readings than seconds mean its loop stalled).

Figures depend on the machine and on what else runs on it; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import tomli_w

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.services import ManagedMosquitto  # noqa: E402

SIM_NAMESPACE = "urn:factory-edge:simulator:cnc"
STATE_CODES = {"0": "off", "1": "idle", "2": "producing", "3": "setup", "4": "unplanned_down",
               "5": "planned_down"}
WARM_UP_S = 15.0
EDGE_AGENT = [sys.executable, "-c",
              "import sys; from agent.cli import main; sys.argv[0] = 'edge-agent'; "
              "sys.exit(main())"]
"""``edge-agent`` as this interpreter runs it (the same process, not a wrapper script)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the simulator (child process) -----------------------------------------------------

async def _serve_plant(machines: int, meters: int, hz: float) -> None:
    """Run the plant; one JSON line when ready, then one a second with the lag."""
    from simulators.plant import Plant
    from simulators.scenario import default_scenario

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    # pymodbus logs a dropped reply (with its last frames) when the agent goes first.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    scenario = default_scenario(machines=machines, seed=1, fast=True, meters=meters)
    scenario = scenario.model_copy(update={"telemetry_hz": hz})
    async with Plant(scenario) as plant:
        print(json.dumps({"opcua": plant.opcua_endpoint, "modbus": plant.modbus_port,
                          "machines": plant.machines, "meters": plant.meters}), flush=True)
        while True:
            await asyncio.sleep(1.0)
            print(json.dumps({"lag_s": plant.lag_s, "max_lag_s": plant.max_lag_s}), flush=True)


class SimulatorProcess:
    """The plant in a child process; a thread keeps its latest lag readings."""

    def __init__(self, machines: int, meters: int, hz: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-plant", str(machines), str(meters), str(hz)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the simulator did not start")
        self.info: dict[str, Any] = json.loads(line)
        self.lags: list[float] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,),
                                        daemon=True)
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            with self._lock:
                self.lags.append(float(json.loads(line)["lag_s"]))

    def lags_since(self, index: int) -> list[float]:
        """The lag readings (one a second) from ``index`` on."""
        with self._lock:
            return self.lags[index:]

    def stop(self) -> None:
        """Terminate the plant."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- /proc readings ----------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def write_bytes(pid: int) -> int:
    """What ``pid`` caused to be written to storage so far."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def rss_max_mb(pid: int) -> float:
    """The process's largest resident set so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


_METRIC = re.compile(r"^(edge_agent_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)


def metrics(port: int) -> dict[str, float]:
    """The agent's counters, summed over their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for name, _, value in _METRIC.findall(text):
        out[name] = out.get(name, 0.0) + float(value)
    return out


# -- the agent ---------------------------------------------------------------------------

def _path(machine: str, *parts: str) -> str:
    return "/".join(["Objects", "cnc:Machines", f"cnc:{machine}", *(f"cnc:{p}" for p in parts)])


def agent_config(sim: dict[str, Any], *, mqtt_port: int, health_port: int, state_dir: Path,
                 hz: float) -> dict[str, Any]:
    """The agent's config for the plant (the shape of ``deploy/examples/simulators.toml``)."""
    machines = []
    for m in sim["machines"]:
        machines.append({
            "id": m, "line": "line-a", "ideal_cycle_time_s": 2.0,
            "signals": {
                "state": {"source": "cnc-opcua", "map": STATE_CODES,
                          "browse_path": _path(m, "Monitoring", "MachineTool", "MachineState")},
                "parts_total": {"source": "cnc-opcua",
                                "browse_path": _path(m, "Production", "PartsProducedInLifetime")},
                "parts_bad": {"source": "cnc-opcua",
                              "browse_path": _path(m, "Production", "PartsScrapInLifetime")},
                # The reading that moves at --hz; it stands in for a power signal.
                "power_kw": {"source": "cnc-opcua",
                             "browse_path": _path(m, "Monitoring", "Spindle", "Load")},
            },
        })
    meters = [{"id": meter, "machine": sim["machines"][i], "source": "meters", "unit": unit,
               "preset": "sdm630", "resolution_kwh": 0.01}
              for i, (meter, unit) in enumerate(sim["meters"])]
    return {
        "agent": {"id": "bench-agent", "state_dir": str(state_dir)},
        "health": {"host": "127.0.0.1", "port": health_port},
        "site": {"id": "bench-site", "timezone": "UTC"},
        "kpi": {"windows": ["10s"], "lateness_s": 2.0},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "protocol": "5"},
        "sources": [
            {"id": "cnc-opcua", "type": "opcua", "url": sim["opcua"],
             "namespaces": {"cnc": SIM_NAMESPACE},
             "publishing_interval_ms": max(50, round(1000 / hz)) if hz > 0 else 200},
            {"id": "meters", "type": "modbus", "host": "127.0.0.1", "port": sim["modbus"],
             "poll_interval_s": 1.0, "timeout_s": 0.3, "retries": 1},
        ],
        "lines": [{"id": "line-a", "output_machine": sim["machines"][-1]}],
        "machines": machines,
        "meters": meters,
    }


def _wait_for_samples(port: int, proc: subprocess.Popen[bytes], timeout_s: float,
                      log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited with code {proc.returncode}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        try:
            if metrics(port).get("edge_agent_engine_samples_total", 0) > 0:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the agent took no sample within {timeout_s:.0f} s")


def run(machines: int, meters: int, seconds: float, hz: float) -> None:
    started = time.monotonic()
    sim = SimulatorProcess(machines, meters, hz)
    print(f"simulator: {machines} machines, {meters} meters, spindle readings at {hz:g} Hz, "
          f"pid {sim.proc.pid}, ready after {time.monotonic() - started:.1f} s")
    agent: subprocess.Popen[bytes] | None = None
    with ManagedMosquitto() as broker, tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        try:
            health = _free_port()
            cfg_path = Path(tmp) / "agent.toml"
            cfg_path.write_text(tomli_w.dumps(agent_config(
                sim.info, mqtt_port=broker.port, health_port=health,
                state_dir=Path(tmp) / "state", hz=hz)))
            log = (Path(tmp) / "agent.log").open("wb")
            agent = subprocess.Popen(
                [*EDGE_AGENT, "run", "-c", str(cfg_path)], stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
            _wait_for_samples(health, agent, 120, Path(tmp) / "agent.log")
            time.sleep(WARM_UP_S)
            m0, c0, w0, s0 = metrics(health), cpu_s(agent.pid), write_bytes(agent.pid), \
                cpu_s(sim.proc.pid)
            lag_index, t0 = len(sim.lags_since(0)), time.monotonic()
            time.sleep(seconds)
            m1, c1, w1, s1 = metrics(health), cpu_s(agent.pid), write_bytes(agent.pid), \
                cpu_s(sim.proc.pid)
            elapsed = time.monotonic() - t0
            rss = rss_max_mb(agent.pid)
            lags = sim.lags_since(lag_index)
        finally:
            if agent is not None and agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
            sim.stop()
        tail = (Path(tmp) / "agent.log").read_text(errors="replace").splitlines()[-5:]

    def delta(name: str) -> float:
        return m1.get(name, 0.0) - m0.get(name, 0.0)

    def rate(name: str) -> float:
        return delta(name) / elapsed

    print(f"over {elapsed:.0f} s after a {WARM_UP_S:.0f} s warm-up:")
    print(f"  agent: CPU {100 * (c1 - c0) / elapsed:.1f} % of one core, RSS max {rss:.0f} MB, "
          f"{rate('edge_agent_engine_samples_total'):,.0f} samples/s, "
          f"{rate('edge_agent_kpi_records_total'):,.1f} records/s, "
          f"{rate('edge_agent_mqtt_published_total'):,.1f} messages published/s")
    print(f"  agent disk: {(w1 - w0) * 3600 / elapsed / 1e6:.1f} MB written per hour "
          f"(write_bytes); source reconnects "
          f"{delta('edge_agent_source_reconnects_total'):.0f}, device errors "
          f"{delta('edge_agent_device_errors_total'):.0f}")
    if lags:
        print(f"  simulator: CPU {100 * (s1 - s0) / elapsed:.1f} % of one core, lag behind "
              f"schedule mean {statistics.mean(lags) * 1000:.0f} ms, max "
              f"{max(lags) * 1000:.0f} ms ({len(lags)} readings)")
    else:
        print("  simulator: no lag readings")
    if agent is not None and agent.returncode not in (0, None, -signal.SIGTERM):
        print(f"  agent exited with code {agent.returncode}; log tail:", *tail, sep="\n    ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=250)
    parser.add_argument("--meters", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--hz", type=float, default=10.0,
                        help="how often the machines' spindle readings change")
    parser.add_argument("--serve-plant", nargs=3, metavar=("MACHINES", "METERS", "HZ"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plant:
        m, n, hz = args.serve_plant
        asyncio.run(_serve_plant(int(m), int(n), float(hz)))
        return
    run(args.machines, args.meters, args.seconds, args.hz)


if __name__ == "__main__":
    main()

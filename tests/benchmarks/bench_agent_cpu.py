"""CPU per notification of the whole agent next to a bare asyncua client, run as a script.

    python tests/benchmarks/bench_agent_cpu.py [--machines 250] [--period-ms 100]
        [--seconds 10] [--rounds 4] [--profile DIR]

An asyncua server in its own process (its CPU is not counted) serves ``--machines``
machines of four variables each (state code, part and scrap counters, power in kW) and,
every ``--period-ms``, changes every machine's power, now and then a counter, rarely a
state. In alternating rounds of one run two clients subscribe to the same nodes, each in
a process of its own:

- a bare asyncua client (iterator-mode subscription, counting notifications);
- the whole agent, ``edge-agent run`` (OPC UA collector, KPI engine, outbox with its
  sample journal and checkpoints, MQTT publisher) against a real Mosquitto.

Each is measured by its process's CPU time (``utime + stime`` of ``/proc/PID/stat``, all
threads) per 1,000 notifications after a warm-up; the agent's notifications are the
samples its engine took (``edge_agent_engine_samples_total`` of ``/metrics``). The figure
to read is the median of the rounds' agent / bare ratios (target: 1.3x or less). With
two or more CPUs the server runs on one and the clients on the others.

``--profile DIR`` runs the agent under cProfile and leaves one ``agent-N.prof`` per
round in DIR (``python -m pstats``); the profiler's own cost inflates that run's ratio.

Figures depend on the machine and on what else runs on it; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import mmap
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.services import ManagedMosquitto  # noqa: E402

NS = "urn:bench:agent"
ROLES = ("state", "parts_total", "parts_bad", "power_kw")
STATE_CODES = {"1": "idle", "2": "producing", "3": "setup", "4": "unplanned_down"}
TARGET = 1.3
WARM_UP_S = 9.0
_COUNTER = struct.Struct("<Q")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node(machine: int, role: str) -> str:
    return f"m{machine:04d}.{role}"


# -- child processes -------------------------------------------------------------------

async def _serve(port: int, machines: int, period_ms: int) -> None:
    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    kinds = {"state": ua.VariantType.Int32, "parts_total": ua.VariantType.UInt32,
             "parts_bad": ua.VariantType.UInt32, "power_kw": ua.VariantType.Double}
    values: dict[tuple[int, str], Any] = {}
    ids: dict[tuple[int, str], ua.NodeId] = {}
    for m in range(machines):
        for role in ROLES:
            first: Any = 2 if role == "state" else 0.0 if role == "power_kw" else 1000
            var = await server.nodes.objects.add_variable(
                ua.NodeId(_node(m, role), ns), _node(m, role), ua.Variant(first, kinds[role]))
            ids[m, role], values[m, role] = var.nodeid, first
    await server.start()
    print("ready", flush=True)
    rng = random.Random(1)
    period_s = period_ms / 1000
    while True:
        started = time.monotonic()
        changed: list[tuple[int, str]] = []
        for m in range(machines):
            values[m, "power_kw"] = round(6.0 + rng.random() * 3, 2)
            changed.append((m, "power_kw"))
            if rng.random() < period_s / 20:  # a part every 20 s on average
                values[m, "parts_total"] += 1
                changed.append((m, "parts_total"))
                if rng.random() < 0.05:
                    values[m, "parts_bad"] += 1
                    changed.append((m, "parts_bad"))
            if rng.random() < period_s / 120:
                values[m, "state"] = rng.choice((1, 2, 2, 2, 3, 4))
                changed.append((m, "state"))
        for key in changed:
            await server.write_attribute_value(ids[key], ua.DataValue(
                ua.Variant(values[key], kinds[key[1]])))
        await asyncio.sleep(max(0.0, period_s - (time.monotonic() - started)))


async def _bare(url: str, machines: int, counter_path: str) -> None:
    from asyncua import Client, ua
    from asyncua.common.subscription import DataChangeEvent, OverflowPolicy

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with open(counter_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), _COUNTER.size)
    count = 0
    async with Client(url, timeout=10) as client:
        ns = await client.get_namespace_index(NS)
        sub = await client.create_subscription(50, None, queue_maxsize=20_000,
                                               overflow=OverflowPolicy.DROP_OLDEST)
        await sub.subscribe_data_change(
            [client.get_node(ua.NodeId(_node(m, r), ns)) for m in range(machines)
             for r in ROLES],
            queuesize=100, sampling_interval=ua.Double(0))
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                count += 1
                _COUNTER.pack_into(shared, 0, count)


def _agent_main(argv: list[str], profile: Path | None) -> int:
    """``edge-agent`` with ``argv``; with ``profile``, cProfile runs between SIGUSR1 and
    SIGUSR2 (the measured interval, not the start) and writes its figures there."""
    from agent.cli import main as edge_agent

    if profile is not None:
        import cProfile

        prof = cProfile.Profile(time.thread_time)  # CPU of the main thread, not wall time

        def stop(*_: object) -> None:
            prof.disable()
            prof.dump_stats(profile)

        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
        signal.signal(signal.SIGUSR2, stop)
    return edge_agent(argv)


def _spawn_server(port: int, machines: int, period_ms: int,
                  cpus: set[int] | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(machines), str(period_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("benchmark server did not start")
    return proc


# -- measurement -----------------------------------------------------------------------

def cpu_s_of(stat: Path) -> float:
    """User plus system CPU time in a ``/proc/.../stat`` file, in seconds."""
    text = stat.read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def cpu_s(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), in seconds."""
    return cpu_s_of(Path(f"/proc/{pid}/stat"))


def agent_config(workdir: Path, url: str, machines: int, mqtt_port: int,
                 health_port: int) -> Path:
    """An agent config mapping every served node to a machine's signal."""
    source = "bench-opcua"
    rows = []
    for m in range(machines):
        signals: dict[str, Any] = {role: {"source": source, "node": f"nsu={NS};s={_node(m, role)}"}
                                   for role in ROLES}
        signals["state"]["map"] = STATE_CODES
        rows.append({"id": f"cnc-{m:04d}", "line": "line-a", "ideal_cycle_time_s": 20.0,
                     "signals": signals})
    raw = {
        "agent": {"id": "bench-agent", "state_dir": str(workdir / "state")},
        "health": {"host": "127.0.0.1", "port": health_port},
        "site": {"id": "bench-site", "timezone": "UTC", "grid_factor_kg_per_kwh": 0.5306},
        "kpi": {"windows": ["1m", "15m", "1h"], "lateness_s": 5},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "reconnect_min_s": 0.5,
                 "reconnect_max_s": 5.0},
        "sources": [{"id": source, "type": "opcua", "url": url, "publishing_interval_ms": 50,
                     "sampling_interval_ms": 0, "queue_size": 100, "timeout_s": 10,
                     "watchdog_s": 30}],
        "lines": [{"id": "line-a", "output_machine": "cnc-0000"}],
        "machines": rows,
    }
    path = workdir / "agent.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


class Counted:
    """A client process and how to read how many notifications it has taken."""

    def __init__(self, proc: subprocess.Popen[bytes], read: Any,
                 profiled: bool = False) -> None:
        self.proc = proc
        self.read = read
        self.profiled = profiled

    def profile(self, on: bool) -> None:
        """Start or stop the profiler of a process run with ``--profile``."""
        if self.profiled:
            self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_bare(url: str, machines: int, workdir: Path, cpus: set[int] | None) -> Counted:
    path = workdir / "bare.count"
    path.write_bytes(bytes(_COUNTER.size))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare", url, str(machines), str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def read() -> int:
        return int(_COUNTER.unpack(path.read_bytes()[:_COUNTER.size])[0])

    return Counted(proc, read)


_SAMPLES = re.compile(rb"^edge_agent_engine_samples_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


def start_agent(config: Path, health_port: int, workdir: Path, cpus: set[int] | None,
                profile: Path | None) -> Counted:
    cmd = [sys.executable, __file__]
    if profile is not None:
        cmd += ["--profiled", str(profile)]
    cmd += ["--agent", "run", "-c", str(config)]
    log = (workdir / "agent.log").open("ab")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def read() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics",
                                        timeout=5) as resp:
                found = _SAMPLES.search(resp.read())
        except OSError:
            return 0
        return int(float(found.group(1))) if found else 0

    return Counted(proc, read, profiled=profile is not None)


def _threads_cpu_s(pid: int) -> float:
    """CPU time of every thread of ``pid`` but its main thread, in seconds."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name != str(pid):
            with contextlib.suppress(OSError, ValueError):  # the thread ended
                total += cpu_s_of(task / "stat")
    return total


async def _count_at(client: Counted) -> tuple[int, float]:
    """The client's count and the time it was taken (the middle of the read)."""
    before = time.monotonic()
    n = await asyncio.to_thread(client.read)
    return n, (before + time.monotonic()) / 2


async def measure(label: str, client: Counted, seconds: float,
                  expected: int) -> tuple[float, float]:
    """Wait until ``client`` has taken every node's first value and a warm-up has passed,
    then count for ``seconds``: (notifications per s, CPU ms per 1,000).

    The agent's count comes from a ``/metrics`` scrape, which costs the agent CPU of its
    own: the scrapes are made outside the CPU interval, and the count is scaled from the
    interval between the scrapes to the CPU interval.
    """
    try:
        deadline = time.monotonic() + 90
        while await asyncio.to_thread(client.read) < expected:
            if client.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{label} did not start taking notifications")
            await asyncio.sleep(0.5)
        # Warm-up, not counted: the connection's set-up, and a fresh engine's first
        # advance (after the lateness), which seals the time since the start of its
        # longest window in one go.
        await asyncio.sleep(WARM_UP_S)
        pid = client.proc.pid
        n0, tn0 = await _count_at(client)
        await asyncio.sleep(0.3)  # the scrape's own work is done
        c0, h0, t0 = cpu_s(pid), _threads_cpu_s(pid), time.monotonic()
        client.profile(True)
        await asyncio.sleep(seconds)
        client.profile(False)
        c1, h1, t1 = cpu_s(pid), _threads_cpu_s(pid), time.monotonic()
        n1, tn1 = await _count_at(client)
    finally:
        client.stop()
    n = max(1.0, (n1 - n0) * (t1 - t0) / (tn1 - tn0))
    rate, per_k = n / (t1 - t0), (c1 - c0) * 1000 / n * 1000
    print(f"  {label:<22} {rate:>9,.0f}/s   CPU {per_k:6.2f} ms per 1,000   "
          f"({c1 - c0:.2f} s CPU in {t1 - t0:.1f} s, {h1 - h0:.2f} s of it in threads "
          f"other than the main one)", flush=True)
    return rate, per_k


async def bench(machines: int, period_ms: int, seconds: float, rounds: int,
                profile_dir: Path | None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = (({cpus[-1]}, set(cpus[:-1])) if len(cpus) >= 2
                                else (None, None))
    port = _free_port()
    server = _spawn_server(port, machines, period_ms, server_cpus)
    url = f"opc.tcp://127.0.0.1:{port}"
    nodes = machines * len(ROLES)
    print(f"OPC UA: {machines} machines x {len(ROLES)} nodes ({nodes} nodes), every "
          f"{period_ms} ms each machine's power changes (about {machines * 1000 / period_ms:,.0f}"
          f" changes/s); server in pid {server.pid}", flush=True)
    broker = ManagedMosquitto()
    bare: list[float] = []
    agent: list[float] = []
    try:
        broker.start()
        with tempfile.TemporaryDirectory(prefix="bench-agent-cpu-") as tmp:
            workdir = Path(tmp)
            for i in range(rounds):
                def run_bare() -> Counted:
                    return start_bare(url, machines, workdir, client_cpus)

                def run_agent(n: int = i) -> Counted:
                    health = _free_port()
                    rundir = workdir / f"agent-{n}"
                    rundir.mkdir()
                    cfg = agent_config(rundir, url, machines, broker.port, health)
                    prof = None if profile_dir is None else profile_dir / f"agent-{n}.prof"
                    return start_agent(cfg, health, rundir, client_cpus, prof)

                # Alternate which goes first, so a drift in machine load favours neither.
                order = ("bare", "agent") if i % 2 == 0 else ("agent", "bare")
                for which in order:
                    if which == "bare":
                        bare.append((await measure("bare asyncua client", run_bare(),
                                                   seconds, nodes))[1])
                    else:
                        agent.append((await measure("edge-agent run", run_agent(),
                                                    seconds, nodes))[1])
                print(f"  round {i + 1}: agent / bare CPU per notification "
                      f"{agent[-1] / bare[-1]:.2f}x", flush=True)
    finally:
        broker.stop()
        server.terminate()
        server.wait(timeout=10)
    ratios = [a / b for a, b in zip(agent, bare, strict=True)]
    print(f"  median: bare {statistics.median(bare):.2f} ms/1000, agent "
          f"{statistics.median(agent):.2f} ms/1000")
    print(f"  CPU per notification, agent / bare: {statistics.median(ratios):.2f}x median of "
          f"{len(ratios)} paired rounds (range {min(ratios):.2f}-{max(ratios):.2f}x; "
          f"target <= {TARGET}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=250)
    parser.add_argument("--period-ms", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the agent under cProfile, one file per round in DIR")
    parser.add_argument("--serve", nargs=3, type=int, metavar=("PORT", "MACHINES", "MS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=3, metavar=("URL", "MACHINES", "COUNTER"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--profiled", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--agent", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        sys.exit(_agent_main(args.agent, args.profiled))
    if args.serve:
        asyncio.run(_serve(*args.serve))
        return
    if args.bare:
        url, machines, counter = args.bare
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_bare(url, int(machines), counter))
        return
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(bench(args.machines, args.period_ms, args.seconds, args.rounds,
                      args.profile))


if __name__ == "__main__":
    main()

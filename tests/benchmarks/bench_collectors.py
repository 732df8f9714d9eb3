"""Collector throughput and CPU cost next to the bare libraries, run as a script.

    python tests/benchmarks/bench_collectors.py [--nodes 200] [--period-ms 20] [--seconds 10]

OPC UA: an asyncua server in its own process (so its CPU is not counted) writes every
one of ``--nodes`` Double variables every ``--period-ms``. In the same run, a bare asyncua
client (iterator-mode subscription, counting) and the collector (delivering Samples to a
counting sink) subscribe to the same nodes in turn; each prints notifications/s and the
client process's CPU time per 1,000 notifications. The ratio collector/bare is what the
collector's own work costs (target: within 1.25x). Each round measures both, in
alternating order; the figure to read is the median of the rounds' ratios. With two or
more CPUs the server and the clients run on different ones.

Modbus: the simulator's Modbus TCP server (a Plant in its own process), SDM630 meters.
The collector polls with no idle time; the bare client issues the same merged reads in a
loop. Prints registers/s of each and their ratio.

Figures depend on the machine and on what else runs on it; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from asyncua import Client, Server, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from collectors.decode import plan_reads  # noqa: E402
from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec  # noqa: E402
from collectors.opcua import OpcUaCollector, OpcUaSourceSpec, OpcUaTag  # noqa: E402
from collectors.presets import preset_points  # noqa: E402
from rules.types import Sample  # noqa: E402

NS = "urn:bench:collectors"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- servers (child processes) ---------------------------------------------------------

async def _serve_opcua(port: int, nodes: int, period_ms: int) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    variables = [
        await server.nodes.objects.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0)
        for i in range(nodes)
    ]
    await server.start()
    print("ready", flush=True)
    value = 0.0
    while True:
        started = time.monotonic()
        value += 1.0
        for var in variables:
            await server.write_attribute_value(var.nodeid, ua.DataValue(
                ua.Variant(value, ua.VariantType.Double)))
        await asyncio.sleep(max(0.0, period_ms / 1000 - (time.monotonic() - started)))


async def _serve_modbus(port: int, meters: int) -> None:
    from simulators.plant import Plant
    from simulators.scenario import default_scenario

    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    async with Plant(default_scenario(machines=meters, seed=1, fast=True), modbus_port=port):
        print("ready", flush=True)
        await asyncio.Event().wait()


def _split_cpus() -> tuple[set[int], set[int]] | None:
    """(server CPUs, client CPUs): with two or more, each side gets its own."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[-1]}, set(cpus[:-1])) if len(cpus) >= 2 else None


def _spawn(*args: str) -> subprocess.Popen[str]:
    split = _split_cpus()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=(lambda: os.sched_setaffinity(0, split[0]))
                            if split else None)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"benchmark server {args} did not start")
    return proc


# -- measurement -----------------------------------------------------------------------

async def _measure(label: str, seconds: float,
                   body: Callable[[list[int]], Awaitable[None]]) -> tuple[float, float]:
    """Run ``body`` for a warm-up second, then count for ``seconds``; (per s, CPU ms/1000)."""
    counter = [0, 0]  # [count, stop flag]
    task = asyncio.create_task(body(counter))
    await asyncio.sleep(1.5)
    n0, cpu0, t0 = counter[0], time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    n1, cpu1, t1 = counter[0], time.process_time(), time.monotonic()
    counter[1] = 1  # a loop around pymodbus calls may not see a cancellation: ask it too
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, 10)
    n = max(1, n1 - n0)
    rate = n / (t1 - t0)
    cpu_per_k = (cpu1 - cpu0) * 1000 / n * 1000
    print(f"  {label:<28} {rate:>10,.0f}/s   CPU {cpu_per_k:7.2f} ms per 1,000   "
          f"({cpu1 - cpu0:.2f} s CPU in {t1 - t0:.1f} s)")
    return rate, cpu_per_k


async def _bare_opcua(url: str, nodes: int, counter: list[int]) -> None:
    async with Client(url, timeout=10) as client:
        ns = await client.get_namespace_index(NS)
        sub = await client.create_subscription(50, None, queue_maxsize=20_000,
                                               overflow=OverflowPolicy.DROP_OLDEST)
        await sub.subscribe_data_change(
            [client.get_node(ua.NodeId(f"v{i}", ns)) for i in range(nodes)],
            queuesize=100, sampling_interval=ua.Double(0))
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                counter[0] += 1


class _CountingSink:
    """Counts samples; non-blocking like an ``asyncio.Queue`` with room (the agent's sink)."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    async def put(self, sample: Sample, /) -> None:
        self.counter[0] += 1

    def put_nowait(self, sample: Sample, /) -> None:
        self.counter[0] += 1

    def full(self) -> bool:
        return False


async def _collector_opcua(url: str, nodes: int, counter: list[int]) -> None:
    tags = tuple(OpcUaTag("dev", f"v{i}", node=f"nsu={NS};s=v{i}") for i in range(nodes))
    spec = OpcUaSourceSpec(id="bench", url=url, tags=tags, publishing_interval_ms=50,
                           sampling_interval_ms=0, queue_size=100, timeout_s=10,
                           watchdog_s=30, max_clock_skew_s=0)
    await OpcUaCollector(spec).run(_CountingSink(counter))


async def bench_opcua(nodes: int, period_ms: int, seconds: float, rounds: int) -> None:
    port = _free_port()
    proc = _spawn("--serve-opcua", str(port), str(nodes), str(period_ms))
    url = f"opc.tcp://127.0.0.1:{port}"
    offered = nodes * 1000 / period_ms
    print(f"OPC UA: {nodes} nodes every {period_ms} ms (up to {offered:,.0f} changes/s), "
          f"server in pid {proc.pid}")
    bare: list[tuple[float, float]] = []
    coll: list[tuple[float, float]] = []

    async def measure_bare() -> None:
        bare.append(await _measure("bare asyncua client", seconds,
                                   lambda c: _bare_opcua(url, nodes, c)))

    async def measure_collector() -> None:
        coll.append(await _measure("OpcUaCollector", seconds,
                                   lambda c: _collector_opcua(url, nodes, c)))

    try:
        for i in range(rounds):
            # Alternate which goes first, so a drift in machine load favours neither.
            for step in ((measure_bare, measure_collector) if i % 2 == 0
                         else (measure_collector, measure_bare)):
                await step()
            print(f"  round {i + 1}: collector / bare CPU per notification "
                  f"{coll[-1][1] / bare[-1][1]:.2f}x")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    b_rate = statistics.mean(r for r, _ in bare)
    c_rate = statistics.mean(r for r, _ in coll)
    b_cpu = statistics.median(c for _, c in bare)
    c_cpu = statistics.median(c for _, c in coll)
    ratios = [c[1] / b[1] for b, c in zip(bare, coll, strict=True)]
    print(f"  median: bare {b_rate:,.0f}/s {b_cpu:.2f} ms/1000; collector {c_rate:,.0f}/s "
          f"{c_cpu:.2f} ms/1000")
    print(f"  CPU per notification, collector / bare: {statistics.median(ratios):.2f}x median "
          f"of {len(ratios)} paired rounds (range {min(ratios):.2f}-{max(ratios):.2f}x; "
          f"target <= 1.25x)")


async def _bare_modbus(port: int, devices: tuple[ModbusDeviceSpec, ...],
                       counter: list[int]) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    plans = [(d.unit, plan_reads(d.points, 8)) for d in devices]
    try:
        while not counter[1]:
            for unit, blocks in plans:
                for block in blocks:
                    rr = await client.read_input_registers(block.address, count=block.count,
                                                           device_id=unit)
                    if not rr.isError():
                        counter[0] += len(rr.registers)
    finally:
        client.close()


async def _collector_modbus(port: int, devices: tuple[ModbusDeviceSpec, ...],
                            counter: list[int]) -> None:
    regs_per_sample = sum(b.count for d in devices for b in plan_reads(d.points, 8)) / sum(
        len(d.points) for d in devices)
    samples = [0]

    class Sink:
        async def put(self, sample: Sample, /) -> None:
            samples[0] += 1
            counter[0] = int(samples[0] * regs_per_sample)

    spec = ModbusSourceSpec(id="bench", port=port, devices=devices, poll_interval_s=0.0001,
                            timeout_s=1.0, retries=0)
    await ModbusCollector(spec).run(Sink())


async def bench_modbus(meters: int, seconds: float, rounds: int) -> None:
    port = _free_port()
    proc = _spawn("--serve-modbus", str(port), str(meters))
    devices = tuple(ModbusDeviceSpec(f"meter-{u:02d}", u, preset_points("sdm630", f"m{u}"))
                    for u in range(1, meters + 1))
    blocks = sum(len(plan_reads(d.points, 8)) for d in devices)
    print(f"Modbus TCP: simulator with {meters} SDM630 meters in pid {proc.pid}, "
          f"{blocks} merged reads per round")
    bare: list[float] = []
    coll: list[float] = []
    try:
        for _ in range(rounds):
            bare.append((await _measure("bare pymodbus reads (regs)", seconds,
                                        lambda c: _bare_modbus(port, devices, c)))[0])
            coll.append((await _measure("ModbusCollector (regs)", seconds,
                                        lambda c: _collector_modbus(port, devices, c)))[0])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    b, c = sum(bare) / len(bare), sum(coll) / len(coll)
    print(f"  registers/s: bare {b:,.0f}, collector {c:,.0f}; collector / bare: {c / b:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--period-ms", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--meters", type=int, default=3)
    parser.add_argument("--only", choices=["opcua", "modbus"], default=None)
    parser.add_argument("--serve-opcua", nargs=3, type=int, metavar=("PORT", "NODES", "MS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--serve-modbus", nargs=2, type=int, metavar=("PORT", "METERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    if args.serve_opcua:
        asyncio.run(_serve_opcua(*args.serve_opcua))
        return
    if args.serve_modbus:
        asyncio.run(_serve_modbus(*args.serve_modbus))
        return
    split = _split_cpus()
    if split:
        os.sched_setaffinity(0, split[1])
    if args.only in (None, "opcua"):
        asyncio.run(bench_opcua(args.nodes, args.period_ms, args.seconds, args.rounds))
    if args.only in (None, "modbus"):
        asyncio.run(bench_modbus(args.meters, args.seconds, args.rounds))


if __name__ == "__main__":
    main()

"""Disk writes of the agent's runtime at 250 machines x 4 signals at 1 Hz, run as a script.

    python tests/benchmarks/bench_disk.py [--machines 250] [--minutes 20] [--decimals 2]

Runs the runtime's engine loop (sample journal, KPI engine, stored output, checkpoints)
over a realistic sample stream (state, part and scrap counters, power in kW, each machine
on its own millisecond phase), in a process of its own on a simulated clock many times
faster than real time, and acknowledges the stored messages as a publisher would after
PUBACK. It prints the bytes the process wrote to storage (``write_bytes`` of
``/proc/PID/io``, Linux) per simulated hour, against the budget of 50 MB per hour, and how
they split between the files. The journal's fsync interval runs on the simulated clock, so
the figure counts as many fsyncs as a real hour would.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.config import load_agent_config  # noqa: E402
from agent.config.model import AgentConfig  # noqa: E402
from agent.runtime import Agent  # noqa: E402
from rules.types import Sample  # noqa: E402

START_S = 1_735_689_600.0  # 2025-01-01T00:00:00Z
BUDGET_MB_PER_H = 50.0
TICKS_PER_S = 4  # the engine loop's tick (TICK_S = 0.25 s)


class SimClock:
    """The agent's clock (and the journal's), moved by the benchmark."""

    def __init__(self, now_s: float) -> None:
        self.now = now_s

    def __call__(self) -> float:
        return self.now


def write_bytes() -> int:
    """``write_bytes`` of this process: what it caused to be written to storage."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def plant_config(workdir: Path, machines: int) -> AgentConfig:
    """The example plant's settings with ``machines`` machines of four signals each."""
    raw: dict[str, Any] = tomllib.loads(
        (ROOT / "deploy/examples/small-plant.toml").read_text())
    raw["agent"]["state_dir"] = str(workdir / "state")
    template = raw["machines"][0]
    source = template["signals"]["state"]["source"]
    raw["machines"] = []
    for n in range(machines):
        mid = f"cnc-{n + 1:03d}"
        signals = {role: {"source": source, "node": f"nsu=urn:vendor:cnc;s={mid}.{role}"}
                   for role in ("parts_total", "parts_bad", "power_kw")}
        signals["state"] = dict(template["signals"]["state"],
                                node=f"nsu=urn:vendor:cnc;s={mid}.state")
        raw["machines"].append({"id": mid, "line": "line-a", "ideal_cycle_time_s": 45.0,
                                "signals": signals})
    raw["lines"] = [{"id": "line-a", "output_machine": "cnc-001"}]
    raw["meters"] = []
    raw.pop("alarms", None)
    raw["sources"] = [s for s in raw["sources"] if s["id"] == source]
    path = workdir / "agent.toml"
    path.write_text(tomli_w.dumps(raw))
    return load_agent_config(path)


class Plant:
    """Four signals per machine every second, each machine on its own phase."""

    def __init__(self, machines: int, decimals: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.ids = [f"cnc-{n + 1:03d}" for n in range(machines)]
        self.phase_ms = {m: self.rng.randrange(1000) for m in self.ids}
        self.parts = dict.fromkeys(self.ids, 1000)
        self.bad = dict.fromkeys(self.ids, 10)
        self.state = dict.fromkeys(self.ids, "producing")
        self.decimals = decimals

    def tick(self, second_ms: int, part: int, parts: int) -> list[Sample]:
        """The samples of machines ``part`` of ``parts`` in the second at ``second_ms``."""
        out: list[Sample] = []
        rng = self.rng
        for mid in self.ids[part::parts]:
            ts = second_ms + self.phase_ms[mid]
            if rng.random() < 0.002:
                self.state[mid] = rng.choice(("producing", "idle", "setup", "unplanned_down"))
            if self.state[mid] == "producing" and rng.random() < 1 / 45:
                self.parts[mid] += 1
                if rng.random() < 0.02:
                    self.bad[mid] += 1
            power = 0.8 if self.state[mid] != "producing" else 6.0 + rng.random() * 3
            out += [Sample(ts, mid, "state", self.state[mid]),
                    Sample(ts, mid, "parts_total", self.parts[mid]),
                    Sample(ts, mid, "parts_bad", self.bad[mid]),
                    Sample(ts, mid, "power_kw", round(power, self.decimals))]
        return out


async def run(machines: int, minutes: float, decimals: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        workdir = Path(tmp)
        cfg = plant_config(workdir, machines)
        clock = SimClock(START_S)
        fed = asyncio.Event()
        agent = Agent(cfg, clock=clock, on_samples=lambda _batch: fed.set())
        agent.outbox._journal._clock = clock  # type: ignore[attr-defined]
        plant = Plant(machines, decimals)
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        stopping = asyncio.Event()
        loop = asyncio.create_task(agent._engine_loop(queue, stopping))
        before = write_bytes()
        started = time.perf_counter()
        samples = 0
        seconds = int(minutes * 60)
        for second in range(seconds):
            second_ms = int((START_S + second) * 1000)
            for part in range(TICKS_PER_S):
                clock.now = START_S + second + (part + 1) / TICKS_PER_S
                batch = plant.tick(second_ms, part, TICKS_PER_S)
                fed.clear()
                for sample in batch:
                    queue.put_nowait(sample)
                samples += len(batch)
                await fed.wait()
            # The publisher: whatever is stored is delivered and acknowledged.
            delivered = agent.outbox.pending(100_000)
            if delivered:
                agent.outbox.ack(m.id for m in delivered)
        stopping.set()
        await loop
        written = write_bytes() - before
        elapsed = time.perf_counter() - started
        files = {p.name: p.stat().st_size for p in (workdir / "state").iterdir()}
        stats = agent.outbox.stats
        agent.outbox.close()
    per_hour = written * 3600 / seconds
    print(f"{machines} machines x 4 signals at 1 Hz, {seconds / 60:.0f} simulated minutes "
          f"in {elapsed:.1f} s ({samples / elapsed:,.0f} samples/s)")
    print(f"  records stored and acknowledged: {stats.acked:,}; samples: {samples:,}")
    print(f"  write_bytes: {written / 1e6:.1f} MB, {per_hour / 1e6:.1f} MB per hour "
          f"(budget {BUDGET_MB_PER_H:.0f}), {per_hour * 24 / 1e9:.2f} GB per day, "
          f"{written / samples:.1f} bytes per sample")
    print("  files at the end: " + ", ".join(f"{n} {s / 1e6:.2f} MB" for n, s in files.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, default=250)
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="simulated minutes (the figure is scaled to an hour)")
    ap.add_argument("--decimals", type=int, default=2,
                    help="decimals of the power readings (the meter's resolution)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.child:
        # A process of its own: /proc/self/io then counts the runtime's writes alone.
        sys.exit(subprocess.call([sys.executable, __file__, "--child", *sys.argv[1:]]))
    asyncio.run(run(args.machines, args.minutes, args.decimals))


if __name__ == "__main__":
    main()

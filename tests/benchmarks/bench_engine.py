"""Throughput and memory of the KPI engine on a synthetic plant day.

Run as ``python tests/benchmarks/bench_engine.py [--hours H] [--machines N]``. The
stream (by default 100 machines for 24 h at 1 Hz: state, part counter and energy register
every second, scrap counter every 10 s, each device on its own sub-second phase so the
merged stream is slightly out of time order) is generated lazily a minute at a time, so
the memory figure is the engine's own. Only the engine calls are timed; generation is
not. ``advance`` is called every 5 minutes of data with the newest sample time, as the
offline command does. ``--realistic`` feeds the ``realistic`` log of :mod:`samplelogs`
instead (meters polled on their own phase, machines reporting changes only; parsed
before the clock runs).
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from samplelogs import config, realistic_lines

from agent.config.build import engine_spec
from agent.samplelog import read_samples
from rules.engine import KpiEngine
from rules.spec import EngineSpec, LineSpec, MachineSpec, MeterSpec
from rules.types import Sample

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STATES = ("producing", "producing", "producing", "setup", "idle", "unplanned_down")


def plant(machines: int) -> EngineSpec:
    """A site of ``machines`` machines in lines of ten, one meter per machine."""
    lines = tuple(LineSpec(f"line-{i:02d}", f"cnc-{i * 10 + 9:03d}")
                  for i in range((machines + 9) // 10))
    return EngineSpec(
        site_id="bench",
        windows=("1m", "15m", "1h"),
        lateness_s=5.0,
        lines=lines,
        machines=tuple(
            MachineSpec(f"cnc-{i:03d}", f"line-{i // 10:02d}", 45.0) for i in range(machines)
        ),
        meters=tuple(
            MeterSpec(f"meter-{i:03d}", f"cnc-{i:03d}", None, 0.01, 1e8, 500.0)
            for i in range(machines)
        ),
    )


def minutes(machines: int, hours: float, seed: int = 1) -> Iterator[list[Sample]]:
    """The stream, one minute of samples at a time, in time order."""
    rng = random.Random(seed)
    counts = [0] * machines
    bad = [0] * machines
    energy = [rng.uniform(1e3, 1e5) for _ in range(machines)]
    state = ["producing"] * machines
    names = [(f"cnc-{i:03d}", f"meter-{i:03d}") for i in range(machines)]
    # Each device samples on its own phase, so the merged stream is not in time order.
    phase = [rng.randrange(1000) for _ in range(machines)]
    for minute in range(int(hours * 60)):
        chunk: list[Sample] = []
        append = chunk.append
        for sec in range(60):
            base = START_MS + (minute * 60 + sec) * 1000
            for i in range(machines):
                machine, meter = names[i]
                ts = base + phase[i]
                if rng.random() < 0.002:
                    state[i] = rng.choice(STATES)
                append(Sample(ts, machine, "state", state[i]))
                if state[i] == "producing" and rng.random() < 0.03:
                    counts[i] += 1
                    if rng.random() < 0.05:
                        bad[i] += 1
                append(Sample(ts, machine, "parts_total", counts[i]))
                energy[i] += rng.uniform(0.0, 0.02)
                append(Sample(ts, meter, "energy_kwh", round(energy[i], 2)))
                if sec % 10 == 0:
                    append(Sample(ts, machine, "parts_bad", bad[i]))
        yield chunk


def realistic_minutes(machines: int, hours: float) -> Iterator[list[Sample]]:
    """The ``realistic`` log as samples, about a minute at a time."""
    for chunk in realistic_lines(machines, hours):
        yield list(read_samples(chunk.splitlines(keepends=True)))


def main() -> None:
    """Run the benchmark and print samples/s and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations (slows the run down)")
    parser.add_argument("--realistic", action="store_true",
                        help="the realistic log of samplelogs (its plant, 1m/15m/1h windows)")
    args = parser.parse_args()

    if args.realistic:
        engine = KpiEngine(engine_spec(config(args.machines)))
        stream = realistic_minutes(args.machines, args.hours)
    else:
        engine = KpiEngine(plant(args.machines))
        stream = minutes(args.machines, args.hours)
    if args.tracemalloc:
        tracemalloc.start()
    n = 0
    records = 0
    busy = 0.0
    rss_after_first_hour = 0
    gc.collect()
    for minute, chunk in enumerate(stream):
        add = engine.add
        newest = max(s.ts_ms for s in chunk)
        t0 = time.process_time()
        for sample in chunk:
            add(sample)
        out = engine.advance(newest) if minute % 5 == 4 else None
        busy += time.process_time() - t0
        n += len(chunk)
        if out is not None:
            records += len(out.records)
        if minute == 59:
            rss_after_first_hour = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    records += len(engine.finish().records)
    busy += time.process_time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"machines={args.machines} hours={args.hours:g} samples={n:,} records={records:,}")
    print(f"engine CPU time {busy:.1f} s -> {n / busy:,.0f} samples/s")
    print(f"peak RSS {rss / 1024:.1f} MiB (after first hour {rss_after_first_hour / 1024:.1f} MiB)")
    if args.tracemalloc:
        _, peak = tracemalloc.get_traced_memory()
        print(f"tracemalloc peak {peak / 2**20:.1f} MiB")
    print(dict(engine.stats))


if __name__ == "__main__":
    main()

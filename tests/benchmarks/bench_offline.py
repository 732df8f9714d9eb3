"""Throughput of the offline recompute on a realistic sample log.

Run as ``python tests/benchmarks/bench_offline.py [--hours H] [--machines N]
[--windows 1m 15m 1h] [--timezone Europe/Berlin] [--profile]``. It writes a sample log
(JSON Lines, the format of docs/architecture.md) to a temporary file: by default 50
machines in lines of ten for one hour, each reporting ``state``, ``parts_total`` and its
meter's ``energy_kwh`` every second and ``parts_bad`` every 10 s, every device on its own
millisecond phase (as real devices are, so energy intervals straddle slice boundaries
and their shares are not whole), with the meters' 0.01 kWh register steps. Then it runs
:func:`agent.offline.recompute` on it, JSON parsing and record output (to ``/dev/null``)
included, and prints samples/s, and how long the end of the input (:meth:`finish`) took
on its own, which is what long calendar windows (``--windows 1mo``) make slow.

``--profile`` runs the same under cProfile and prints the functions taking the most
time. A figures script, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.config import AgentConfig
from agent.offline import recompute
from rules.types import ms_to_rfc3339

START_MS = 1_741_507_200_000  # 2025-03-09T08:00:00Z
STATES = ("producing", "producing", "producing", "setup", "idle", "unplanned_down")


def config(machines: int, windows: list[str], timezone: str) -> AgentConfig:
    """The KPI part of an agent config for ``machines`` machines in lines of ten."""
    lines = [{"id": f"line-{i:02d}", "output_machine": f"cnc-{min(i * 10 + 9, machines - 1):03d}"}
             for i in range((machines + 9) // 10)]
    gw = {"source": "gw", "unit": 1, "table": "holding", "type": "u32"}
    return AgentConfig.model_validate({
        "agent": {"id": "bench", "state_dir": "/tmp/edge-agent-bench-state"},
        "site": {"id": "bench", "timezone": timezone},
        "kpi": {"windows": windows, "lateness_s": 5.0},
        "mqtt": {"host": "127.0.0.1"},
        "sources": [{"id": "gw", "type": "modbus", "port": 5020}],
        "lines": lines,
        "machines": [
            {"id": f"cnc-{i:03d}", "line": f"line-{i // 10:02d}", "ideal_cycle_time_s": 45.0,
             "signals": {"state": {**gw, "type": "u16", "address": 6 * i,
                                   "map": {str(k): s for k, s in enumerate(STATES)}},
                         "parts_total": {**gw, "address": 6 * i + 1},
                         "parts_bad": {**gw, "address": 6 * i + 3}}}
            for i in range(machines)
        ],
        "meters": [
            {"id": f"meter-{i:03d}", "machine": f"cnc-{i:03d}", "resolution_kwh": 0.01,
             "signals": {"energy_kwh": {**gw, "unit": 2, "address": 2 * i, "scale": 0.01}}}
            for i in range(machines)
        ],
    })


def log_lines(machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The sample log, one second at a time, each device on its own millisecond phase."""
    rng = random.Random(seed)
    counts = [0] * machines
    bad = [0] * machines
    steps = [rng.randrange(100_000, 10_000_000) for _ in range(machines)]
    state = ["producing"] * machines
    phase = [(rng.randrange(1000), rng.randrange(1000)) for _ in range(machines)]
    for sec in range(int(hours * 3600)):
        base = START_MS + sec * 1000
        chunk = []
        for i in range(machines):
            at_machine = ms_to_rfc3339(base + phase[i][0])
            at_meter = ms_to_rfc3339(base + phase[i][1])
            if rng.random() < 0.002:
                state[i] = rng.choice(STATES)
            if state[i] == "producing" and rng.random() < 0.03:
                counts[i] += 1
                if rng.random() < 0.05:
                    bad[i] += 1
            steps[i] += rng.randrange(3)
            head = f'{{"ts":"{at_machine}","device":"cnc-{i:03d}","signal":'
            chunk.append(f'{head}"state","value":"{state[i]}"}}\n')
            chunk.append(f'{head}"parts_total","value":{counts[i]}}}\n')
            if sec % 10 == 0:
                chunk.append(f'{head}"parts_bad","value":{bad[i]}}}\n')
            chunk.append(f'{{"ts":"{at_meter}","device":"meter-{i:03d}","signal":'
                         f'"energy_kwh","value":{steps[i] / 100:.2f}}}\n')
        # the devices' phases interleave within the second, as a recorder writes them
        chunk.sort(key=lambda line: line[7:31])
        yield "".join(chunk)


def main() -> None:
    """Write the log, recompute it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--windows", nargs="+", default=["1m", "15m", "1h"])
    parser.add_argument("--timezone", default="Asia/Shanghai")
    parser.add_argument("--profile", action="store_true", help="run under cProfile")
    args = parser.parse_args()
    cfg = config(args.machines, args.windows, args.timezone)
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        path = Path(tmp) / "samples.jsonl"
        n = 0
        with path.open("w", encoding="utf-8") as fh:
            for chunk in log_lines(args.machines, args.hours):
                n += chunk.count("\n")
                fh.write(chunk)
        summary = io.StringIO()
        profiler = cProfile.Profile() if args.profile else None
        with path.open(encoding="utf-8") as fh, open(os.devnull, "w") as out:
            t0 = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            records = recompute(cfg, fh, out, str(path), summary=summary)
            if profiler is not None:
                profiler.disable()
            seconds = time.perf_counter() - t0
    print(f"machines={args.machines} hours={args.hours:g} windows={args.windows} "
          f"tz={args.timezone}: {n:,} samples, {records:,} records")
    print(f"recompute {seconds:.2f} s -> {n / seconds:,.0f} samples/s")
    print(summary.getvalue().strip())
    if profiler is not None:
        stats = io.StringIO()
        pstats.Stats(profiler, stream=stats).sort_stats("tottime").print_stats(25)
        print(stats.getvalue())


if __name__ == "__main__":
    main()

"""Throughput of the offline recompute on a sample log, in-process.

Run as ``python tests/benchmarks/bench_offline.py [--log dense|phased|realistic]
[--realistic] [--hours H] [--machines N] [--windows 1m 15m 1h] [--timezone Asia/Shanghai]
[--profile]``. It writes one of the logs of :mod:`samplelogs` to a temporary file (by
default ``phased``: 50 machines for one hour, every device on its own millisecond
phase; ``--realistic`` is ``--log realistic``, by default 50 machines for 6 hours,
meters polled on their own phase, machines reporting changes only, a record per ~20
samples). Then it runs :func:`agent.offline.recompute` on it, JSON parsing and record
output (to ``/dev/null``) included, and prints samples/s of CPU time (the figure to
compare: the machine may be shared) and of wall time.

``--profile`` runs the same under cProfile and prints the functions taking the most
time. A figures script, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from samplelogs import LOGS, WINDOWS, config, log_lines

from agent.offline import recompute


def main() -> None:
    """Write the log, recompute it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", choices=LOGS, default="phased")
    parser.add_argument("--realistic", action="store_true", help="same as --log realistic")
    parser.add_argument("--hours", type=float, help="default 1, 6 for the realistic log")
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--windows", nargs="+", default=list(WINDOWS))
    parser.add_argument("--timezone", default="Asia/Shanghai")
    parser.add_argument("--profile", action="store_true", help="run under cProfile")
    args = parser.parse_args()
    log = "realistic" if args.realistic else args.log
    hours = args.hours if args.hours is not None else 6.0 if log == "realistic" else 1.0
    cfg = config(args.machines, args.windows, args.timezone)
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        path = Path(tmp) / "samples.jsonl"
        n = 0
        with path.open("w", encoding="utf-8") as fh:
            for chunk in log_lines(log, args.machines, hours):
                n += chunk.count("\n")
                fh.write(chunk)
        summary = io.StringIO()
        profiler = cProfile.Profile() if args.profile else None
        with path.open(encoding="utf-8") as fh, open(os.devnull, "w") as out:
            t0, c0 = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            records = recompute(cfg, fh, out, str(path), summary=summary)
            if profiler is not None:
                profiler.disable()
            cpu = time.process_time() - c0
            seconds = time.perf_counter() - t0
    print(f"log={log} machines={args.machines} hours={hours:g} windows={args.windows} "
          f"tz={args.timezone}: {n:,} samples, {records:,} records "
          f"({n / max(records, 1):.1f} samples/record)")
    print(f"recompute {cpu:.2f} s CPU -> {n / cpu:,.0f} samples/s "
          f"(wall {seconds:.2f} s -> {n / seconds:,.0f} samples/s)")
    print(summary.getvalue().strip())
    if profiler is not None:
        stats = io.StringIO()
        pstats.Stats(profiler, stream=stats).sort_stats("tottime").print_stats(30)
        print(stats.getvalue())


if __name__ == "__main__":
    main()

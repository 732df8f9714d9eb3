"""End-to-end throughput and memory of the offline command ``edge-agent kpi``.

Run as ``python tests/benchmarks/bench_kpi_offline.py [--hours 1 24] [--machines 100]``.
For each input length it writes a sample log (JSON Lines, the format of docs/architecture.md) to a
temporary file: ``--machines`` machines each reporting ``state``, ``parts_total`` and
``parts_bad`` and one energy meter per machine reporting ``energy_kwh``, all at 1 Hz,
generated lazily so the generator's memory is flat too. Then it runs the whole offline
path on that file, JSON parsing and record output included, twice:

* in-process: :func:`agent.offline.recompute` in a fresh child interpreter (so the peak
  RSS is that run's alone), output to ``/dev/null``;
* as a user would: the ``edge-agent kpi`` command as a subprocess, output to
  ``/dev/null``; its peak RSS comes from ``os.wait4``.

It prints samples/s and peak RSS per input length; memory flat in the input length shows
as equal peaks for 1 h and 24 h. A figures script, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

START_S = 1_795_651_200  # 2026-11-26T00:00:00Z
STATES = ("producing", "producing", "producing", "setup", "idle", "unplanned_down")


def config_text(machines: int) -> str:
    """An ``agent.toml`` (KPI keys only) for ``machines`` machines in lines of ten."""
    parts = ['[site]\nid = "bench"\ntimezone = "Asia/Shanghai"\n',
             '[kpi]\nwindows = ["1m", "15m", "1h"]\nlateness_s = 5\n']
    for i in range((machines + 9) // 10):
        last = min(i * 10 + 9, machines - 1)
        parts.append(f'[[lines]]\nid = "line-{i:02d}"\noutput_machine = "cnc-{last:03d}"\n')
    for i in range(machines):
        parts.append(f'[[machines]]\nid = "cnc-{i:03d}"\nline = "line-{i // 10:02d}"\n'
                     "ideal_cycle_time_s = 45.0\n")
        parts.append(f'[[meters]]\nid = "meter-{i:03d}"\nmachine = "cnc-{i:03d}"\n'
                     "resolution_kwh = 0.01\nmodulus_kwh = 100000000.0\nmax_power_kw = 500.0\n")
    return "\n".join(parts)


def lines(machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The sample log, one second of lines at a time, in time order."""
    rng = random.Random(seed)
    counts = [0] * machines
    bad = [0] * machines
    energy = [rng.uniform(1e3, 1e5) for _ in range(machines)]
    state = ["producing"] * machines
    for sec in range(int(hours * 3600)):
        t = time.gmtime(START_S + sec)
        ts = (f'{{"ts":"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T'
              f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.000Z","device":"')
        chunk: list[str] = []
        for i in range(machines):
            if rng.random() < 0.002:
                state[i] = rng.choice(STATES)
            if state[i] == "producing" and rng.random() < 0.03:
                counts[i] += 1
                if rng.random() < 0.05:
                    bad[i] += 1
            energy[i] += rng.uniform(0.0, 0.02)
            chunk.append(
                f'{ts}cnc-{i:03d}","signal":"state","value":"{state[i]}"}}\n'
                f'{ts}cnc-{i:03d}","signal":"parts_total","value":{counts[i]}}}\n'
                f'{ts}cnc-{i:03d}","signal":"parts_bad","value":{bad[i]}}}\n'
                f'{ts}meter-{i:03d}","signal":"energy_kwh","value":{energy[i]:.2f}}}\n'
            )
        yield "".join(chunk)


def inner(samples: Path, cfg_path: Path, trace: bool) -> None:
    """The in-process run (in a child interpreter): recompute, then report as JSON."""
    from agent.config import load_agent_config
    from agent.offline import recompute

    cfg = load_agent_config(cfg_path, kpi_only=True)
    if trace:
        tracemalloc.start()
    summary = open(os.devnull, "w")  # noqa: SIM115
    t0 = time.perf_counter()
    with samples.open(encoding="utf-8") as fh, open(os.devnull, "w") as out:
        records = recompute(cfg, fh, out, str(samples), summary=summary)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    print(json.dumps({"records": records, "seconds": seconds, "traced_peak": peak,
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def run_child(argv: list[str]) -> tuple[float, int, str, str]:
    """Run ``argv``; wall seconds, peak RSS (KiB) from ``wait4``, stdout, stderr."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {errors}")
    return seconds, usage.ru_maxrss, text, errors


def main() -> None:
    """Generate each input, run both offline paths on it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 24.0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations in-process (slow)")
    parser.add_argument("--skip-cli", action="store_true", help="in-process run only")
    parser.add_argument("--inner", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner[0], args.inner[1], args.tracemalloc)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-kpi-") as tmp:
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text(config_text(args.machines))
        for hours in args.hours:
            path = Path(tmp) / f"samples-{hours:g}h.jsonl"
            t0 = time.perf_counter()
            with path.open("w", encoding="utf-8") as fh:
                for chunk in lines(args.machines, hours):
                    fh.write(chunk)
            n = int(hours * 3600) * args.machines * 4
            size = path.stat().st_size
            print(f"{hours:g} h: wrote {n:,} samples ({size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)

            argv = [sys.executable, __file__, "--inner", str(path), str(cfg)]
            if args.tracemalloc:
                argv.append("--tracemalloc")
            _, rss, text, _ = run_child(argv)
            res = json.loads(text)
            rate = n / res["seconds"]
            traced = ("" if res["traced_peak"] is None
                      else f", tracemalloc peak {res['traced_peak'] / 2**20:.1f} MiB")
            print(f"  in-process recompute(): {res['seconds']:.1f} s, {rate:,.0f} samples/s, "
                  f"{res['records']:,} records, peak RSS {rss / 1024:.1f} MiB{traced}",
                  flush=True)
            row = [hours, n, rate, rss]
            if not args.skip_cli:
                seconds, rss_cli, _, errors = run_child(
                    [sys.executable, "-m", "agent.cli", "kpi", "--input", str(path),
                     "-c", str(cfg)])
                print(f"  edge-agent kpi (subprocess, incl. start-up): {seconds:.1f} s, "
                      f"{n / seconds:,.0f} samples/s, peak RSS {rss_cli / 1024:.1f} MiB",
                      flush=True)
                print(f"  stderr: {errors.strip()}", flush=True)
                row += [n / seconds, rss_cli]
            rows.append(row)
            path.unlink()
    print("\nhours  samples        in-process/s  RSS MiB   cli/s      RSS MiB")
    for row in rows:
        cli = "" if len(row) < 6 else f"   {row[4]:>9,.0f}  {row[5] / 1024:7.1f}"
        print(f"{row[0]:>5g}  {row[1]:>13,}  {row[2]:>12,.0f}  {row[3] / 1024:7.1f}{cli}")


if __name__ == "__main__":
    main()

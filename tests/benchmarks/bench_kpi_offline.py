"""End-to-end throughput and memory of the offline command ``edge-agent kpi``.

Run as ``python tests/benchmarks/bench_kpi_offline.py [--hours 1 24] [--machines 100]
[--log dense|phased|realistic] [--realistic]``. For each input length it writes a sample
log of :mod:`samplelogs` to a temporary file (by default ``dense``: ``--machines``
machines each reporting ``state``, ``parts_total`` and ``parts_bad`` and one energy
meter per machine reporting ``energy_kwh``, all at 1 Hz on whole seconds;
``--realistic``: meters polled on their own phase, machines reporting changes only, a
record per ~20 samples, by default 50 machines for 24 h), generated lazily so the
generator's memory is flat too. Then it runs the whole offline path on that file, JSON
parsing and record output included, twice:

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
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from samplelogs import LOGS, config_text, log_lines  # noqa: E402


def inner(samples: Path, cfg_path: Path, trace: bool) -> None:
    """The in-process run (in a child interpreter): recompute, then report as JSON."""
    from agent.config import load_agent_config
    from agent.offline import recompute

    cfg = load_agent_config(cfg_path, kpi_only=True)
    if trace:
        tracemalloc.start()
    summary = open(os.devnull, "w")  # noqa: SIM115
    t0, c0 = time.perf_counter(), time.process_time()
    with samples.open(encoding="utf-8") as fh, open(os.devnull, "w") as out:
        records = recompute(cfg, fh, out, str(samples), summary=summary)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    print(json.dumps({"records": records, "seconds": seconds, "cpu": cpu, "traced_peak": peak,
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
    parser.add_argument("--machines", type=int, help="default 100, 50 for the realistic log")
    parser.add_argument("--log", choices=LOGS, default="dense")
    parser.add_argument("--realistic", action="store_true", help="same as --log realistic")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations in-process (slow)")
    parser.add_argument("--skip-cli", action="store_true", help="in-process run only")
    parser.add_argument("--inner", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner[0], args.inner[1], args.tracemalloc)
        return

    log = "realistic" if args.realistic else args.log
    machines = args.machines or (50 if log == "realistic" else 100)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-kpi-") as tmp:
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text(config_text(machines))
        for hours in args.hours:
            path = Path(tmp) / f"samples-{hours:g}h.jsonl"
            t0 = time.perf_counter()
            n = 0
            with path.open("w", encoding="utf-8") as fh:
                for chunk in log_lines(log, machines, hours):
                    n += chunk.count("\n")
                    fh.write(chunk)
            size = path.stat().st_size
            print(f"{log} log, {machines} machines, {hours:g} h: wrote {n:,} samples "
                  f"({size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.1f} s", flush=True)

            argv = [sys.executable, __file__, "--inner", str(path), str(cfg)]
            if args.tracemalloc:
                argv.append("--tracemalloc")
            _, rss, text, _ = run_child(argv)
            res = json.loads(text)
            rate = n / res["cpu"]
            traced = ("" if res["traced_peak"] is None
                      else f", tracemalloc peak {res['traced_peak'] / 2**20:.1f} MiB")
            print(f"  in-process recompute(): {res['cpu']:.1f} s CPU, {rate:,.0f} samples/s "
                  f"(wall {res['seconds']:.1f} s), {res['records']:,} records "
                  f"({n / max(res['records'], 1):.1f} samples/record), "
                  f"peak RSS {rss / 1024:.1f} MiB{traced}", flush=True)
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
    print("\nhours  samples        in-process/s  RSS MiB   cli/s      RSS MiB"
          "  (in-process: CPU time; cli: wall time)")
    for row in rows:
        cli = "" if len(row) < 6 else f"   {row[4]:>9,.0f}  {row[5] / 1024:7.1f}"
        print(f"{row[0]:>5g}  {row[1]:>13,}  {row[2]:>12,.0f}  {row[3] / 1024:7.1f}{cli}")


if __name__ == "__main__":
    main()

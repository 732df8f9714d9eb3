"""Start-up time of the command line, run as a script (not collected by pytest).

    python tests/benchmarks/bench_startup.py [--rounds 5]

Prints the median and the best wall-clock time, and the median CPU time, of fresh
``edge-agent`` processes: ``--help``, ``kpi`` on a small sample log (what an audit script
pays per call), and, for comparison, a bare interpreter, importing pydantic's models
(the floor of any command that validates a config) and importing asyncua alone. The
target on a small industrial PC is below 0.3 s for ``--help`` and ``kpi``. CPU time is
the figure to compare between runs on a machine that other work shares; with
``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``, every run also compiles the
sources, which an installed agent does not.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "tests" / "cases" / "kpi" / "counter_reset"


def _cpu() -> float:
    """CPU seconds (user + system) of the children waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(argv: list[str], rounds: int) -> tuple[float, float, float]:
    """Median and best wall seconds, and median CPU seconds, of ``rounds`` fresh processes
    running ``argv``."""
    times: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), _cpu()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    return statistics.median(times), min(times), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "import pydantic.BaseModel": [py, "-c", "from pydantic import BaseModel"],
        "import asyncua": [py, "-c", "import asyncua"],
        "edge-agent --help": [py, "-m", "agent.cli", "--help"],
        "edge-agent kpi (small log)": [py, "-m", "agent.cli", "kpi", "--input",
                                       str(CASE / "samples.jsonl"), "-c",
                                       str(CASE / "agent.toml")],
    }
    print(f"{'command':<30} {'median s':>9} {'best s':>8} {'cpu s':>8}  ({args.rounds} rounds)")
    for name, argv in cases.items():
        median, best, cpu = _time(argv, args.rounds)
        print(f"{name:<30} {median:>9.3f} {best:>8.3f} {cpu:>8.3f}")


if __name__ == "__main__":
    main()

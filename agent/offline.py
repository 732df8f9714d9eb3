"""``edge-agent kpi``: recompute KPI records offline from a sample log.

It streams: samples are fed to the same engine the live agent uses, in the order of the
log, and the engine closes windows in event time (its watermark is the newest sample time
read so far, see :mod:`rules.engine`), so memory stays flat in the input length and
records come out in window order. Output is collected every ``flush_every`` samples with
:meth:`KpiEngine.collect`, which never changes what the engine computes.

The agent's observation marker (see :mod:`agent.samplelog`) makes the same
:meth:`KpiEngine.observe_from` call the live agent made when it started without a
checkpoint, at the same point of the input, so the replay agrees with what was
published; without one the engine observes from the log's oldest sample.

Nothing is dropped silently: at the end a one-line summary on ``summary`` (stderr for the
command) counts the samples read, the records written and every sample the engine left
out: unknown device/signal pairs, values that are not valid for their role (a state that
is not one of the six, a counter that is not a non-negative integer, a register that is
not a number), samples later than ``kpi.lateness_s`` allows, and bad-quality samples.

Why wrongly typed values are counted, not fatal: the live agent receives the same values
from its collectors and must keep running, so it counts them as ``ignored_invalid`` and
flags the record ``invalid_value``. The replay does the same, so that a recorded log gives
the records the live agent published. Only what makes a line unreadable (not JSON, a
missing key, a value that is not a string, number or null, a bad timestamp or quality)
stops the command with the line number.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import TextIO

from agent.config.build import engine_spec
from agent.config.model import AgentConfig
from agent.samplelog import OBSERVATION_DEVICE, read_samples
from rules.engine import EngineOutput, KpiEngine

FLUSH_EVERY = 4096


def _write(out: EngineOutput, stream: TextIO) -> int:
    if not out.records:
        return 0
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    stream.write("".join([dumps(r.to_json_dict()) + "\n" for r in out.records]))
    return len(out.records)


def summary_line(stats: Mapping[str, int], records: int,
                 unknown: Mapping[tuple[str, str], int]) -> str:
    """The one-line account of the run: what was read, written and left out."""
    line = (f"edge-agent kpi: {stats['samples']} samples, {records} records; ignored: "
            f"{stats['ignored_unknown']} unknown device/signal, "
            f"{stats['ignored_invalid']} invalid values, {stats['late_dropped']} late, "
            f"{stats['ignored_bad_quality']} bad quality")
    if unknown:
        shown = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        line += " (unknown: " + ", ".join(f"{d}/{s} x{n}" for (d, s), n in shown)
        if len(unknown) > len(shown):
            line += ", ..."
        line += ")"
    return line


def recompute(
    cfg: AgentConfig,
    lines: Iterable[str],
    stream: TextIO,
    name: str,
    *,
    summary: TextIO | None = None,
    flush_every: int = FLUSH_EVERY,
) -> int:
    """Write every record as one JSON line to ``stream``; returns how many.

    ``summary`` (default: stderr) receives the one-line account of ignored samples.
    Raises InputError naming the line for an unreadable line.
    """
    engine = KpiEngine(engine_spec(cfg))
    add = engine.add
    marker = OBSERVATION_DEVICE  # read_samples checked the marker's signal and value
    written = 0
    for n, sample in enumerate(read_samples(lines, name), 1):
        if sample.device == marker:
            engine.observe_from(sample.ts_ms)
        else:
            add(sample)
        if n % flush_every == 0:
            written += _write(engine.collect(), stream)
    written += _write(engine.finish(), stream)
    stream.flush()
    print(summary_line(engine.stats, written, engine.unknown_signals),
          file=sys.stderr if summary is None else summary)
    return written

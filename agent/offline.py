"""``edge-agent kpi``: recompute KPI records offline from a sample log.

It streams: samples are fed to the same engine the live agent uses, and windows are
closed with the newest sample time as the watermark, so memory stays flat in the input
length and records come out in window order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from agent.config.build import engine_spec
from agent.config.model import AgentConfig
from agent.samplelog import read_samples
from rules.engine import EngineOutput, KpiEngine

ADVANCE_EVERY = 4096


def _write(out: EngineOutput, stream: TextIO) -> int:
    dumps = json.dumps
    stream.write("".join(dumps(r.to_json_dict(), separators=(",", ":")) + "\n"
                         for r in out.records))
    return len(out.records)


def recompute(cfg: AgentConfig, lines: Iterable[str], stream: TextIO, name: str) -> int:
    """Write every record as one JSON line to ``stream``; returns how many."""
    engine = KpiEngine(engine_spec(cfg))
    watermark = None
    written = 0
    for n, sample in enumerate(read_samples(lines, name), 1):
        engine.add(sample)
        if watermark is None or sample.ts_ms > watermark:
            watermark = sample.ts_ms
        if n % ADVANCE_EVERY == 0:
            written += _write(engine.advance(watermark), stream)
    written += _write(engine.finish(), stream)
    return written

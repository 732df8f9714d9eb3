"""The live engine and ``edge-agent kpi`` agree on the same samples.

"The same samples" means, precisely:

* one sequence of samples in *arrival order* (the order ``edge-agent run --record``
  writes them), fed to the live engine with :meth:`KpiEngine.add` one by one and written
  as JSON Lines for :func:`agent.offline.recompute`;
* the live run calls :meth:`KpiEngine.advance` at arbitrary points with a watermark that
  never runs ahead of the newest sample time added so far (it may lag it by any amount,
  and need not be monotonic), and ends with :meth:`KpiEngine.finish` (end = newest sample
  time), as the offline command does; every window is then closed in both runs;
* the stream is *on time*: every sample is at most ``lateness_s`` older than the newest
  sample before it, and each meter reports a good reading, in its own time order, at least
  every ``lateness_s`` minus that disorder. Then the offline run (whose watermark is the
  newest sample time itself) drops nothing as late and never carries energy, and no live
  schedule of the kind above can either.

Under these conditions the records (every field, every flag, in the same order), the
alarm events and the engine's counters are identical. Outside them the two runs may
legitimately differ, and each says so: a sample dropped as late is counted in
``late_dropped`` (reported by the offline command on stderr), energy booked late is
flagged ``energy_carried`` on the record.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.build import engine_spec
from agent.config.model import AgentConfig
from agent.offline import recompute
from rules.engine import KpiEngine
from rules.types import Sample

LATENESS_MS = 5_000
MAX_DISORDER_MS = 1_500  # how much older than the newest sample a sample may be
MAX_STEP_MS = 3_000  # < LATENESS_MS - MAX_DISORDER_MS: meters report often enough
INVALID_VALUES: list[str | int | float] = ["running", "12", -1, 2.5]
STATES = ["producing", "setup", "idle", "unplanned_down", "planned_down", "off"]
# 2026-11-25T23:59:00Z = 2026-11-26 07:59 in Asia/Shanghai, just before shift A.
T0 = 1_795_651_140_000

CONFIG: dict[str, Any] = {
    "site": {"id": "s", "timezone": "Asia/Shanghai"},
    "kpi": {"windows": ["10s", "1m", "shift"], "lateness_s": LATENESS_MS / 1000},
    "calendar": {"shifts": [
        {"name": "A", "start": "08:00", "end": "08:05", "breaks": [["08:02", "08:03"]]},
        {"name": "B", "start": "08:05", "end": "08:12", "breaks": [["08:07", "08:08"]]},
    ]},
    "lines": [{"id": "L", "output_machine": "m2"}],
    "machines": [
        {"id": "m1", "line": "L", "ideal_cycle_time_s": 2.0},
        {"id": "m2", "line": "L", "ideal_cycle_time_s": 3.0, "counter_modulus": 1000},
    ],
    "meters": [
        {"id": "e1", "machine": "m1", "resolution_kwh": 0.1, "modulus_kwh": 1000.0,
         "max_power_kw": 4000.0},
        {"id": "e2", "line": "L", "resolution_kwh": 0.01},
    ],
    "alarms": [
        {"name": "pw", "kind": "threshold", "device": "e1", "signal": "power_kw",
         "raise_above": 50.0, "clear_below": 30.0, "min_duration_s": 4.0},
        {"name": "idle", "kind": "state_duration", "machine": "m1", "state": "idle",
         "max_duration_s": 20.0},
        {"name": "dr", "kind": "kpi_limit", "machine": "m2", "field": "defect_rate",
         "limit": 0.2, "window": "10s"},
    ],
}
CFG = AgentConfig.model_validate(CONFIG)


@st.composite
def on_time_streams(draw: st.DrawFn) -> list[Sample]:
    """Samples in arrival order satisfying the module's "on time" conditions."""
    steps = draw(st.integers(min_value=1, max_value=150))
    t = T0 + draw(st.integers(min_value=-120_000, max_value=120_000))
    counters = {"m1": [0, 0], "m2": [0, 0]}
    energy = {"e1": 990.0, "e2": 5.0}
    out: list[Sample] = []
    for _ in range(steps):
        t += draw(st.integers(min_value=0, max_value=MAX_STEP_MS))
        for meter in ("e1", "e2"):  # every meter, good, in its own order, at each step
            energy[meter] += draw(st.integers(0, 30)) / 10
            value = energy[meter] % 1000.0 if meter == "e1" else energy[meter]
            if draw(st.integers(0, 60)) == 0:
                value = 0.5  # a meter reset
            out.append(Sample(t, meter, "energy_kwh", round(value, 2)))
        for _ in range(draw(st.integers(0, 3))):
            ts = t - draw(st.integers(0, MAX_DISORDER_MS))
            machine = draw(st.sampled_from(["m1", "m2"]))
            kind = draw(st.sampled_from(["state", "count", "power", "bad", "invalid",
                                         "unknown"]))
            if kind == "state":
                out.append(Sample(ts, machine, "state", draw(st.sampled_from(STATES))))
            elif kind == "count":
                c = counters[machine]
                if draw(st.integers(0, 30)) == 0:
                    c[0] = draw(st.integers(0, 5))  # a counter reset
                else:
                    inc = draw(st.integers(0, 4))
                    c[0] += inc
                    c[1] += draw(st.integers(0, inc))
                modulus = 2**32 if machine == "m1" else 1000
                out.append(Sample(ts, machine, "parts_total", c[0] % modulus))
                out.append(Sample(ts, machine, "parts_bad", c[1] % modulus))
            elif kind == "power":
                out.append(Sample(ts, "e1", "power_kw", float(draw(st.integers(0, 100)))))
            elif kind == "bad":
                out.append(Sample(ts, machine, "state", "idle", "bad"))
            elif kind == "invalid":
                bad_value = draw(st.sampled_from(INVALID_VALUES))
                signal = draw(st.sampled_from(["state", "parts_total"]))
                out.append(Sample(ts, machine, signal, bad_value))
            else:
                out.append(Sample(ts, draw(st.sampled_from(["m1", "m9"])), "spindle_rpm", 1))
    return out


def _offline(samples: list[Sample], flush_every: int) -> tuple[list[dict[str, Any]], str]:
    lines = [json.dumps(s.to_json_dict()) + "\n" for s in samples]
    out, err = io.StringIO(), io.StringIO()
    recompute(CFG, lines, out, "s.jsonl", summary=err, flush_every=flush_every)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@settings(max_examples=150, deadline=None)
@given(on_time_streams(), st.data())
def test_live_engine_and_offline_command_agree(samples: list[Sample], data: st.DataObject) -> None:
    live = KpiEngine(engine_spec(CFG))
    records: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    newest = None
    for s in samples:
        live.add(s)
        newest = s.ts_ms if newest is None else max(newest, s.ts_ms)
        if data.draw(st.integers(0, 4)) == 0:
            lag = data.draw(st.sampled_from([0, 1, 999, 4_000, 5_000, 6_001, 20_000, 400_000]))
            out = live.advance(newest - lag)
            records += [r.to_json_dict() for r in out.records]
            alarms += [a.to_json_dict() for a in out.alarms]
    out = live.finish()
    records += [r.to_json_dict() for r in out.records]
    alarms += [a.to_json_dict() for a in out.alarms]

    offline, summary = _offline(samples, data.draw(st.sampled_from([1, 7, 4096])))
    assert offline == records
    assert live.stats["late_dropped"] == 0
    assert "0 late" in summary

    # The alarms too: the offline command does not print them, so compare engines.
    replay = KpiEngine(engine_spec(CFG))
    replayed: list[dict[str, Any]] = []
    for s in samples:
        replay.add(s)
        replayed += [a.to_json_dict() for a in replay.collect().alarms]
    replayed += [a.to_json_dict() for a in replay.finish().alarms]
    assert replayed == alarms
    assert dict(replay.stats) == dict(live.stats)

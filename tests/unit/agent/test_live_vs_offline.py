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

The stream may hold observation starts (the agent started without a checkpoint: first,
or again mid-stream), each followed by initial values dated before it, as an OPC UA
server sends them. The live engine gets :meth:`KpiEngine.observe_from` there; the log
gets the observation marker ``edge-agent run --record`` writes, which the offline command
turns into the same call.

Under these conditions the records (every field, every flag, in the same order), the
alarm events and the engine's counters are identical. Outside them the two runs may
legitimately differ, and each says so: a sample dropped as late is counted in
``late_dropped`` (reported by the offline command on stderr), energy booked late is
flagged ``energy_carried`` on the record.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.build import engine_spec
from agent.config.model import AgentConfig
from agent.offline import recompute
from agent.samplelog import (
    OBSERVATION_DEVICE,
    SampleRecorder,
    is_observation_start,
    observation_marker,
    read_samples,
)
from rules.engine import KpiEngine
from rules.errors import InputError
from rules.types import Sample
from tests.helpers import feed, run_live, run_offline

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
# The same plant with a gas meter for e2 and a time-of-use tariff whose boundaries fall
# inside the slow meters' intervals: a revision moves quantities and exact costs.
PRICED = AgentConfig.model_validate({
    **CONFIG,
    "meters": [CONFIG["meters"][0],
               {"id": "e2", "line": "L", "carrier": "natural_gas", "resolution": 0.01}],
    "tariff": {
        "prices": {"valley": 0.3, "peak": 1.1, "flat": 0.7},
        "carrier_prices": {"natural_gas": 3.6},
        "seasons": [{"months": list(range(1, 13)), "periods": [
            {"start": "00:00", "end": "08:02", "period": "valley"},
            {"start": "08:02", "end": "08:06", "period": "peak"},
            {"start": "08:06", "end": "00:00", "period": "flat"},
        ]}],
    },
})


@st.composite
def on_time_streams(draw: st.DrawFn) -> list[Sample]:
    """Samples in arrival order satisfying the module's "on time" conditions."""
    steps = draw(st.integers(min_value=1, max_value=150))
    t = T0 + draw(st.integers(min_value=-120_000, max_value=120_000))
    counters = {"m1": [0, 0], "m2": [0, 0]}
    energy = {"e1": 990.0, "e2": 5.0}
    out: list[Sample] = []
    fresh = draw(st.booleans())
    for step in range(steps):
        t += draw(st.integers(min_value=0, max_value=MAX_STEP_MS))
        if (step == 0 and fresh) or draw(st.integers(0, 40)) == 0:
            t += draw(st.sampled_from([0, 1, 2_000, 45_000]))  # the agent was down
            out.append(_marker(t))
            for _ in range(draw(st.integers(0, 4))):
                old = t - draw(st.integers(0, 600_000))
                machine = draw(st.sampled_from(["m1", "m2"]))
                out.append(draw(st.sampled_from([
                    Sample(old, machine, "state", draw(st.sampled_from(STATES))),
                    Sample(old, machine, "parts_total", counters[machine][0]),
                    Sample(old, "e1", "energy_kwh", round(energy["e1"] % 1000.0, 2)),
                ])))
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


def _marker(ts_ms: int) -> Sample:
    """Where the agent (re)started observing: ``observe_from`` live, the marker offline."""
    return Sample(ts_ms, OBSERVATION_DEVICE, "observing", "start")


def _offline(samples: list[Sample], flush_every: int,
             cfg: AgentConfig = CFG) -> tuple[list[dict[str, Any]], str]:
    return run_offline(cfg, samples, flush_every)


@settings(max_examples=150, deadline=None)
@given(on_time_streams(), st.data())
def test_live_engine_and_offline_command_agree(samples: list[Sample], data: st.DataObject) -> None:
    live = KpiEngine(engine_spec(CFG))
    records, alarms = run_live(live, samples, data,
                               [0, 1, 999, 4_000, 5_000, 6_001, 20_000, 400_000])

    offline, summary = _offline(samples, data.draw(st.sampled_from([1, 7, 4096])))
    assert offline == records
    assert live.stats["late_dropped"] == 0
    assert "0 late" in summary

    # The alarms too: the offline command does not print them, so compare engines.
    replay = KpiEngine(engine_spec(CFG))
    replayed: list[dict[str, Any]] = []
    for s in samples:
        feed(replay, s)
        replayed += [a.to_json_dict() for a in replay.collect().alarms]
    replayed += [a.to_json_dict() for a in replay.finish().alarms]
    assert replayed == alarms
    assert dict(replay.stats) == dict(live.stats)


def test_the_recorder_writes_the_marker_the_offline_command_reads(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    rec = SampleRecorder(path)
    rec.observing(T0)
    rec.write([Sample(T0 - 3_600_000, "m1", "state", "idle")])
    rec.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"ts": "2026-11-25T23:59:00.000Z", "device": "_agent",
                                    "signal": "observing", "value": "start"}
    marker, initial = read_samples(lines, "s.jsonl")
    assert is_observation_start(marker) and marker.ts_ms == T0
    assert not is_observation_start(initial)
    out, err = io.StringIO(), io.StringIO()
    lines.append(json.dumps(Sample(T0 + 10_000, "m1", "state", "idle").to_json_dict()))
    assert recompute(CFG, lines, out, "s.jsonl", summary=err) > 0
    first = json.loads(out.getvalue().splitlines()[0])
    # The hour-old initial value counts at the start: nothing before it has a record, and
    # the state is known from the start on.
    assert first["window_start"] == "2026-11-25T23:59:00.000Z"
    assert first["observed_s"] == 10.0 and "incomplete" not in first["flags"]
    assert "2 samples" in err.getvalue()


@pytest.mark.parametrize("line", [
    '{"ts": "2026-11-26T08:00:00Z", "device": "_agent", "signal": "observing", "value": "stop"}',
    '{"ts": "2026-11-26T08:00:00Z", "device": "_agent", "signal": "state", "value": "start"}',
    '{"ts": "2026-11-26T08:00:00Z", "device": "_agent", "signal": "observing", "value": "start",'
    ' "quality": "bad"}',
])
def test_a_malformed_marker_names_its_line(line: str) -> None:
    good = json.dumps(observation_marker(T0))
    with pytest.raises(InputError, match=r"s\.jsonl:2: device '_agent' is reserved"):
        list(read_samples([good, line], "s.jsonl"))


@st.composite
def slow_meter_streams(draw: st.DrawFn) -> list[Sample]:
    """On-time streams whose meters are read only every ``n``-th step (up to about 36 s
    apart, far beyond the 5 s lateness but well inside the revision horizon)."""
    samples = draw(on_time_streams())
    every = {"e1": draw(st.integers(1, 12)), "e2": draw(st.integers(1, 12))}
    seen = {"e1": 0, "e2": 0}
    out = []
    for s in samples:
        if s.signal == "energy_kwh" and s.device in every:
            seen[s.device] += 1
            if seen[s.device] % every[s.device]:
                continue
        out.append(s)
    return out


def _final(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """What stands downstream: the latest copy of each key, ``revised`` aside (which
    windows a run revises depends on when it sealed them)."""
    out = {}
    for r in records:
        key = (r["line"], r["machine"], r["window"], r["window_end"])
        out[key] = {**r, "flags": [f for f in r["flags"] if f != "revised"]}
    return out


@settings(max_examples=100, deadline=None)
@given(slow_meter_streams(), st.data())
def test_slow_meters_end_with_the_same_records_live_and_offline(
        samples: list[Sample], data: st.DataObject) -> None:
    """Meters read less often than the lateness: the live engine and the replay may
    revise different windows, but what finally stands for every key is identical, with
    no energy carried or pending, and no other KPI waited for the meters; also with a
    gas meter and a time-of-use tariff (every energy field: quantities, kgce, CO2, cost)."""
    cfg = data.draw(st.sampled_from([CFG, PRICED]))
    if cfg is PRICED:
        samples = [Sample(s.ts_ms, s.device, "reading", s.value, s.quality)
                   if (s.device, s.signal) == ("e2", "energy_kwh") else s for s in samples]
    live = KpiEngine(engine_spec(cfg))
    records, _ = run_live(live, samples, data, [0, 1, 999, 4_000, 5_000, 6_001, 20_000])

    offline, summary = _offline(samples, data.draw(st.sampled_from([1, 7, 4096])), cfg)
    final = _final(records)
    assert _final(offline) == final
    assert "0 late" in summary
    for rec in final.values():
        assert "energy_carried" not in rec["flags"] and "energy_pending" not in rec["flags"]

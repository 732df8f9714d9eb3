"""The live engine and ``edge-agent kpi`` agree for machines whose state is derived: from
a rule table over several inputs, and from the power of a meter (with cycle counting).

The conditions are those of ``test_live_vs_offline.py`` ("the same samples", on time):
the log holds the raw input readings, both runs derive the states from them inside the
engine when a slice is sealed, in time order, so the records (every field, flag and
``state_source``), the alarms and the counters are identical, whatever the schedule of
the live run's watermark and the arrival order of inputs within the lateness.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.build import engine_spec
from agent.config.model import AgentConfig
from agent.samplelog import OBSERVATION_DEVICE
from rules.engine import KpiEngine
from rules.types import Sample
from tests.helpers import feed, run_live, run_offline

LATENESS_MS = 5_000
MAX_DISORDER_MS = 1_500
MAX_STEP_MS = 3_000
T0 = 1_795_651_140_000  # 2026-11-25T23:59:00Z

PLC = {"source": "plc", "node": "ns=2;s=X"}
CFG = AgentConfig.model_validate({
    "site": {"id": "s"},
    "kpi": {"windows": ["10s", "1m"], "lateness_s": LATENESS_MS / 1000},
    "sources": [{"id": "plc", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840"}],
    "lines": [{"id": "L", "output_machine": "saw"}],
    "machines": [
        {"id": "cnc", "line": "L", "ideal_cycle_time_s": 2.0,
         "signals": {"parts_total": PLC, "parts_bad": PLC},
         "inputs": {"estop": PLC, "run": PLC, "mode": PLC},
         "state_rules": [{"when": "estop", "state": "unplanned_down"},
                         {"when": "run and not mode == 2", "state": "producing"},
                         {"when": "mode == 2", "state": "setup"},
                         {"state": "idle"}]},
        {"id": "saw", "line": "L", "ideal_cycle_time_s": 3.0,
         "power_state": {"off_below_kw": 1.0, "producing_above_kw": 10.0,
                         "hysteresis_kw": 1.0, "min_dwell_s": 2.0,
                         "cycles": {"above_kw": 12.0, "min_s": 1.0, "max_s": 20.0}}},
    ],
    "meters": [{"id": "e1", "machine": "saw", "resolution_kwh": 0.01,
                "signals": {"energy_kwh": PLC, "power_kw": PLC}}],
    "alarms": [
        {"name": "hot", "kind": "threshold", "device": "e1", "signal": "power_kw",
         "raise_above": 40.0, "clear_below": 30.0, "min_duration_s": 3.0},
        {"name": "stuck", "kind": "state_duration", "machine": "cnc",
         "state": "unplanned_down", "max_duration_s": 15.0},
        {"name": "long_idle", "kind": "state_duration", "machine": "saw", "state": "idle",
         "max_duration_s": 12.0},
    ],
})


@st.composite
def streams(draw: st.DrawFn) -> list[Sample]:
    """Samples in arrival order, on time: the meter reports energy and power every step,
    the inputs and counters of ``cnc`` come out of order within the disorder bound."""
    steps = draw(st.integers(min_value=1, max_value=120))
    t = T0 + draw(st.integers(min_value=-60_000, max_value=60_000))
    energy, parts = 500.0, 0
    out: list[Sample] = []
    for step in range(steps):
        t += draw(st.integers(min_value=0, max_value=MAX_STEP_MS))
        if (step == 0 and draw(st.booleans())) or draw(st.integers(0, 40)) == 0:
            t += draw(st.sampled_from([0, 2_000, 30_000]))
            out.append(Sample(t, OBSERVATION_DEVICE, "observing", "start"))
            for _ in range(draw(st.integers(0, 3))):
                old = t - draw(st.integers(0, 300_000))
                out.append(Sample(old, "cnc", draw(st.sampled_from(["estop", "run", "mode"])),
                                  draw(st.integers(0, 2))))
        energy += draw(st.integers(0, 20)) / 100
        out.append(Sample(t, "e1", "energy_kwh", round(energy, 2)))
        power: Any = draw(st.sampled_from([0.0, 0.5, 3.0, 9.5, 10.5, 15.0, 45.0]))
        quality = "good"
        roll = draw(st.integers(0, 30))
        if roll == 0:
            quality = "bad"
        elif roll == 1:
            power = "n/a"
        out.append(Sample(t, "e1", "power_kw", power, quality))  # type: ignore[arg-type]
        for _ in range(draw(st.integers(0, 3))):
            ts = t - draw(st.integers(0, MAX_DISORDER_MS))
            kind = draw(st.sampled_from(["estop", "run", "mode", "count", "bad", "invalid"]))
            if kind == "count":
                parts += draw(st.integers(0, 3))
                out.append(Sample(ts, "cnc", "parts_total", parts))
                out.append(Sample(ts, "cnc", "parts_bad", 0))
            elif kind == "bad":
                out.append(Sample(ts, "cnc", draw(st.sampled_from(["estop", "run"])), 0,
                                  "bad"))
            elif kind == "invalid":
                out.append(Sample(ts, "cnc", "mode", "auto"))
            else:
                value = draw(st.integers(0, 2)) if kind == "mode" else draw(st.integers(0, 1))
                out.append(Sample(ts, "cnc", kind, value))
    return out


@settings(max_examples=120, deadline=None)
@given(streams(), st.data())
def test_live_and_offline_derive_the_same_records(samples: list[Sample],
                                                  data: st.DataObject) -> None:
    live = KpiEngine(engine_spec(CFG))
    records, alarms = run_live(live, samples, data, [0, 1, 999, 4_000, 5_000, 20_000])
    offline, summary = run_offline(CFG, samples, data.draw(st.sampled_from([1, 5, 4096])))
    assert offline == records
    assert live.stats["late_dropped"] == 0 and "0 late" in summary
    saw = [r for r in records if r["machine"] == "saw"]
    assert all(r["state_source"] == "power" for r in saw)
    assert all("state_source" not in r for r in records if r["machine"] == "cnc")

    replay = KpiEngine(engine_spec(CFG))
    replayed: list[dict[str, Any]] = []
    for s in samples:
        feed(replay, s)
        replayed += [a.to_json_dict() for a in replay.collect().alarms]
    replayed += [a.to_json_dict() for a in replay.finish().alarms]
    assert replayed == alarms
    assert dict(replay.stats) == dict(live.stats)


def test_the_stream_exercises_every_derived_path() -> None:
    """The property above is not vacuous: a fixed stream books all four rule states, all
    three power states and a part counted from a rise."""
    samples = [Sample(T0, "cnc", "estop", 0), Sample(T0, "cnc", "run", 1),
               Sample(T0, "cnc", "mode", 1)]
    for i, kw in enumerate([3.0, 15.0, 15.0, 15.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 3.0]):
        samples.append(Sample(T0 + i * 1000, "e1", "power_kw", kw))
        samples.append(Sample(T0 + i * 1000, "e1", "energy_kwh", 500 + i / 100))
    samples += [Sample(T0 + 4000, "cnc", "mode", 2), Sample(T0 + 6000, "cnc", "estop", 1),
                Sample(T0 + 8000, "cnc", "estop", 0), Sample(T0 + 8000, "cnc", "run", 0),
                Sample(T0 + 8000, "cnc", "mode", 0)]
    records, _ = run_offline(CFG, samples, 4096)
    one = {r["machine"]: r for r in records if r["window"] == "1m"}
    cnc, saw = one["cnc"], one["saw"]
    assert (cnc["producing_time_s"], cnc["setup_time_s"], cnc["unplanned_down_time_s"],
            cnc["idle_time_s"]) == (4.0, 2.0, 2.0, 2.0)
    # dwell 2 s: producing 3..6 s, idle from 6 s, off from 9 s; the rise 1..4 s is a part
    assert (saw["producing_time_s"], saw["unplanned_down_time_s"], saw["idle_time_s"],
            saw["parts_produced"]) == (3.0, 1.0, 6.0, 1)

"""The live engine and ``edge-agent kpi`` agree under a working calendar.

The same property as ``test_live_vs_offline.py`` (see its module doc for what "the same
samples" and "on time" mean), on a plant whose calendar has what a real one has: shifts
on some weekdays only, a night shift crossing midnight, a public holiday (Easter Monday,
from the ``holidays`` package), a make-up day following another weekday's shifts, a
machine on a calendar of its own, local-day windows (``1d``) and a DST change
(Europe/Berlin, 31 March 2024). The streams start near the instants where these meet:
local midnight into the 23 h day, the jump from 02:00 to 03:00, and local midnight into
the holiday.
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
from tests.helpers import run_live, run_offline

LATENESS_MS = 5_000
MAX_DISORDER_MS = 1_500
MAX_STEP_MS = 3_000  # < LATENESS_MS - MAX_DISORDER_MS: meters report often enough
STATES = ["producing", "setup", "idle", "unplanned_down", "planned_down", "off"]
ANCHORS = [
    1_711_839_480_000,  # 2024-03-30T22:58Z, Saturday 23:58 CET, before the 23 h Sunday
    1_711_846_680_000,  # 2024-03-31T00:58Z, Sunday 01:58 CET, before the jump to CEST
    1_711_918_680_000,  # 2024-03-31T20:58Z, Sunday 22:58 CEST
    1_711_921_980_000,  # 2024-03-31T21:53Z, Sunday 23:53 CEST, before Easter Monday
]

CONFIG: dict[str, Any] = {
    "site": {"id": "s", "timezone": "Europe/Berlin"},
    "kpi": {"windows": ["10s", "1m", "1d", "shift"], "lateness_s": LATENESS_MS / 1000},
    "calendar": {
        "public_holidays": "DE",
        "shifts": [
            {"name": "N", "start": "23:55", "end": "00:10", "days": ["sat-sun"],
             "breaks": [["00:02", "00:03"]]},
            {"name": "M", "start": "00:03", "end": "00:08", "days": ["mon"]},
            {"name": "J", "start": "01:55", "end": "03:05", "days": ["sun"]},
            {"name": "E", "start": "22:59", "end": "23:02", "days": ["sun"]},
        ],
    },
    "calendars": {"other": {
        "shifts": [
            {"name": "F", "start": "23:52", "end": "00:06", "days": ["fri"],
             "breaks": [["00:00", "00:01"]]},
            {"name": "G", "start": "22:58", "end": "23:01", "days": ["fri"]},
            {"name": "S", "start": "23:56", "end": "00:03", "days": ["sat-sun"]},
        ],
        "make_up_days": {"2024-03-31": "fri"},
        "off_days": ["2024-03-30"],
    }},
    "lines": [{"id": "L", "output_machine": "m2"}],
    "machines": [
        {"id": "m1", "line": "L", "ideal_cycle_time_s": 2.0},
        {"id": "m2", "line": "L", "ideal_cycle_time_s": 3.0, "calendar": "other"},
    ],
    "meters": [
        {"id": "e1", "machine": "m1", "resolution_kwh": 0.1},
        {"id": "e2", "line": "L", "resolution_kwh": 0.01},
    ],
}
CFG = AgentConfig.model_validate(CONFIG)


@st.composite
def on_time_streams(draw: st.DrawFn) -> list[Sample]:
    """Samples in arrival order satisfying the "on time" conditions."""
    steps = draw(st.integers(min_value=1, max_value=120))
    t = draw(st.sampled_from(ANCHORS)) + draw(st.integers(min_value=-60_000, max_value=60_000))
    counters = {"m1": [0, 0], "m2": [0, 0]}
    energy = {"e1": 100.0, "e2": 5.0}
    out: list[Sample] = []
    fresh = draw(st.booleans())
    for step in range(steps):
        t += draw(st.integers(min_value=0, max_value=MAX_STEP_MS))
        if (step == 0 and fresh) or draw(st.integers(0, 50)) == 0:
            t += draw(st.sampled_from([0, 1, 45_000]))  # the agent was down
            out.append(Sample(t, OBSERVATION_DEVICE, "observing", "start"))
            for _ in range(draw(st.integers(0, 3))):
                machine = draw(st.sampled_from(["m1", "m2"]))
                out.append(Sample(t - draw(st.integers(0, 600_000)), machine, "state",
                                  draw(st.sampled_from(STATES))))
        for meter in ("e1", "e2"):
            energy[meter] += draw(st.integers(0, 30)) / 10
            out.append(Sample(t, meter, "energy_kwh", round(energy[meter], 2)))
        for _ in range(draw(st.integers(0, 3))):
            ts = t - draw(st.integers(0, MAX_DISORDER_MS))
            machine = draw(st.sampled_from(["m1", "m2"]))
            kind = draw(st.sampled_from(["state", "state", "count", "bad"]))
            if kind == "state":
                out.append(Sample(ts, machine, "state", draw(st.sampled_from(STATES))))
            elif kind == "count":
                c = counters[machine]
                inc = draw(st.integers(0, 4))
                c[0] += inc
                c[1] += draw(st.integers(0, inc))
                out.append(Sample(ts, machine, "parts_total", c[0]))
                out.append(Sample(ts, machine, "parts_bad", c[1]))
            else:
                out.append(Sample(ts, machine, "state", "idle", "bad"))
    return out


@settings(max_examples=40, deadline=None)
@given(on_time_streams(), st.data())
def test_live_engine_and_offline_command_agree_under_a_calendar(
        samples: list[Sample], data: st.DataObject) -> None:
    live = KpiEngine(engine_spec(CFG))
    records, _ = run_live(live, samples, data, [0, 1, 4_000, 5_000, 6_001, 400_000])

    offline, summary = run_offline(CFG, samples, data.draw(st.sampled_from([1, 7, 4096])))
    assert offline == records
    assert live.stats["late_dropped"] == 0
    assert "0 late" in summary


def test_the_calendar_is_what_the_streams_meet() -> None:
    """The config means what the module doc says (so the property covers those cases)."""
    spec = engine_spec(CFG)
    assert spec.machines[1].calendar == "other"
    (other,) = spec.calendars
    easter_monday = min(d for d in spec.off_days if (d.year, d.month) == (2024, 4))
    assert easter_monday.isoformat() == "2024-04-01"
    assert easter_monday in other.off_days  # inherited public holidays
    assert {d.isoformat() for d, _ in other.make_up_days} == {"2024-03-31"}

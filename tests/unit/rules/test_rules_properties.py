"""Property tests: window splits add up, and a checkpoint changes nothing, also across
observation (re)starts (an agent that started without its checkpoint)."""

from __future__ import annotations

import json
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_helpers import T0

from rules.engine import EngineOutput, KpiEngine
from rules.spec import (
    EngineSpec,
    KpiLimitAlarmSpec,
    LineSpec,
    MachineSpec,
    MeterSpec,
    StateDurationAlarmSpec,
    ThresholdAlarmSpec,
)
from rules.types import KpiRecord, Sample

STATES = ["producing", "setup", "idle", "unplanned_down", "planned_down", "off"]

ADDITIVE_INT = ("parts_produced", "parts_good", "parts_scrap")
ADDITIVE_TIME = (
    "observed_s", "planned_busy_time_s", "producing_time_s", "setup_time_s",
    "unplanned_down_time_s", "idle_time_s",
)


def plant(windows: tuple[str, ...], lateness_s: float = 5.0) -> EngineSpec:
    return EngineSpec(
        site_id="p",
        windows=windows,
        lateness_s=lateness_s,
        lines=(LineSpec("L", "m2"),),
        machines=(MachineSpec("m1", "L", 20.0), MachineSpec("m2", "L", 30.0, 1000)),
        meters=(
            MeterSpec("e1", "m1", None, 0.1, 1000.0, 400.0),
            MeterSpec("e2", None, "L", 0.01),
        ),
        alarms=(
            ThresholdAlarmSpec("pw", "e1", "power_kw", 50.0, 30.0, 20.0),
            StateDurationAlarmSpec("idle", "m1", "idle", 120.0),
            KpiLimitAlarmSpec("epu", "m1", "energy_per_unit_kwh", 0.5, windows[0]),
        ),
    )


OBSERVING = "_agent"
"""A sample of this device in a stream stands for ``observe_from(ts_ms)``."""


def feed_one(engine: KpiEngine, sample: Sample) -> None:
    if sample.device == OBSERVING:
        engine.observe_from(sample.ts_ms)
    else:
        engine.add(sample)


@st.composite
def streams(draw: st.DrawFn) -> list[Sample]:
    """A plausible, mostly ordered sample stream over up to ~3 h, sometimes with a
    (re)start of observation followed by initial values dated before it."""
    n = draw(st.integers(min_value=1, max_value=120))
    t = T0 + draw(st.integers(min_value=-3_600_000, max_value=3_600_000))
    counters = {"m1": [0, 0], "m2": [0, 0]}
    energy = {"e1": 990.0, "e2": 5.0}
    out: list[Sample] = []
    for _ in range(n):
        t += draw(st.integers(min_value=0, max_value=180_000))
        kind = draw(st.sampled_from(["state", "count", "energy", "power", "bad", "start"]))
        machine = draw(st.sampled_from(["m1", "m2"]))
        if kind == "start":
            t += draw(st.integers(min_value=0, max_value=1_800_000))
            out.append(Sample(t, OBSERVING, "observing", "start"))
            for _ in range(draw(st.integers(0, 3))):
                old = t - draw(st.integers(0, 7_200_000))
                out.append(draw(st.sampled_from([
                    Sample(old, machine, "state", "producing"),
                    Sample(old, machine, "parts_total", 40),
                    Sample(old, "e1", "energy_kwh", 500.0),
                    Sample(old, "e2", "energy_kwh", 7.5)])))
        elif kind == "state":
            out.append(Sample(t, machine, "state", draw(st.sampled_from(STATES))))
        elif kind == "count":
            c = counters[machine]
            if draw(st.integers(0, 30)) == 0:
                c[0] = draw(st.integers(0, 5))  # reset
            else:
                inc = draw(st.integers(0, 12))
                c[0] += inc
                c[1] += draw(st.integers(0, inc))
            modulus = 2**32 if machine == "m1" else 1000
            out.append(Sample(t, machine, "parts_total", c[0] % modulus))
            out.append(Sample(t, machine, "parts_bad", c[1] % modulus))
        elif kind == "energy":
            meter = draw(st.sampled_from(["e1", "e2"]))
            energy[meter] += draw(st.integers(0, 300)) / 10
            value = energy[meter] % 1000.0 if meter == "e1" else energy[meter]
            if draw(st.integers(0, 40)) == 0:
                value = 0.5  # a reset
            out.append(Sample(t, meter, "energy_kwh", round(value, 2)))
        elif kind == "power":
            out.append(Sample(t, "e1", "power_kw", float(draw(st.integers(0, 100)))))
        else:
            out.append(Sample(t, machine, "state", "idle", "bad"))
        if draw(st.integers(0, 10)) == 0 and out:
            # a slightly late sample: up to 3 s older than the newest
            last = out[-1]
            out.append(Sample(max(T0 - 4_000_000, last.ts_ms - draw(st.integers(0, 3000))),
                              "m2", "state", draw(st.sampled_from(STATES))))
    return out


def _key(r: KpiRecord) -> tuple[str | None, str | None]:
    return (r.line, r.machine)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@settings(max_examples=60, deadline=None)
@given(streams(), st.sampled_from([5.0, 100_000.0]))
def test_window_splits_add_up(samples: list[Sample], lateness: float) -> None:
    small = KpiEngine(plant(("1m", "15m"), lateness))
    big = KpiEngine(plant(("1h",), lateness))
    for s in samples:
        feed_one(small, s)
        feed_one(big, s)
    end = T0 + 4 * 3_600_000
    small_records = small.finish(end).records
    big_records = big.finish(end).records
    if not big_records:  # only observation starts, no sample: nothing was seen
        assert not small_records and all(s.device == OBSERVING for s in samples)
        return
    sums: dict[tuple[str, tuple[str | None, str | None], int], dict[str, float]] = {}
    for r in small_records:
        hour = r.window_start_ms - r.window_start_ms % 3_600_000
        acc = sums.setdefault((r.window, _key(r), hour), defaultdict(float))
        assert acc is not None
        for name in (*ADDITIVE_INT, *ADDITIVE_TIME):
            acc[name] += getattr(r, name)
        if r.energy_kwh is not None:
            acc["energy_kwh"] += r.energy_kwh
            acc["seen"] = 1
        acc["incomplete"] = max(acc["incomplete"], float("incomplete" in r.flags))
    for r in big_records:
        for label in ("1m", "15m"):
            found = sums.get((label, _key(r), r.window_start_ms))
            assert found is not None
            acc = found
            for name in ADDITIVE_INT:
                assert getattr(r, name) == acc[name], (label, name)
            for name in ADDITIVE_TIME:
                assert _close(getattr(r, name), acc[name]), (label, name)
            assert (r.energy_kwh is not None) == bool(acc["seen"])
            assert _close(r.energy_kwh or 0.0, acc["energy_kwh"])
            # Short windows wholly before an observation start have no record, so the
            # long one may be incomplete by them alone: its observed time is then short.
            unobserved = acc["observed_s"] < (r.window_end_ms - r.window_start_ms) / 1000 - 1e-6
            assert ("incomplete" in r.flags) == (bool(acc["incomplete"]) or unobserved)


def _collect(outs: list[EngineOutput]) -> tuple[list[KpiRecord], list[object]]:
    records = [r for o in outs for r in o.records]
    alarms: list[object] = [a for o in outs for a in o.alarms]
    return records, alarms


@settings(max_examples=60, deadline=None)
@given(streams(), st.data(), st.booleans())
def test_snapshot_restore_mid_stream_changes_nothing(
    samples: list[Sample], data: st.DataObject, live: bool
) -> None:
    spec = plant(("1m", "15m"))
    split = data.draw(st.integers(min_value=0, max_value=len(samples)))
    advance_every = data.draw(st.integers(min_value=1, max_value=10))

    def feed(eng: KpiEngine, part: list[Sample], offset: int, outs: list[EngineOutput]) -> None:
        for i, s in enumerate(part, start=offset):
            feed_one(eng, s)
            if live and i % advance_every == 0:
                outs.append(eng.advance(s.ts_ms))

    whole: list[EngineOutput] = []
    one = KpiEngine(spec)
    feed(one, samples, 0, whole)
    whole.append(one.finish())

    parts: list[EngineOutput] = []
    two = KpiEngine(spec)
    feed(two, samples[:split], 0, parts)
    state = json.loads(json.dumps(two.snapshot()))
    three = KpiEngine.restore(spec, state)
    feed(three, samples[split:], split, parts)
    parts.append(three.finish())

    assert _collect(parts) == _collect(whole)
    assert dict(three.stats) == dict(one.stats)

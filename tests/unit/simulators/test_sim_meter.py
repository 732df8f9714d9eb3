"""The meter model: exact integration in resolution steps, rollover, reset, coupling."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from simulators.meter import EnergyStep, Meter, MeterCounterEvent, MeterEvent
from simulators.scenario import MeterSpec, PowerSpec

T0 = 1_790_000_000_000


def _meter(power: PowerSpec, **changes: object) -> Meter:
    spec = MeterSpec(id="m", machine="cnc-01").model_copy(update=changes)
    return Meter(spec, power, random.Random(1), T0, "producing")


def _steps(events: list[MeterEvent]) -> list[EnergyStep]:
    return [e for e in events if isinstance(e, EnergyStep)]


def test_constant_power_integrates_exactly() -> None:
    # 36 kW for one second is exactly 0.01 kWh: one step per second.
    meter = _meter(PowerSpec(producing=36.0, jitter=0.0))
    events: list[MeterEvent] = []
    for t in range(1, 11):
        events += meter.advance_to(T0 + t * 1000, "producing")
    steps = _steps(events)
    assert [s.kwh for s in steps] == [Decimal("0.01")] * 10
    assert meter.counts == 10
    assert steps[0].ts_start_ms == T0 and steps[-1].ts_end_ms == T0 + 10_000


def test_state_changes_switch_power_at_the_exact_instant() -> None:
    meter = _meter(PowerSpec(producing=36.0, idle=3.6, jitter=0.0))
    meter.advance_to(T0 + 500, "idle")  # 0.5 s at 36 kW, then idle
    events = meter.advance_to(T0 + 10_000, "idle")
    # 0.5 s * 36 kW + 9.5 s * 3.6 kW = 18 kJ + 34.2 kJ = 52.2 kJ = 0.0145 kWh -> 1 step
    assert sum(s.counts for s in _steps(events)) == 1
    assert meter.power_w == 3600.0
    events = meter.advance_to(T0 + 20_000, "idle")
    # +36 kJ: 88.2 kJ = 0.0245 kWh -> 2 steps in total
    assert meter.counts == 2


def test_ledger_steps_sum_to_the_register_with_jitter() -> None:
    meter = _meter(PowerSpec(producing=17.3, idle=2.1, jitter=0.2), initial_kwh=Decimal("5.5"))
    rng = random.Random(3)
    events: list[MeterEvent] = []
    t = T0
    state = "producing"
    for _ in range(2000):
        dt = rng.randint(1, 900)
        t += dt
        if rng.random() < 0.1:
            state = "idle" if state == "producing" else "producing"
        events += meter.advance_to(t, state)
    steps = _steps(events)
    total = sum((s.kwh for s in steps), Decimal(0))
    assert Decimal("5.5") + total == meter.counts * Decimal("0.01")
    assert steps[-1].register_kwh == meter.counts * Decimal("0.01")


def test_rollover_at_modulus() -> None:
    meter = _meter(PowerSpec(producing=36.0, jitter=0.0), modulus_kwh=Decimal("1"),
                   initial_kwh=Decimal("0.98"))
    events: list[MeterEvent] = []
    for t in range(1, 5):
        events += meter.advance_to(T0 + t * 1000, "producing")
    rolls = [e for e in events if isinstance(e, MeterCounterEvent)]
    assert len(rolls) == 1 and rolls[0].kind == "rollover"
    assert rolls[0].before_counts == 99 and rolls[0].after_counts == 0
    assert meter.counts == 2  # 98 + 4 steps mod 100
    assert sum(s.counts for s in _steps(events)) == 4


def test_reset() -> None:
    meter = _meter(PowerSpec(producing=36.0, jitter=0.0), initial_kwh=Decimal("7"))
    meter.advance_to(T0 + 3000, "producing")
    events = meter.reset(T0 + 3500, "producing")
    resets = [e for e in events if isinstance(e, MeterCounterEvent)]
    assert resets[0].kind == "counter_reset" and resets[0].before_counts == 703
    assert meter.counts == 0
    steps = _steps(meter.advance_to(T0 + 5000, "producing"))
    assert steps[0].ts_start_ms == T0 + 3500


def test_image_is_plausible() -> None:
    meter = _meter(PowerSpec(producing=20.0, jitter=0.0))
    image = meter.image()
    assert image.power_w == 20_000.0
    total = sum(v * a * image.power_factor for v, a in
                zip(image.voltages_v, image.currents_a, strict=True))
    assert abs(total - image.power_w) / image.power_w < 0.01


@given(
    segments=st.lists(
        st.tuples(st.integers(min_value=1, max_value=5000),
                  st.sampled_from(["producing", "idle", "off", "setup"])),
        min_size=1, max_size=60),
)
def test_register_is_the_floor_of_the_exact_integral(segments: list[tuple[int, str]]) -> None:
    """With no jitter, the register equals floor(integral of P dt / resolution) at each step."""
    power = PowerSpec(producing=23.7, idle=2.9, off=0.0, setup=4.4, jitter=0.0)
    meter = _meter(power)
    unit_uj = 36_000_000_000  # 0.01 kWh
    energy_uj = 0
    state = "producing"
    t = T0
    for dt, new_state in segments:
        energy_uj += round(power.kw(state) * 1_000_000) * dt
        t += dt
        meter.advance_to(t, new_state)
        state = new_state
    # run to the next step instant so the remainder is booked
    end = meter.next_event_ms()
    energy_uj += round(power.kw(state) * 1_000_000) * (end - t)
    meter.advance_to(end, state)
    assert meter.counts == energy_uj // unit_uj

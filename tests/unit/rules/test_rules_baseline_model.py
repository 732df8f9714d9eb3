"""The ISO 50006-style energy baseline: least squares on known data, and the saving."""

from __future__ import annotations

import pytest
from rules_helpers import T0, H

from rules.baseline_model import (
    MIN_POINTS,
    EnergyModel,
    WindowPoint,
    energy_baseline,
    fit,
    normalized_saving,
    window_points,
)
from rules.types import KpiRecord


def _pt(i: int, kwh: float, parts: int, hours: float = 0.5) -> WindowPoint:
    return WindowPoint(T0 + i * H, T0 + (i + 1) * H, kwh, parts, parts, hours)


def _rec(i: int, kwh: float | None, parts: int, producing_s: float = 1800.0) -> KpiRecord:
    return KpiRecord(site="s", line="L1", machine="m1", window="1h",
                     window_start_ms=T0 + i * H, window_end_ms=T0 + (i + 1) * H,
                     producing_time_s=producing_s, parts_produced=parts, parts_good=parts,
                     energy_kwh=kwh)


@pytest.mark.parametrize(
    ("xs", "ys", "slope", "intercept", "r2"),
    [
        # An exact line: 5 kWh base load per window plus 0.2 kWh per part.
        ([100, 150, 200, 250], [25.0, 35.0, 45.0, 55.0], 0.2, 5.0, 1.0),
        # The textbook set: x 1..5, y 2 4 5 4 5 -> y = 2.2 + 0.6 x, SSres 2.4, SStot 6.
        ([1, 2, 3, 4, 5], [2.0, 4.0, 5.0, 4.0, 5.0], 0.6, 2.2, 0.6),
        # Energy falling with volume is fitted as it is (a negative slope).
        ([10, 20, 30], [9.0, 8.0, 7.0], -0.1, 10.0, 1.0),
        # Energy that does not vary: a flat line, and no R² to state.
        ([10, 20, 30], [7.0, 7.0, 7.0], 0.0, 7.0, None),
    ],
)
def test_the_fit_is_least_squares(xs: list[int], ys: list[float], slope: float,
                                  intercept: float, r2: float | None) -> None:
    model = fit([_pt(i, y, x) for i, (x, y) in enumerate(zip(xs, ys, strict=True))],
                "parts_produced")
    assert model is not None
    assert model.slope == pytest.approx(slope, abs=1e-9)
    assert model.intercept == pytest.approx(intercept, abs=1e-9)
    assert model.r2 == (None if r2 is None else pytest.approx(r2, abs=1e-9))
    assert (model.n, model.x_min, model.x_max) == (len(xs), min(xs), max(xs))


@pytest.mark.parametrize(
    "points",
    [[], [_pt(0, 1.0, 1), _pt(1, 2.0, 2)],  # two points always fit exactly: no fit
     [_pt(i, float(i), 50) for i in range(5)]],  # the driver never varied
)
def test_no_fit_without_enough_varied_points(points: list[WindowPoint]) -> None:
    assert fit(points, "parts_produced") is None


def test_the_normalized_saving_compares_with_what_the_model_expects() -> None:
    model = EnergyModel("parts_produced", 0.2, 5.0, 0.9, 24, 50.0, 150.0)
    # Two windows of 100 parts: expected 25 kWh each; they used 20 and 22.
    saving = normalized_saving(model, [_pt(0, 20.0, 100), _pt(1, 22.0, 100)])
    assert saving is not None
    assert (saving.expected_kwh, saving.actual_kwh) == (pytest.approx(50.0), 42.0)
    assert saving.saving_kwh == pytest.approx(8.0)
    assert saving.saving_ratio == pytest.approx(0.16)
    assert (saving.claimable, saving.reason, saving.outside_range) == (True, None, 0)
    # More parts than the baseline ever made: the model extrapolates, and says so.
    beyond = normalized_saving(model, [_pt(0, 40.0, 200)])
    assert beyond is not None and beyond.outside_range == 1
    assert normalized_saving(model, []) is None


@pytest.mark.parametrize(
    ("r2", "n", "claimable", "reason"),
    [(0.75, MIN_POINTS, True, None), (0.7499, 24, False, "weak_fit"),
     (None, 24, False, "weak_fit"), (0.99, MIN_POINTS - 1, False, "too_few_points")],
)
def test_a_weak_fit_claims_nothing(r2: float | None, n: int, claimable: bool,
                                   reason: str | None) -> None:
    saving = normalized_saving(EnergyModel("producing_h", 10.0, 1.0, r2, n, 0.0, 1.0),
                               [_pt(0, 5.0, 10)])
    assert saving is not None and (saving.claimable, saving.reason) == (claimable, reason)


def test_the_better_driver_is_chosen_and_windows_without_energy_are_left_out() -> None:
    # Energy follows producing time (12 kWh per producing hour + 2), not the part count.
    hours = [0.2, 0.9, 0.5, 0.7, 0.3, 0.8, 0.6, 0.4]
    parts = [40, 50, 45, 38, 52, 41, 47, 44]
    baseline = [_rec(i, 2 + 12 * h, p, h * 3600) for i, (h, p) in enumerate(
        zip(hours, parts, strict=True))]
    baseline.append(_rec(8, None, 500, 3600))  # a meter outage: no point
    current = [_rec(20, 2 + 12 * 0.5 - 1.0, 45), _rec(21, None, 45)]
    model = energy_baseline(baseline, current)
    assert len(model.baseline_points) == 8 and len(model.current_points) == 1
    assert model.chosen is not None and model.chosen.driver == "producing_h"
    assert model.chosen.r2 == pytest.approx(1.0)
    volume = model.fits["parts_produced"]
    assert volume is not None and (volume.r2 or 0) < 0.5
    assert model.saving is not None
    assert model.saving.saving_kwh == pytest.approx(1.0)
    assert model.saving.claimable


def test_volume_is_kept_on_a_tie_and_no_fit_means_no_saving() -> None:
    same = [_rec(i, 10.0 + i, 10 + i, 1800 + 360 * i) for i in range(6)]
    model = energy_baseline(same, same)
    assert model.chosen is not None and model.chosen.driver == "parts_produced"
    assert model.saving is not None and model.saving.saving_kwh == pytest.approx(0.0, abs=1e-9)
    empty = energy_baseline([], same)
    assert (empty.chosen, empty.saving) == (None, None)


def test_window_points_are_in_time_order() -> None:
    points = window_points([_rec(2, 3.0, 3), _rec(0, 1.0, 1), _rec(1, None, 2)])
    assert [p.parts_produced for p in points] == [1, 3]
    assert points[0].producing_h == 0.5

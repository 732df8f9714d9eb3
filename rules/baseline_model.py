"""An energy baseline in the spirit of ISO 50006: energy explained by what drives it.

A plain per-unit ratio (kWh per good part) moves with the production volume alone: a
machine's base load spread over fewer parts makes a slow month look wasteful. ISO 50006
therefore models the baseline period's energy against its relevant variable and
compares the reported period with what that model expects under the reported period's
own conditions:

    energy_kwh = intercept + slope x driver        (one point per window)

fitted by least squares on the baseline period's windows that have energy data. Two
drivers are fitted: the production volume (parts produced per window: every part made,
scrap included, took its energy) and the producing hours per window (a machine whose
energy follows its spindle time rather than its part count); the one with the higher R²
is used. The normalized saving is

    saving = sum over the reported windows of (intercept + slope x driver) - actual energy

positive when the period used less than the baseline model expects. The intercept is a
per-window base load, so the model holds for the window size it was fitted on (tumbling
windows all have the same length; shift windows of different lengths make it
approximate).

A fit explains too little to claim a saving when R² is below :data:`MIN_R2` (0.75, the
threshold commonly used for energy baselines), or when it rests on fewer than
:data:`MIN_POINTS` windows; the figures are still shown, marked as not claimable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rules.types import KpiRecord

__all__ = [
    "DRIVERS",
    "MIN_FIT_POINTS",
    "MIN_POINTS",
    "MIN_R2",
    "EnergyBaseline",
    "EnergyModel",
    "NormalizedSaving",
    "WindowPoint",
    "energy_baseline",
    "fit",
    "normalized_saving",
    "window_points",
]

Driver = Literal["parts_produced", "producing_h"]
DRIVERS: tuple[Driver, ...] = ("parts_produced", "producing_h")
"""Production volume first: it is kept when both fit equally well."""

MIN_R2 = 0.75
MIN_POINTS = 6
"""Fewer baseline windows than this claim nothing, however well they line up."""
MIN_FIT_POINTS = 3
"""Two points always fit a line exactly (R² 1): a fit needs at least three."""


@dataclass(frozen=True, slots=True)
class WindowPoint:
    """One window's energy and its candidate drivers."""

    start_ms: int
    end_ms: int
    energy_kwh: float
    parts_produced: int
    parts_good: int
    producing_h: float

    def driver(self, name: Driver) -> float:
        """The value of driver ``name`` in this window."""
        return float(self.parts_produced) if name == "parts_produced" else self.producing_h


def window_points(records: Iterable[KpiRecord]) -> list[WindowPoint]:
    """A point per record that has energy data, in time order (a window without a meter
    reading says nothing about energy and is left out, as the per-unit figures do)."""
    points = [WindowPoint(r.window_start_ms, r.window_end_ms, float(r.energy_kwh),
                          r.parts_produced, r.parts_good, r.producing_time_s / 3600)
              for r in records if r.energy_kwh is not None]
    return sorted(points, key=lambda p: p.start_ms)


@dataclass(frozen=True, slots=True)
class EnergyModel:
    """``energy = intercept + slope x driver`` per window, fitted on ``n`` points whose
    driver ranged over [x_min, x_max]; ``r2`` is None when the energy did not vary."""

    driver: Driver
    slope: float
    intercept: float
    r2: float | None
    n: int
    x_min: float
    x_max: float

    def expected(self, x: float) -> float:
        """The energy the model expects for a window with driver value ``x``."""
        return self.intercept + self.slope * x


def fit(points: Sequence[WindowPoint], driver: Driver) -> EnergyModel | None:
    """Least squares of energy against ``driver``; None with fewer than
    :data:`MIN_FIT_POINTS` points or a driver that never varied (no slope to find)."""
    if len(points) < MIN_FIT_POINTS:
        return None
    x = np.array([p.driver(driver) for p in points], dtype=float)
    y = np.array([p.energy_kwh for p in points], dtype=float)
    if np.ptp(x) == 0:
        return None
    design = np.column_stack([x, np.ones_like(x)])
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = None if total == 0 else 1.0 - residual / total
    return EnergyModel(driver, float(slope), float(intercept), r2, len(points),
                       float(x.min()), float(x.max()))


@dataclass(frozen=True, slots=True)
class NormalizedSaving:
    """The reported period against the baseline model.

    ``expected_kwh`` is what the model expects for the reported windows, ``actual_kwh``
    what they used; ``saving_kwh`` = expected - actual (positive = less than expected),
    ``saving_ratio`` = saving / expected. ``outside_range`` counts reported windows whose
    driver lies outside what the baseline saw (the model extrapolates there).
    ``claimable`` is False, with ``reason`` ``weak_fit`` or ``too_few_points``, when the
    model is too weak to claim the saving.
    """

    model: EnergyModel
    n: int
    expected_kwh: float
    actual_kwh: float
    saving_kwh: float
    saving_ratio: float | None
    outside_range: int
    claimable: bool
    reason: Literal["weak_fit", "too_few_points"] | None


def normalized_saving(model: EnergyModel,
                      points: Sequence[WindowPoint]) -> NormalizedSaving | None:
    """The saving of the reported ``points`` against ``model``; None without points."""
    if not points:
        return None
    expected = sum(model.expected(p.driver(model.driver)) for p in points)
    actual = sum(p.energy_kwh for p in points)
    saving = expected - actual
    outside = sum(1 for p in points
                  if not model.x_min <= p.driver(model.driver) <= model.x_max)
    reason: Literal["weak_fit", "too_few_points"] | None = None
    if model.n < MIN_POINTS:
        reason = "too_few_points"
    elif model.r2 is None or model.r2 < MIN_R2:
        reason = "weak_fit"
    return NormalizedSaving(model, len(points), expected, actual, saving,
                            saving / expected if expected > 0 else None, outside,
                            reason is None, reason)


@dataclass(frozen=True, slots=True)
class EnergyBaseline:
    """Every driver's fit on the baseline windows, the one used, and the saving."""

    baseline_points: tuple[WindowPoint, ...]
    current_points: tuple[WindowPoint, ...]
    fits: dict[Driver, EnergyModel | None]
    chosen: EnergyModel | None
    saving: NormalizedSaving | None


def energy_baseline(baseline: Iterable[KpiRecord],
                    current: Iterable[KpiRecord]) -> EnergyBaseline:
    """Fit both drivers on ``baseline``'s windows, keep the better (higher R²; volume on
    a tie), and state ``current``'s normalized saving against it."""
    base = tuple(window_points(baseline))
    cur = tuple(window_points(current))
    fits: dict[Driver, EnergyModel | None] = {d: fit(base, d) for d in DRIVERS}
    chosen: EnergyModel | None = None
    for model in fits.values():
        if model is None:
            continue
        if chosen is None or (model.r2 or 0.0) > (chosen.r2 or 0.0) + 1e-9:
            chosen = model
    saving = None if chosen is None else normalized_saving(chosen, cur)
    return EnergyBaseline(base, cur, fits, chosen, saving)

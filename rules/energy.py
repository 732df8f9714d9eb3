"""Cumulative energy registers: readings to exact energy, spread uniformly over time.

The register is handled in integer steps of its resolution (``round(value / resolution)``),
so 99999950.3 and 12.4 at 0.1 kWh are the integers 999999503 and 124 and the rollover
increase is exactly 621 steps = 62.1 kWh. Shares of an interval that straddles a window
boundary are exact: :class:`~fractions.Fraction` values (:func:`share`), or the same as an
integer numerator and denominator (:func:`share_term`), which the engine sums per
denominator (:class:`rules.totals.EnergyTotals`) so that a slice makes no fraction; so
window sums add up to the meter's total with no floating-point drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from rules.counters import looks_like_wrap
from rules.spec import MeterSpec

ROLLOVER = "meter_rollover"
RESET = "meter_reset"
MS_PER_HOUR = 3_600_000


def exact(value: float | int) -> Fraction:
    """The decimal a config number was written as (``0.1`` -> 1/10), not its binary double."""
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(repr(value))


@dataclass(frozen=True, slots=True)
class MeterModel:
    """A meter's register arithmetic, precomputed from its :class:`MeterSpec`."""

    resolution_kwh: float
    resolution: Fraction
    modulus_steps: int | None
    max_power_kw: Fraction | None

    @classmethod
    def from_spec(cls, spec: MeterSpec) -> MeterModel:
        """Build the model; the modulus is converted to steps once."""
        modulus = None
        if spec.modulus_kwh is not None:
            modulus = round(spec.modulus_kwh / spec.resolution_kwh)
        power = None if spec.max_power_kw is None else exact(spec.max_power_kw)
        return cls(spec.resolution_kwh, exact(spec.resolution_kwh), modulus, power)

    def to_steps(self, value: object) -> int | None:
        """The reading in integer steps, or None when it is not a usable register value."""
        kind = type(value)
        if kind is float or kind is int:  # the common case, checked the same
            if 0 <= value < math.inf:  # type: ignore[operator]
                return round(value / self.resolution_kwh)  # type: ignore[operator]
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or value < 0:
            return None
        return round(value / self.resolution_kwh)

    def increase(self, old: int, new: int, dt_ms: int) -> tuple[int, str | None]:
        """Steps consumed between two readings ``dt_ms`` apart, and the flag raised.

        A decrease is a rollover only with a modulus configured and a plausible implied
        increase: at most ``max_power_kw * dt_h`` when that limit is configured, otherwise
        the 10 %/90 % rule of the part counters. Anything else is a reset or a replaced
        meter, which has counted ``new`` since zero.
        """
        if new >= old:
            return new - old, None
        modulus = self.modulus_steps
        if modulus is not None and old < modulus:
            implied = modulus - old + new
            if self.max_power_kw is not None:
                # kWh = steps * resolution must not exceed kW * dt_ms / 3 600 000
                if implied * self.resolution * MS_PER_HOUR <= self.max_power_kw * dt_ms:
                    return implied, ROLLOVER
            elif looks_like_wrap(old, new, modulus):
                return implied, ROLLOVER
        return new, RESET


def share(delta: int, t1: int, t2: int, a: int, b: int) -> Fraction | int:
    """The part of ``delta`` spread uniformly over ``[t1, t2)`` that falls in ``[a, b)``."""
    lo = max(t1, a)
    hi = min(t2, b)
    if hi <= lo or delta == 0:
        return 0
    if lo == t1 and hi == t2:
        return delta
    return Fraction(delta * (hi - lo), t2 - t1)


def share_term(delta: int, t1: int, t2: int, a: int, b: int) -> tuple[int, int]:
    """:func:`share` as a numerator and a denominator, unreduced and with no fraction
    made: ``(0, 1)`` for nothing, a denominator of 1 for the whole ``delta``."""
    lo = max(t1, a)
    hi = min(t2, b)
    if hi <= lo or delta == 0:
        return 0, 1
    if lo == t1 and hi == t2:
        return delta, 1
    return delta * (hi - lo), t2 - t1


READING = "reading"
"""The register role of a meter of any carrier but electricity (in the carrier's unit)."""


def register_role(carrier: str) -> str:
    """The sample role a meter's cumulative register arrives as: ``energy_kwh`` for
    electricity, ``reading`` for every other carrier."""
    return "energy_kwh" if carrier == "electricity" else READING

"""Additive per-window quantities, the only thing a window keeps while it is open.

Everything here is a sum (integer milliseconds, integer parts, exact energy), so a window
is the sum of its slices and a long window the sum of the short ones it contains; ratios
are computed from these sums only when the record is built (docs/kpi.md: never average ratios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# Indices into MachineTotals.times (ISO 22400 time elements inside PBT).
PRODUCING = 0  # APT
SETUP = 1  # ASUT
UNPLANNED = 2  # ADET (unplanned_down and off)
IDLE = 3  # ADOT
PLANNED_DOWN = 4  # PDOT caused by the state (breaks are PDOT by the calendar)
UNKNOWN = 5  # scheduled time with no known state or not observed: out of POT, 'incomplete'

STATE_INDEX: dict[str, int] = {
    "producing": PRODUCING,
    "setup": SETUP,
    "unplanned_down": UNPLANNED,
    "off": UNPLANNED,
    "idle": IDLE,
    "planned_down": PLANNED_DOWN,
}


def fraction_to_json(value: Fraction | int) -> str:
    """Exact text form of a Fraction (or int) for checkpoints; whole numbers as integers,
    so that a restored total (read back as an int) snapshots the same again."""
    if isinstance(value, int) or value.denominator == 1:
        return str(int(value))
    return f"{value.numerator}/{value.denominator}"


def fraction_from_json(text: str) -> Fraction:
    """Inverse of :func:`fraction_to_json`."""
    return Fraction(text)


_PARTS_MAX = 16
"""How many denominators :attr:`EnergyTotals.kwh_parts` holds before it is folded."""


@dataclass(slots=True)
class EnergyTotals:
    """Energy attributed to one machine, one line's own meters, or the site's own meters.

    ``kwh`` and ``seen`` are electricity; ``other`` holds the quantity of every other
    carrier that contributed (in its unit; a key present means seen); ``cost`` is the
    time-of-use cost of the electricity (the other carriers have flat prices and are
    priced from their quantities when the record is built).

    The electricity is exact, and :attr:`total_kwh` is it: ``kwh`` plus the terms
    ``numerator / denominator`` of ``kwh_parts`` (keyed by denominator). A slice books
    its meters' whole steps and shares there with integer arithmetic only, and folding
    slices into windows adds integers per denominator; a window's terms share a few
    denominators (the register resolution times the lengths of the reading intervals
    that straddle its boundaries), and more than ``_PARTS_MAX`` of them are folded into
    ``kwh``, so the exact sum is formed as a fraction only now and then.
    """

    kwh: Fraction | int = 0
    seen: bool = False
    flags: set[str] = field(default_factory=set)
    other: dict[str, Fraction | int] = field(default_factory=dict)
    cost: Fraction | int = 0
    kwh_parts: dict[int, int] = field(default_factory=dict)

    @property
    def total_kwh(self) -> Fraction | int:
        """The exact electricity: ``kwh`` plus the terms of ``kwh_parts``."""
        parts = self.kwh_parts
        if not parts:
            return self.kwh
        den = math.lcm(*parts)
        num = sum(n * (den // d) for d, n in parts.items())
        total = self.kwh + Fraction(num, den)
        return total.numerator if total.denominator == 1 else total

    def _fold_parts(self) -> None:
        self.kwh = self.total_kwh
        self.kwh_parts = {}

    def add(self, other: EnergyTotals) -> None:
        """Fold ``other`` into this total."""
        if other.seen:
            if other.kwh:
                self.kwh += other.kwh
            if other.kwh_parts:
                parts = self.kwh_parts
                for den, num in other.kwh_parts.items():
                    parts[den] = parts.get(den, 0) + num
                if len(parts) > _PARTS_MAX:
                    self._fold_parts()
            self.seen = True
        if other.flags:
            self.flags |= other.flags
        if other.other:
            mine = self.other
            for carrier, qty in other.other.items():
                mine[carrier] = mine.get(carrier, 0) + qty
        if other.cost:
            self.cost += other.cost

    def book(self, carrier: str, quantity: Fraction | int, cost: Fraction | int = 0) -> None:
        """Add a meter's ``quantity`` (in its carrier's unit) and, for electricity, its
        time-of-use ``cost``: the one place that knows where each carrier is kept."""
        if carrier == "electricity":
            self.seen = True
            if quantity:
                self.kwh += quantity
            if cost:
                self.cost += cost
        else:
            self.other[carrier] = self.other.get(carrier, 0) + quantity

    def book_steps(self, whole: int, shares: dict[int, int], res_num: int, res_den: int,
                   cost: Fraction | int = 0) -> None:
        """Add electricity counted in register steps of ``res_num / res_den`` kWh: ``whole``
        steps and the shares ``numerator / denominator`` of steps (keyed by denominator),
        and its time-of-use ``cost``; :meth:`book` without making a fraction."""
        self.seen = True
        parts = self.kwh_parts
        if whole:
            parts[res_den] = parts.get(res_den, 0) + whole * res_num
        for den, num in shares.items():
            den *= res_den
            parts[den] = parts.get(den, 0) + num * res_num
        if len(parts) > _PARTS_MAX:
            self._fold_parts()
        if cost:
            self.cost += cost

    @property
    def any_seen(self) -> bool:
        """Some meter of any carrier contributed."""
        return self.seen or bool(self.other)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        out: dict[str, Any] = {"kwh": fraction_to_json(self.total_kwh), "seen": self.seen,
                               "flags": sorted(self.flags)}
        if self.other:
            out["other"] = {k: fraction_to_json(v) for k, v in sorted(self.other.items())}
        if self.cost:
            out["cost"] = fraction_to_json(self.cost)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnergyTotals:
        """Inverse of :meth:`to_json` (checkpoints without carriers or cost read as none)."""
        return cls(_number(data["kwh"]), bool(data["seen"]), set(data["flags"]),
                   {k: _number(v) for k, v in data.get("other", {}).items()},
                   _number(data.get("cost", "0")))


def _number(text: str) -> Fraction | int:
    value = fraction_from_json(text)
    return value.numerator if value.denominator == 1 else value


@dataclass(slots=True)
class MachineTotals:
    """One machine's time elements (ms), counts and energy over a slice or a window."""

    times: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0])
    produced: int = 0
    scrap: int = 0
    good: int = 0
    energy: EnergyTotals = field(default_factory=EnergyTotals)
    flags: set[str] = field(default_factory=set)

    def add(self, other: MachineTotals) -> None:
        """Fold ``other`` into this total."""
        mine, theirs = self.times, other.times
        mine[0] += theirs[0]
        mine[1] += theirs[1]
        mine[2] += theirs[2]
        mine[3] += theirs[3]
        mine[4] += theirs[4]
        mine[5] += theirs[5]
        if other.produced:
            self.produced += other.produced
        if other.scrap:
            self.scrap += other.scrap
        if other.good:
            self.good += other.good
        energy = other.energy
        if energy.seen or energy.flags or energy.other or energy.cost:
            self.energy.add(energy)
        if other.flags:
            self.flags |= other.flags

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "times": list(self.times),
            "produced": self.produced,
            "scrap": self.scrap,
            "good": self.good,
            "energy": self.energy.to_json(),
            "flags": sorted(self.flags),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineTotals:
        """Inverse of :meth:`to_json`."""
        return cls(
            [int(v) for v in data["times"]],
            int(data["produced"]),
            int(data["scrap"]),
            int(data["good"]),
            EnergyTotals.from_json(data["energy"]),
            set(data["flags"]),
        )


@dataclass(slots=True)
class PlantTotals:
    """All the plant's totals over one slice or window: per machine, per line, site-wide.

    ``observed`` is the time (ms) the engine observed: plant-wide, because the agent
    runs (or not) for every machine at once; a machine whose state was unknown while the
    agent ran is observed and shows it in its ``UNKNOWN`` time instead.
    """

    machines: list[MachineTotals]
    lines: list[EnergyTotals]
    site: EnergyTotals
    observed: int = 0

    @classmethod
    def empty(cls, n_machines: int, n_lines: int) -> PlantTotals:
        """Zero totals for the plant's shape."""
        return cls(
            [MachineTotals() for _ in range(n_machines)],
            [EnergyTotals() for _ in range(n_lines)],
            EnergyTotals(),
        )

    def add(self, other: PlantTotals) -> None:
        """Fold ``other`` into this total."""
        for mine, theirs in zip(self.machines, other.machines, strict=True):
            # MachineTotals.add, inline: a window takes every machine's slice totals
            a, b = mine.times, theirs.times
            a[0] += b[0]
            a[1] += b[1]
            a[2] += b[2]
            a[3] += b[3]
            a[4] += b[4]
            a[5] += b[5]
            if theirs.produced:
                mine.produced += theirs.produced
            if theirs.scrap:
                mine.scrap += theirs.scrap
            if theirs.good:
                mine.good += theirs.good
            energy = theirs.energy
            if energy.seen or energy.flags or energy.other or energy.cost:
                mine.energy.add(energy)
            if theirs.flags:
                mine.flags |= theirs.flags
        for e_mine, e_theirs in zip(self.lines, other.lines, strict=True):
            if e_theirs.seen or e_theirs.flags or e_theirs.other or e_theirs.cost:
                e_mine.add(e_theirs)
        self.site.add(other.site)
        self.observed += other.observed

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "machines": [m.to_json() for m in self.machines],
            "lines": [e.to_json() for e in self.lines],
            "site": self.site.to_json(),
            "observed": self.observed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlantTotals:
        """Inverse of :meth:`to_json`."""
        return cls(
            [MachineTotals.from_json(m) for m in data["machines"]],
            [EnergyTotals.from_json(e) for e in data["lines"]],
            EnergyTotals.from_json(data["site"]),
            int(data["observed"]),
        )

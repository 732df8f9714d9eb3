"""Additive per-window quantities, the only thing a window keeps while it is open.

Everything here is a sum (integer milliseconds, integer parts, exact energy), so a window
is the sum of its slices and a long window the sum of the short ones it contains; ratios
are computed from these sums only when the record is built (docs/kpi.md: never average ratios).
"""

from __future__ import annotations

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


@dataclass(slots=True)
class EnergyTotals:
    """Energy attributed to one machine, one line's own meters, or the site's own meters.

    ``kwh`` and ``seen`` are electricity; ``other`` holds the quantity of every other
    carrier that contributed (in its unit; a key present means seen); ``cost`` is the
    time-of-use cost of the electricity (the other carriers have flat prices and are
    priced from their quantities when the record is built).
    """

    kwh: Fraction | int = 0
    seen: bool = False
    flags: set[str] = field(default_factory=set)
    other: dict[str, Fraction | int] = field(default_factory=dict)
    cost: Fraction | int = 0

    def add(self, other: EnergyTotals) -> None:
        """Fold ``other`` into this total."""
        if other.seen:
            self.kwh += other.kwh
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

    @property
    def any_seen(self) -> bool:
        """Some meter of any carrier contributed."""
        return self.seen or bool(self.other)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        out: dict[str, Any] = {"kwh": fraction_to_json(self.kwh), "seen": self.seen,
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
        mine = self.times
        for i, value in enumerate(other.times):
            mine[i] += value
        self.produced += other.produced
        self.scrap += other.scrap
        self.good += other.good
        self.energy.add(other.energy)
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
            mine.add(theirs)
        for e_mine, e_theirs in zip(self.lines, other.lines, strict=True):
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

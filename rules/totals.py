"""Additive per-window quantities, the only thing a window keeps while it is open.

Everything here is a sum (integer milliseconds, integer parts, exact energy), so a window
is the sum of its slices and a long window the sum of the short ones it contains; ratios
are computed from these sums only when the record is built (KPI.md: never average ratios).
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
UNKNOWN = 5  # scheduled time with no known state: out of POT, flags 'incomplete'

STATE_INDEX: dict[str, int] = {
    "producing": PRODUCING,
    "setup": SETUP,
    "unplanned_down": UNPLANNED,
    "off": UNPLANNED,
    "idle": IDLE,
    "planned_down": PLANNED_DOWN,
}


def fraction_to_json(value: Fraction | int) -> str:
    """Exact text form of a Fraction (or int) for checkpoints."""
    if isinstance(value, int):
        return str(value)
    return f"{value.numerator}/{value.denominator}"


def fraction_from_json(text: str) -> Fraction:
    """Inverse of :func:`fraction_to_json`."""
    return Fraction(text)


@dataclass(slots=True)
class EnergyTotals:
    """Energy attributed to one machine, one line's own meters, or the site's own meters."""

    kwh: Fraction | int = 0
    seen: bool = False
    flags: set[str] = field(default_factory=set)

    def add(self, other: EnergyTotals) -> None:
        """Fold ``other`` into this total."""
        if other.seen:
            self.kwh += other.kwh
            self.seen = True
        if other.flags:
            self.flags |= other.flags

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {"kwh": fraction_to_json(self.kwh), "seen": self.seen, "flags": sorted(self.flags)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnergyTotals:
        """Inverse of :meth:`to_json`."""
        kwh = fraction_from_json(data["kwh"])
        return cls(kwh.numerator if kwh.denominator == 1 else kwh, bool(data["seen"]),
                   set(data["flags"]))


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
    """All the plant's totals over one slice or window: per machine, per line, site-wide."""

    machines: list[MachineTotals]
    lines: list[EnergyTotals]
    site: EnergyTotals

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

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "machines": [m.to_json() for m in self.machines],
            "lines": [e.to_json() for e in self.lines],
            "site": self.site.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlantTotals:
        """Inverse of :meth:`to_json`."""
        return cls(
            [MachineTotals.from_json(m) for m in data["machines"]],
            [EnergyTotals.from_json(e) for e in data["lines"]],
            EnergyTotals.from_json(data["site"]),
        )

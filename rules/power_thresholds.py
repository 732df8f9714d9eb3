"""Thresholds for :mod:`rules.power_state` proposed from a recorded power log (pure).

The method, for an operator to judge what it prints:

1. Each reading stands for the time until the next one (capped at ten median reading
   intervals, so a gap in the log does not make one reading weigh for hours): the
   statistics below are of *time* at each power, not of readings.
2. Two levels, *working* and *not working*, are the weighted 1-D k-means split of all
   readings into two clusters (started at the 25 % and 75 % time quantiles). They count
   as two levels only when they are well separated: Ashman's D =
   sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2) of at least 3 (a normally spread level split
   in two gives about 2.7, an evenly spread one 3.5), and when the working level is at
   least a third above the other (working at 5.5 kW against waiting at 5 kW is noise,
   not a machine cutting). Otherwise the log shows one level and nothing is proposed.
3. The same split of the lower cluster, on a logarithmic scale (``log(p + 1 %`` of the
   working level ``)``, so that a level near zero stands apart from a base load however
   many base loads there are), tells *off* from *idle*, when it is as well separated and
   its lower part is below half of its upper part (off is a fraction of the base load,
   not a second base load).
4. A threshold lies in the gap between two adjacent clusters: halfway between the lower
   cluster's 99th and the upper cluster's 1st time percentile, with a hysteresis of a
   quarter of that gap (so both ends of a band stay inside it); overlapping clusters
   get the midpoint of their centres and no hysteresis, with a note. The smallest such
   hysteresis is proposed for the machine.
5. ``min_dwell_s`` is twice the median reading interval: a change needs three readings
   at the new level, so one or two stray readings never change the state.
6. Rises to the producing threshold and back below it (less the hysteresis) are timed
   as :mod:`rules.power_state` times cycles; their median suggests ``cycles`` with
   ``min_s`` half and ``max_s`` twice the median. Whether one rise is one part only the
   operator knows, so the cycles are proposed as a comment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_READINGS", "CycleProposal", "Level", "Proposal", "propose_thresholds",
           "to_toml"]

MIN_READINGS = 20
"""Fewer readings than this say nothing about a machine's levels."""
SEPARATED_D = 3.0
"""Ashman's D from which two clusters count as two levels."""
_CAP_INTERVALS = 10.0

FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Level:
    """A power level found in the log: its name, centre, spread and share of time."""

    name: str
    center_kw: float
    spread_kw: float
    share: float


@dataclass(frozen=True, slots=True)
class CycleProposal:
    """Rises to the producing threshold seen in the log, and the ``cycles`` they suggest."""

    rises: int
    median_s: float
    min_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class Proposal:
    """What :func:`propose_thresholds` found and proposes."""

    off_below_kw: float
    producing_above_kw: float
    hysteresis_kw: float
    min_dwell_s: float
    levels: tuple[Level, ...]
    readings: int
    interval_s: float
    cycles: CycleProposal | None = None
    notes: tuple[str, ...] = ()


def _nice(value: float) -> float:
    """``value`` to three significant digits (kW and seconds read better so)."""
    if value == 0 or not math.isfinite(value):
        return 0.0
    digits = 2 - math.floor(math.log10(abs(value)))
    return round(value, max(digits, 0))


def _quantile(values: FloatArray, weights: FloatArray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    idx = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(v[min(idx, len(v) - 1)])


def _stats(values: FloatArray, weights: FloatArray) -> tuple[float, float, float]:
    total = float(weights.sum())
    mean = float((values * weights).sum() / total)
    var = float((weights * (values - mean) ** 2).sum() / total)
    return mean, math.sqrt(max(var, 0.0)), total


def _two_means(values: FloatArray, weights: FloatArray) -> Mask | None:
    """The boolean mask of the upper cluster of a weighted 2-means split, or None."""
    lo, hi = _quantile(values, weights, 0.25), _quantile(values, weights, 0.75)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            return None
    upper = values > (lo + hi) / 2
    for _ in range(100):
        if upper.all() or not upper.any():
            return None
        c_lo = float(np.average(values[~upper], weights=weights[~upper]))
        c_hi = float(np.average(values[upper], weights=weights[upper]))
        new = values > (c_lo + c_hi) / 2
        if np.array_equal(new, upper):
            break
        upper = new
    if upper.all() or not upper.any():
        return None
    return upper


def _ashman(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    spread = math.sqrt(a[1] ** 2 + b[1] ** 2)
    gap = abs(b[0] - a[0])
    return math.inf if spread == 0 else math.sqrt(2) * gap / spread


def _split(values: FloatArray, weights: FloatArray, floor: float | None = None
           ) -> Mask | None:
    """The upper cluster's mask of a well separated 2-means split, or None; with
    ``floor``, on the scale ``log(max(p, 0) + floor)``, where a level near zero stands as
    far from a base load as that base load from ten times it."""
    scaled = values if floor is None else np.log(np.maximum(values, 0.0) + floor)
    upper = _two_means(scaled, weights)
    if upper is None:
        return None
    if _ashman(_stats(scaled[~upper], weights[~upper]),
               _stats(scaled[upper], weights[upper])) < SEPARATED_D:
        return None
    return upper


def _threshold(low: tuple[FloatArray, FloatArray], high: tuple[FloatArray, FloatArray]
               ) -> tuple[float, float, bool]:
    """``(threshold, hysteresis, clean)`` in the gap between two clusters."""
    top = _quantile(low[0], low[1], 0.99)
    bottom = _quantile(high[0], high[1], 0.01)
    if top < bottom:
        return (top + bottom) / 2, (bottom - top) / 4, True
    centre = (_stats(*low)[0] + _stats(*high)[0]) / 2
    return centre, 0.0, False


def _rises(times_ms: FloatArray, power: FloatArray, above: float, below: float
           ) -> list[float]:
    """Lengths (s) of the rises to ``above`` and back under ``below``, timed between
    readings as :class:`rules.power_state.PowerDeriver` times them."""
    out: list[float] = []
    start: float | None = None
    for t, p in zip(times_ms.tolist(), power.tolist(), strict=True):
        if p >= above:
            if start is None:
                start = t
        elif p < below and start is not None:
            out.append((t - start) / 1000)
            start = None
    return out


def propose_thresholds(times_ms: Sequence[int], power_kw: Sequence[float]) -> Proposal:
    """Thresholds for the power log ``(times_ms[i], power_kw[i])``; see the module doc.

    ValueError when the log cannot tell levels apart: too few readings, no reading
    interval, or one power level only.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    p = np.asarray(power_kw, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError("times and readings differ in number")
    keep = np.isfinite(p) & np.isfinite(t)
    t, p = t[keep], p[keep]
    if len(p) < MIN_READINGS:
        raise ValueError(f"{len(p)} readings: at least {MIN_READINGS} are needed, from a "
                         "time in which the machine both worked and waited")
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    dt = np.diff(t)
    positive = dt[dt > 0]
    if not len(positive):
        raise ValueError("every reading has the same time: no reading interval")
    interval = float(np.median(positive))
    weights = np.append(np.minimum(dt, _CAP_INTERVALS * interval), interval)
    weights = np.where(weights > 0, weights, interval * 1e-3)

    upper = _split(p, weights)
    if upper is not None and _stats(p[upper], weights[upper])[0] < 4 / 3 * max(
            _stats(p[~upper], weights[~upper])[0], 0.0):
        upper = None
    if upper is None:
        raise ValueError("the log shows one power level only: record a time in which the "
                         "machine both works and waits (idles or is off)")
    low = (p[~upper], weights[~upper])
    high = (p[upper], weights[upper])
    total = float(weights.sum())
    notes: list[str] = []
    levels: list[Level] = []

    def level(name: str, part: tuple[FloatArray, FloatArray]) -> Level:
        mean, spread, w = _stats(*part)
        return Level(name, mean, spread, w / total)

    producing_above, h_prod, clean = _threshold(low, high)
    if not clean:
        notes.append("the working and waiting levels overlap: check producing_above_kw")
    hysteresis = [h_prod]
    below_low = _split(*low, floor=0.01 * _stats(*high)[0])
    off_split = None
    if below_low is not None:
        off = (low[0][~below_low], low[1][~below_low])
        idle = (low[0][below_low], low[1][below_low])
        if _stats(*off)[0] < 0.5 * _stats(*idle)[0]:
            off_split = (off, idle)
    if off_split is not None:
        off, idle = off_split
        levels += [level("off", off), level("idle", idle), level("producing", high)]
        off_below, h_off, clean_off = _threshold(off, idle)
        hysteresis.append(h_off)
        if not clean_off:
            notes.append("the off and idle levels overlap: check off_below_kw")
    else:
        low_level = level("idle", low)
        base = _quantile(*low, 0.01)
        if low_level.center_kw <= 0.05 * _stats(*high)[0]:
            # Off and working, never idle: the idle band is the middle half of the gap.
            top, bottom = _quantile(*low, 0.99), _quantile(*high, 0.01)
            if top < bottom:
                off_below = top + (bottom - top) / 4
                producing_above = top + 3 * (bottom - top) / 4
                hysteresis = [(bottom - top) / 8]
            else:
                off_below = producing_above / 2
            levels += [Level("off", low_level.center_kw, low_level.spread_kw,
                             low_level.share), level("producing", high)]
            notes.append("no idle level in the log: the idle band is a guess, check "
                         "off_below_kw and producing_above_kw")
        else:
            off_below = base / 2
            levels += [low_level, level("producing", high)]
            notes.append("no off level in the log: off_below_kw is half the lowest power "
                         "seen, check it")
    h = max(min(hysteresis), 0.0)
    off_below = max(off_below, 0.0)
    if producing_above - off_below <= 0:
        raise ValueError("the levels found leave no idle band between off and producing")
    h = min(h, (producing_above - off_below) / 4)

    proposal_cycles = None
    rises = _rises(t, p, producing_above, producing_above - h)
    if len(rises) >= 3:
        median = float(np.median(rises))
        proposal_cycles = CycleProposal(len(rises), _nice(median), _nice(median / 2),
                                        _nice(median * 2))
    return Proposal(
        off_below_kw=_nice(off_below), producing_above_kw=_nice(producing_above),
        hysteresis_kw=_nice(h), min_dwell_s=_nice(2 * interval / 1000),
        levels=tuple(levels), readings=len(p), interval_s=interval / 1000,
        cycles=proposal_cycles, notes=tuple(notes))


def _kw(value: float) -> str:
    return f"{value:g}"


def to_toml(proposal: Proposal, *, machine: str, device: str, source: str) -> str:
    """The proposal as a commented TOML snippet for the machine's ``[[machines]]`` entry."""
    pr = proposal
    lines = [
        f"# proposed from {source}: {pr.readings} power_kw readings of {device!r}, "
        f"one every {pr.interval_s:g} s (median)",
        "# levels (time-weighted 2-means): " + ", ".join(
            f"{lv.name} {lv.center_kw:.3g} kW +-{lv.spread_kw:.2g} ({lv.share:.0%} of the time)"
            for lv in pr.levels),
        *(f"# note: {note}" for note in pr.notes),
        f"# under the [[machines]] entry of {machine!r}:",
        "[machines.power_state]",
        f"off_below_kw = {_kw(pr.off_below_kw)}",
        f"producing_above_kw = {_kw(pr.producing_above_kw)}",
        f"hysteresis_kw = {_kw(pr.hysteresis_kw)}",
        f"min_dwell_s = {_kw(pr.min_dwell_s)}",
    ]
    if device != machine:
        lines.append(f'meter = "{device}"')
    c = pr.cycles
    if c is not None:
        lines += [
            f"# {c.rises} rises above {_kw(pr.producing_above_kw)} kW lasted "
            f"{_kw(c.median_s)} s on median; if one rise is one part, count parts with:",
            "# [machines.power_state.cycles]",
            f"# above_kw = {_kw(pr.producing_above_kw)}",
            f"# min_s = {_kw(c.min_s)}",
            f"# max_s = {_kw(c.max_s)}",
        ]
    return "\n".join(lines) + "\n"

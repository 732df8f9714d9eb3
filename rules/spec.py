"""What the KPI engine needs to know about the plant, as plain immutable values.

The agent builds these from its validated config; ``rules`` imports nothing of ours, so
it cannot see the config models themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time

DEFAULT_COUNTER_MODULUS = 2**32
KGCE_PER_KWH = 0.1229  # GB/T 2589 equivalent value of electricity
DEFAULT_GRID_FACTOR = 0.5306  # kgCO2/kWh, MEE 2023 national average

_WINDOW_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def window_length_ms(label: str) -> int:
    """Length of a tumbling window label such as ``10s``, ``15m``, ``8h``, ``1d``.

    ``shift`` is not a tumbling window and is rejected here; callers handle it.
    """
    match = _WINDOW_RE.match(label)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window {label!r} is not a duration like '1m', '15m', '1h' or 'shift'")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True, slots=True)
class ShiftSpec:
    """A shift of the calendar in site-local time; ``end <= start`` means it crosses midnight."""

    name: str
    start: time
    end: time
    breaks: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """A machine whose KPIs are computed.

    ``good_counter`` is True where the machine reports a cumulative good counter
    (role ``parts_good``) instead of a scrap counter (role ``parts_bad``).
    """

    id: str
    line: str
    ideal_cycle_time_s: float
    counter_modulus: int = DEFAULT_COUNTER_MODULUS
    good_counter: bool = False


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """An energy meter attached to a machine or, failing that, to a line."""

    id: str
    machine: str | None
    line: str | None
    resolution_kwh: float = 0.01
    modulus_kwh: float | None = None
    max_power_kw: float | None = None


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A line; its counts and schedule KPIs are those of its ``output_machine``."""

    id: str
    output_machine: str


@dataclass(frozen=True, slots=True)
class ThresholdAlarmSpec:
    """Raise when ``signal`` of ``device`` stays above ``raise_above`` for ``min_duration_s``;
    clear when it falls below ``clear_below`` (hysteresis)."""

    name: str
    device: str
    signal: str
    raise_above: float
    clear_below: float
    min_duration_s: float = 0.0
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class StateDurationAlarmSpec:
    """Raise when ``machine`` stays in ``state`` longer than ``max_duration_s``."""

    name: str
    machine: str
    state: str
    max_duration_s: float
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class KpiLimitAlarmSpec:
    """Raise when a window's KPI field (e.g. ``energy_per_good_unit_kwh``) exceeds ``limit``."""

    name: str
    machine: str
    field: str
    limit: float
    window: str
    severity: str = "warning"


AlarmSpec = ThresholdAlarmSpec | StateDurationAlarmSpec | KpiLimitAlarmSpec


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything the KPI engine reads from the config (DESIGN.md, "Config")."""

    site_id: str
    timezone: str = "UTC"
    grid_factor_kg_per_kwh: float = DEFAULT_GRID_FACTOR
    windows: tuple[str, ...] = ("1m", "15m", "1h")
    lateness_s: float = 5.0
    shifts: tuple[ShiftSpec, ...] = ()
    lines: tuple[LineSpec, ...] = ()
    machines: tuple[MachineSpec, ...] = ()
    meters: tuple[MeterSpec, ...] = ()
    alarms: tuple[AlarmSpec, ...] = field(default_factory=tuple)

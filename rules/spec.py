"""What the KPI engine needs to know about the plant, as plain immutable values.

The agent builds these from its validated config; ``rules`` imports nothing of ours, so
it cannot see the config models themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, time

from rules.derived_state import StateRulesSpec
from rules.power_state import PowerStateSpec

DEFAULT_COUNTER_MODULUS = 2**32
KGCE_PER_KWH = 0.1229  # GB/T 2589 equivalent value of electricity
DEFAULT_GRID_FACTOR = 0.5306  # kgCO2/kWh, MEE 2023 national average

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names in ISO order: ``WEEKDAYS[d - 1]`` is ISO weekday ``d``."""
EVERY_DAY = frozenset(range(1, 8))

CALENDAR_WINDOWS = ("1d", "1w", "1mo")
"""Windows of the site's local calendar: local days, ISO weeks (from Monday), months.

They start at local midnight, so their length varies (a day is 23 h or 25 h on a DST
night, a month 28 to 31 days); every other label is a fixed length aligned to the UTC
epoch."""

_WINDOW_RE = re.compile(r"^(\d+)(ms|s|m|h|d|w|mo)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 7 * 86_400_000}


def is_calendar_window(label: str) -> bool:
    """True for ``1d``, ``1w`` and ``1mo``, the windows that follow the local calendar."""
    return label in CALENDAR_WINDOWS


def window_length_ms(label: str) -> int:
    """Length of a window label such as ``10s``, ``15m``, ``8h``, ``1d``.

    For ``1d`` and ``1w`` it is the nominal length (24 h, 7 days): a local day on a DST
    night is an hour shorter or longer, so code that needs a calendar window's exact
    bounds takes them from :func:`rules.calendar.calendar_window`. ``1mo`` has no nominal
    length and raises, like an unknown label; ``shift`` is not a duration and is rejected
    too (callers handle it).
    """
    match = _WINDOW_RE.match(label)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window {label!r} is not a duration like '1m', '15m', '1h', a "
                         "calendar window '1d', '1w', '1mo', or 'shift'")
    count, unit = int(match.group(1)), match.group(2)
    if unit in ("d", "w", "mo") and label not in CALENDAR_WINDOWS:
        raise ValueError(f"window {label!r}: days, weeks and months are calendar windows, "
                         "one at a time ('1d', '1w', '1mo'); for a fixed length use hours, "
                         "e.g. '48h'")
    if unit == "mo":
        raise ValueError("window '1mo' is a calendar month: its length varies (28 to 31 "
                         "local days)")
    return count * _UNIT_MS[unit]


def check_window_label(label: str) -> None:
    """ValueError unless ``label`` is a window the engine computes (``shift`` included)."""
    if label not in ("shift", "1mo"):
        window_length_ms(label)


@dataclass(frozen=True, slots=True)
class ShiftSpec:
    """A shift of the calendar in site-local time; ``end <= start`` means it crosses midnight.

    ``days`` are the ISO weekdays (1 = Monday) on which the shift *starts*: a night shift
    belongs to the day it starts on, wherever it ends.
    """

    name: str
    start: time
    end: time
    breaks: tuple[tuple[time, time], ...] = ()
    days: frozenset[int] = EVERY_DAY


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """A working calendar: weekly shifts and the dated exceptions to them.

    On a date in ``off_days`` no shift starts; a date in ``make_up_days`` is worked with
    the shifts of the ISO weekday paired with it (a weekend day worked in exchange for a
    holiday, 调休). The two sets never overlap: the agent resolves public holidays and the
    config's own exceptions into these plain dates before the engine sees them. A calendar
    without shifts schedules every hour of every day that is not an off day.
    """

    name: str = ""
    shifts: tuple[ShiftSpec, ...] = ()
    off_days: frozenset[date] = frozenset()
    make_up_days: tuple[tuple[date, int], ...] = ()

    @property
    def always(self) -> bool:
        """Every instant is scheduled: no shifts and no off days."""
        return not self.shifts and not self.off_days


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
    calendar: str | None = None
    """Name of the calendar in ``EngineSpec.calendars`` the machine follows; None: the
    site's."""
    state_from: StateRulesSpec | PowerStateSpec | None = None
    """Where the state comes from when the machine has no ``state`` signal: a rule table
    over its input signals (:mod:`rules.derived_state`) or its power
    (:mod:`rules.power_state`); None: the ``state`` signal."""


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """A meter attached to a machine or, failing that, to a line.

    ``carrier`` names an entry of ``EngineSpec.carriers``; for a carrier other than
    electricity ``resolution_kwh`` and ``modulus_kwh`` are in that carrier's unit (the
    register arithmetic is the same) and its register is the role ``reading``.
    """

    id: str
    machine: str | None
    line: str | None
    resolution_kwh: float = 0.01
    modulus_kwh: float | None = None
    max_power_kw: float | None = None
    carrier: str = "electricity"


ELECTRICITY = "electricity"

GBT2589_CARRIERS: dict[str, tuple[str, str | None, float | None]] = {
    # carrier: (unit, record field of its quantity, kgce per unit)
    ELECTRICITY: ("kWh", "energy_kwh", KGCE_PER_KWH),  # 当量值 (equivalent value)
    "natural_gas": ("m3", "natural_gas_m3", 1.2143),  # 38 931 kJ/m3; range 1.1000-1.3300
    "steam": ("kg", "steam_kg", 0.1286),  # low pressure, 3 763 MJ/t
    "water": ("m3", "water_m3", None),  # a working medium: quantity only
    "compressed_air": ("m3", "compressed_air_m3", None),  # no default: see docs/kpi.md
}
"""The one table of default carriers: unit, quantity field and standard coal factor
(GB/T 2589-2020, Appendix A, "reference coefficients for converting energy to standard
coal"). A site config may override every factor and add carriers of its own."""


@dataclass(frozen=True, slots=True)
class CarrierSpec:
    """A resolved energy carrier: the factors a window's quantity is multiplied by.

    ``field`` is the record field holding its quantity (None for a configured carrier,
    which counts in ``kgce``, ``co2_kg`` and ``energy_cost`` only). A factor of None
    means the carrier does not contribute to that total. ``price_per_unit`` is the flat
    price of a carrier other than electricity (electricity is priced by the tariff).
    """

    name: str
    unit: str
    field: str | None
    kgce_per_unit: float | None
    co2_kg_per_unit: float | None = None
    price_per_unit: float | None = None


def default_carriers(grid_factor_kg_per_kwh: float = DEFAULT_GRID_FACTOR,
                     ) -> tuple[CarrierSpec, ...]:
    """The GB/T 2589 table as carrier specs; electricity's CO2 factor is the grid's."""
    return tuple(
        CarrierSpec(name, unit, fld, kgce,
                    grid_factor_kg_per_kwh if name == ELECTRICITY else None)
        for name, (unit, fld, kgce) in GBT2589_CARRIERS.items()
    )


TARIFF_PERIODS = ("critical_peak", "peak", "flat", "valley")
"""Time-of-use periods of Chinese industrial electricity: 尖, 峰, 平, 谷."""


@dataclass(frozen=True, slots=True)
class TariffSeason:
    """The periods of the day in ``months`` (1-12): ``(start, end, period)`` in local
    time, covering the whole day; ``end <= start`` crosses midnight."""

    months: frozenset[int]
    periods: tuple[tuple[time, time, str], ...]


@dataclass(frozen=True, slots=True)
class TariffSpec:
    """A time-of-use electricity tariff: price per kWh of each period, and its seasons.

    Every month is in exactly one season; ``currency`` only labels the figures."""

    prices: tuple[tuple[str, float], ...]
    seasons: tuple[TariffSeason, ...]
    currency: str = "CNY"


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
    """Everything the KPI engine reads from the config.

    ``shifts``, ``off_days`` and ``make_up_days`` are the site's calendar; ``calendars``
    are the named ones machines may follow instead (``MachineSpec.calendar``).
    """

    site_id: str
    timezone: str = "UTC"
    grid_factor_kg_per_kwh: float = DEFAULT_GRID_FACTOR
    windows: tuple[str, ...] = ("1m", "15m", "1h")
    lateness_s: float = 5.0
    shifts: tuple[ShiftSpec, ...] = ()
    off_days: frozenset[date] = frozenset()
    make_up_days: tuple[tuple[date, int], ...] = ()
    calendars: tuple[CalendarSpec, ...] = ()
    lines: tuple[LineSpec, ...] = ()
    machines: tuple[MachineSpec, ...] = ()
    meters: tuple[MeterSpec, ...] = ()
    alarms: tuple[AlarmSpec, ...] = field(default_factory=tuple)
    carriers: tuple[CarrierSpec, ...] | None = None
    """Carriers and their factors; None: the GB/T 2589 defaults (:func:`default_carriers`)."""
    tariff: TariffSpec | None = None
    """Time-of-use tariff; None: no ``energy_cost`` from electricity."""

    def carrier_specs(self) -> tuple[CarrierSpec, ...]:
        """The carriers in effect."""
        if self.carriers is not None:
            return self.carriers
        return default_carriers(self.grid_factor_kg_per_kwh)

    def site_calendar(self) -> CalendarSpec:
        """The site's calendar as one value."""
        return CalendarSpec("", self.shifts, self.off_days, self.make_up_days)

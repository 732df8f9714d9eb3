"""The value types every part of the agent exchanges.

They live in ``rules`` because the rules define what a sample and a record are; the
collectors and the agent import them from here (see docs/architecture.md, "Layout").

Time is carried as integer milliseconds since the UNIX epoch (UTC) so that window
arithmetic is exact: a shift of 480 minutes is 28 800 000 ms, never 479.99999 min.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, Literal, NamedTuple

Quality = Literal["good", "uncertain", "bad"]
QUALITIES: frozenset[str] = frozenset({"good", "uncertain", "bad"})

MachineState = Literal["producing", "setup", "idle", "unplanned_down", "planned_down", "off"]
MACHINE_STATES: frozenset[str] = frozenset(
    {"producing", "setup", "idle", "unplanned_down", "planned_down", "off"}
)

Role = Literal["state", "parts_total", "parts_bad", "parts_good", "energy_kwh", "power_kw"]
ROLES: frozenset[str] = frozenset(
    {"state", "parts_total", "parts_bad", "parts_good", "energy_kwh", "power_kw"}
)

SCHEMA = "factory-kpi/1"

STATE_SOURCES: frozenset[str] = frozenset({"power"})
"""Values of a record's ``state_source``: how its states were obtained when not from the
machine's controller."""


def ms_to_rfc3339(ts_ms: int) -> str:
    """Render epoch milliseconds as RFC 3339 UTC with millisecond precision and a ``Z``."""
    seconds, millis = divmod(ts_ms, 1000)
    dt = datetime.fromtimestamp(seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def rfc3339_to_ms(text: str) -> int:
    """Parse an RFC 3339 timestamp into epoch milliseconds; naive times are rejected."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class Sample(NamedTuple):
    """One observation of one semantic signal of one device.

    ``device`` is a machine or meter id from the config, ``signal`` its role. ``ts_source``
    records where the timestamp came from (``source``, ``server`` or ``receive``), because
    a receive-time stamp on a late notification can move a part into the wrong window.

    A named tuple rather than a frozen dataclass: equally immutable, and about three
    times cheaper to build, which counts at one sample per notification or poll.
    """

    ts_ms: int
    device: str
    signal: str
    value: str | int | float | None
    quality: Quality = "good"
    ts_source: str = "source"

    def to_json_dict(self) -> dict[str, Any]:
        """The sample-log line of docs/architecture.md (``quality`` omitted when good)."""
        out: dict[str, Any] = {
            "ts": ms_to_rfc3339(self.ts_ms),
            "device": self.device,
            "signal": self.signal,
            "value": self.value,
        }
        if self.quality != "good":
            out["quality"] = self.quality
        return out

    def to_row(self) -> list[Any]:
        """The compact form the sample journal and the engine checkpoint store: every
        field in order, as JSON-ready values (one list, no key per field)."""
        return [self.ts_ms, self.device, self.signal, self.value, self.quality,
                self.ts_source]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Sample:
        """The inverse of :meth:`to_row`; IndexError, TypeError or ValueError on a row
        that is not one."""
        return cls(int(row[0]), str(row[1]), str(row[2]), row[3], row[4], str(row[5]))


KPI_FIELDS: tuple[str, ...] = (
    "observed_s",
    "planned_busy_time_s",
    "producing_time_s",
    "setup_time_s",
    "unplanned_down_time_s",
    "idle_time_s",
    "parts_produced",
    "parts_good",
    "parts_scrap",
    "availability",
    "performance",
    "quality_ratio",
    "oee",
    "defect_rate",
    "scrap_all_machines",
    "rolled_throughput_yield",
    "cycle_time_mean_s",
    "ideal_cycle_time_s",
    "energy_kwh",
    "energy_per_unit_kwh",
    "energy_per_good_unit_kwh",
    "natural_gas_m3",
    "steam_kg",
    "water_m3",
    "compressed_air_m3",
    "kgce",
    "kgce_per_good_unit",
    "co2_kg",
    "co2_per_good_unit_kg",
    "energy_cost",
    "energy_cost_per_good_unit",
)
"""Every numeric field of a KPI record, in wire order: ``observed_s`` (the time the agent
observed) first, as it bounds every time element after it."""


def _clean(value: float | int | None) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite KPI value {value!r}: undefined values must be None")
    return value


@dataclass(frozen=True, slots=True)
class KpiRecord:
    """One machine's (or line's, or site's) KPIs over one window.

    Undefined values (0/0) are ``None``, never 0 and never NaN. A line record has
    ``machine`` None; the site record has ``line`` and ``machine`` None.

    ``observed_s`` is the part of the window the agent observed: it was running, and
    had started observing before (see :meth:`rules.engine.KpiEngine.observe_from`). It is
    the same for the machine, line and site records of one window, equals the window's
    length when the agent saw all of it, and lets a consumer refuse to replace a stored
    record with one that saw less of the window (an agent that lost its checkpoint).
    The engine always sets it; ``None`` means "not stated" and is only found in records
    read back from agents that predate the field.
    """

    site: str
    line: str | None
    machine: str | None
    window: str
    window_start_ms: int
    window_end_ms: int
    observed_s: float | None = None
    planned_busy_time_s: float = 0.0
    producing_time_s: float = 0.0
    setup_time_s: float = 0.0
    unplanned_down_time_s: float = 0.0
    idle_time_s: float = 0.0
    parts_produced: int = 0
    parts_good: int = 0
    parts_scrap: int = 0
    availability: float | None = None
    performance: float | None = None
    quality_ratio: float | None = None
    oee: float | None = None
    defect_rate: float | None = None
    scrap_all_machines: int | None = None
    rolled_throughput_yield: float | None = None
    cycle_time_mean_s: float | None = None
    ideal_cycle_time_s: float | None = None
    energy_kwh: float | None = None
    energy_per_unit_kwh: float | None = None
    energy_per_good_unit_kwh: float | None = None
    natural_gas_m3: float | None = None
    steam_kg: float | None = None
    water_m3: float | None = None
    compressed_air_m3: float | None = None
    kgce: float | None = None
    kgce_per_good_unit: float | None = None
    co2_kg: float | None = None
    co2_per_good_unit_kg: float | None = None
    energy_cost: float | None = None
    energy_cost_per_good_unit: float | None = None
    flags: tuple[str, ...] = field(default_factory=tuple)
    state_source: str | None = None
    """Where the machine states behind the record's times came from when not from the
    machine's controller: ``"power"`` (thresholds on its power, see
    :mod:`rules.power_state`). None (the wire form leaves the key out): the controller."""

    def __post_init__(self) -> None:
        values = _kpi_values(self)
        try:
            # Finite values have a finite exact sum; anything else is looked at one by one.
            finite = math.isfinite(math.fsum([v for v in values if v is not None]))
        except (OverflowError, ValueError, TypeError):
            finite = False
        if not finite:
            for value in values:
                _clean(value)
        if self.observed_s is not None and self.observed_s < 0:
            raise ValueError(f"observed_s {self.observed_s!r} is negative")

    @property
    def key(self) -> tuple[str, str | None, str | None, str, int]:
        """Identity of the record: a replay with the same key overwrites, never adds."""
        return (self.site, self.line, self.machine, self.window, self.window_end_ms)

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form of docs/architecture.md: MQTT payload, ``edge-agent kpi`` output."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "site": self.site,
            "line": self.line,
            "machine": self.machine,
            "window": self.window,
            "window_start": _window_time(self.window_start_ms),
            "window_end": _window_time(self.window_end_ms),
        }
        # The fields' values themselves: every one is an int, a float or None, so the
        # deep copy ``dataclasses.asdict`` makes would give equal values, much slower.
        out.update(zip(KPI_FIELDS, _kpi_values(self), strict=True))
        out["flags"] = list(self.flags)
        if self.state_source is not None:
            out["state_source"] = self.state_source
        return out


_kpi_values = attrgetter(*KPI_FIELDS)
# A window's records (every machine, line and the site, every label ending there) share
# their start and end times.
_window_time = lru_cache(maxsize=256)(ms_to_rfc3339)


AlarmState = Literal["raised", "cleared"]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A rule's alarm being raised or cleared, published on ``.../alarm``."""

    ts_ms: int
    site: str
    line: str | None
    machine: str | None
    rule: str
    state: AlarmState
    severity: str = "warning"
    value: float | None = None
    message: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form published on the alarm topic and written to measurement ``alarm``."""
        return {
            "schema": "factory-alarm/1",
            "ts": ms_to_rfc3339(self.ts_ms),
            "site": self.site,
            "line": self.line,
            "machine": self.machine,
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "message": self.message,
        }

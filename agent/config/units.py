"""Engineering units a device may report a role in, and the factor to the role's unit.

The KPI engine reads energy in kWh and power in kW (the role names say so). A meter or
PLC that reports Wh or W declares it with ``engineering_unit`` instead of a hand-made
``scale``, and a unit that cannot be a role's (kW for an energy counter) is refused when
the config is loaded rather than producing KPIs off by a factor of 1000.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ROLE_UNITS", "unit_factor", "unit_problem"]

ROLE_UNITS: Final[dict[str, dict[str, float]]] = {
    "energy_kwh": {"Wh": 0.001, "kWh": 1.0, "MWh": 1000.0},
    "power_kw": {"W": 0.001, "kW": 1.0, "MW": 1000.0},
}
"""Role -> {engineering unit: factor to the role's own unit}."""


def unit_problem(role: str, unit: str) -> str | None:
    """Why ``unit`` cannot be declared for ``role``, or None when it can."""
    units = ROLE_UNITS.get(role)
    if units is None:
        return f"{role} is not measured in a unit; engineering_unit does not apply"
    if unit not in units:
        return f"{unit!r} is not a unit of {role} (use one of {', '.join(units)})"
    return None


def unit_factor(role: str, unit: str | None) -> float:
    """What a value in ``unit`` is multiplied by to be in ``role``'s unit (1 when unset)."""
    return 1.0 if unit is None else ROLE_UNITS[role][unit]

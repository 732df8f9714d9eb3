"""The simulated machines' OPC UA node table: what every machine serves, and where.

Pure data (no asyncua), so that the scenario's checks, the command line's node map and
the server read one table without importing the server. The address space itself is
described in :mod:`simulators.opcua_server`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BY_KEY", "NAMESPACE_URI", "VARIABLES", "Variable", "variable_by_path"]

NAMESPACE_URI = "urn:factory-edge:simulator:cnc"
"""Namespace of every browse name the simulator defines (fixed contract)."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable of a machine: its key in the simulator, path under the machine, and
    the name of its OPC UA built-in type (a ``ua.VariantType`` member)."""

    key: str
    path: tuple[str, ...]
    type_name: str


VARIABLES: tuple[Variable, ...] = (
    Variable("manufacturer", ("Identification", "Manufacturer"), "String"),
    Variable("model", ("Identification", "Model"), "String"),
    Variable("serial_number", ("Identification", "SerialNumber"), "String"),
    Variable("state", ("Monitoring", "MachineTool", "MachineState"), "Int32"),
    Variable("operation_mode", ("Monitoring", "MachineTool", "OperationMode"), "Int32"),
    Variable("power_on_s", ("Monitoring", "MachineTool", "PowerOnDuration"), "UInt32"),
    Variable("spindle_rotating", ("Monitoring", "Spindle", "IsRotating"), "Boolean"),
    Variable("spindle_speed", ("Monitoring", "Spindle", "Speed"), "Double"),
    Variable("spindle_load", ("Monitoring", "Spindle", "Load"), "Double"),
    Variable("program_name", ("Production", "ActiveProgram", "Name"), "String"),
    Variable("program_state", ("Production", "ActiveProgram", "State"), "Int32"),
    Variable("program_state_name", ("Production", "ActiveProgram", "State", "CurrentState"),
             "LocalizedText"),
    Variable("parts_total", ("Production", "PartsProducedInLifetime"), "UInt32"),
    Variable("parts_scrap", ("Production", "PartsScrapInLifetime"), "UInt32"),
    Variable("statistics_parts_total", ("Production", "Statistics", "PartsProducedInLifetime"),
             "UInt32"),
)
"""Every variable of a machine, in creation order (a parent before its children)."""

BY_KEY: dict[str, Variable] = {v.key: v for v in VARIABLES}
"""The variables by key."""
_BY_PATH: dict[str, Variable] = {"/".join(v.path): v for v in VARIABLES}


def variable_by_path(path: str) -> Variable:
    """The variable at ``path`` under a machine, e.g. ``Production/PartsScrapInLifetime``."""
    try:
        return _BY_PATH[path.strip("/")]
    except KeyError:
        raise KeyError(f"no variable {path!r} under a machine") from None

"""OPC 40501-1 (umati, OPC UA for Machine Tools): where a MachineTool object keeps what
the agent reads, and how those values become the agent's roles. Pure: no connection.

A machine configured with ``profile = "opc40501"`` names its MachineTool object; at
every connect the collector finds the nodes below it by browse name (namespaces by
URI, never by index) and subscribes to them like configured tags
(:mod:`collectors.opcua.profile`). Clause numbers are those of OPC 40501-1 1.02; the
browse names are the same in 1.00 and 1.01, where the optional nodes of 1.02 are absent.

- ``state`` is not one node but a combination (:func:`machine_state`, :data:`STATE_RULES`)
  of the active program's state machine (``Production/ActiveProgram/State``, the
  ``ProductionProgramStateMachineType`` of 8.4.10 whose states are those of the
  ``ProductionStateMachineType``, 8.4.8), the operation mode
  (``Monitoring/MachineTool/OperationMode``, ``MachineOperationMode`` of 12.5, in the
  ``MachineOperationMonitoringType`` of 8.3.9) and, where the server has them (1.02),
  the OPC 40001-1 building blocks ``MachineryItemState`` and ``MachineryOperationMode``
  added to that type.
- ``parts_total`` is ``PartsProducedInLifetime``: in the 1.02 place
  (``Monitoring/MachineTool/OperationCounters``, 8.3.9), else the 1.00/1.01 one
  (``Production/Statistics``, ``ProductionStatisticsType``, 8.4.12), else the active
  job's ``PartsCompleted``.
- ``parts_good`` is the active job's ``PartsGood`` (``ProductionJobType``, 8.4.3, in the
  ``ProductionPlan``, 8.4.2): the spec has no lifetime counter of good parts. The job is
  the one ``ActiveProgram/JobNodeId`` or ``JobIdentifier`` names (8.4.5), else the
  plan's running (or interrupted) job, else its only job; the counter starts again
  with every job, which the engine counts as a counter reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rules.types import Sample

__all__ = [
    "DI_URI",
    "IA_URI",
    "ITEM_STATES",
    "MACHINERY_MODES",
    "MACHINERY_URI",
    "MACHINE_TOOL_URI",
    "NAME",
    "OPERATION_MODES",
    "PROGRAM_STATES",
    "STATE_RULES",
    "Inputs",
    "StateRule",
    "machine_state",
]

NAME = "opc40501"
"""The profile's name in the config (``profile = "opc40501"``)."""

MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"
"""Namespace of OPC 40501-1's browse names (clause 15.1)."""
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
"""OPC 40001-1 (Machinery): ``MachineryItemState``, ``MachineryOperationMode``, the
``Machines`` folder machine tools are usually found in."""
DI_URI = "http://opcfoundation.org/UA/DI/"
"""OPC 10000-100 (Devices): the browse name ``OperationCounters`` is in it."""
IA_URI = "http://opcfoundation.org/UA/IA/"
"""OPC 10000-200 (Industrial Automation): the ``Stacklight`` under ``Monitoring``; a
dependency of the model that the agent does not read (lamp meanings are the vendor's)."""

Path = tuple[tuple[str | None, str], ...]
"""Browse names from the MachineTool object: ``(namespace URI, name)``, None for ns 0."""

MT, MA, DI = MACHINE_TOOL_URI, MACHINERY_URI, DI_URI
PROGRAM_STATE: Path = ((MT, "Production"), (MT, "ActiveProgram"), (MT, "State"),
                       (None, "CurrentState"))
OPERATION_MODE: Path = ((MT, "Monitoring"), (MT, "MachineTool"), (MT, "OperationMode"))
ITEM_STATE: Path = ((MT, "Monitoring"), (MT, "MachineTool"), (MA, "MachineryItemState"),
                    (None, "CurrentState"))
MACHINERY_MODE: Path = ((MT, "Monitoring"), (MT, "MachineTool"),
                        (MA, "MachineryOperationMode"), (None, "CurrentState"))
LIFETIME_PARTS: tuple[Path, ...] = (
    ((MT, "Monitoring"), (MT, "MachineTool"), (DI, "OperationCounters"),
     (MT, "PartsProducedInLifetime")),
    ((MT, "Production"), (MT, "Statistics"), (MT, "PartsProducedInLifetime")),
)
"""Where ``parts_total`` is looked for, in order (1.02, then 1.00/1.01)."""
JOB_NODE_ID: Path = ((MT, "Production"), (MT, "ActiveProgram"), (MT, "JobNodeId"))
JOB_IDENTIFIER: Path = ((MT, "Production"), (MT, "ActiveProgram"), (MT, "JobIdentifier"))
PRODUCTION_PLAN: Path = ((MT, "Production"), (MT, "ProductionPlan"))
JOB_IDENTIFIER_PROPERTY: Path = ((MT, "Identifier"),)
JOB_STATE: Path = ((MT, "State"), (None, "CurrentState"))
JOB_PARTS_GOOD: Path = ((MT, "PartsGood"),)
JOB_PARTS_COMPLETED: Path = ((MT, "PartsCompleted"),)

PROGRAM_STATES = ("Initializing", "Running", "Ended", "Interrupted", "Aborted")
"""States of the ``ProductionStateMachineType`` (8.4.8; StateNumber 0..4 in this order)."""
ACTIVE_JOB_STATES = frozenset({"Running", "Interrupted"})
"""Job states in which a job is the one being worked on."""
OPERATION_MODES: Mapping[str, str] = {"0": "Manual", "1": "Automatic", "2": "Setup",
                                      "3": "AutoWithManualIntervention", "4": "Service",
                                      "5": "Other"}
"""The ``MachineOperationMode`` enumeration (12.5) by value."""
ITEM_STATES = ("NotAvailable", "OutOfService", "NotExecuting", "Executing")
"""States of OPC 40001-1's ``MachineryItemState_StateMachineType``."""
MACHINERY_MODES = ("None", "Maintenance", "Setup", "Processing")
"""States of OPC 40001-1's ``MachineryOperationModeStateMachineType``."""

PRODUCTION_MODES = frozenset({"Automatic", "AutoWithManualIntervention", "Other"})
SETUP_MODES = frozenset({"Manual", "Setup"})


@dataclass(frozen=True, slots=True)
class StateRule:
    """One row of the state table: the first row whose conditions all hold decides.

    A condition left None holds for every value (also for an input the server lacks).
    """

    state: str
    why: str
    item_state: frozenset[str] | None = None
    program: frozenset[str] | None = None
    mode: frozenset[str] | None = None
    machinery_mode: frozenset[str] | None = None

    def matches(self, program: str, mode: str, item_state: str | None,
                machinery_mode: str | None) -> bool:
        """True when every condition of the row holds for these inputs."""
        return ((self.item_state is None or item_state in self.item_state)
                and (self.program is None or program in self.program)
                and (self.mode is None or mode in self.mode)
                and (self.machinery_mode is None or machinery_mode in self.machinery_mode))


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


STATE_RULES: tuple[StateRule, ...] = (
    StateRule("off", "OPC 40001-1 NotAvailable: switched off or in energy saving, no "
              "activity", item_state=_set("NotAvailable")),
    StateRule("unplanned_down", "OPC 40001-1 OutOfService: not functional (error, blocked)",
              item_state=_set("OutOfService")),
    StateRule("unplanned_down", "8.4.8: the program stopped before its end (Interrupted can "
              "be resumed, Aborted cannot) in a mode meant for production or repair; the "
              "InterruptionCondition (9.2) would give the reason",
              program=_set("Interrupted", "Aborted"),
              mode=PRODUCTION_MODES | _set("Service")),
    StateRule("planned_down", "12.5 Service: shall not be used for manufacturing any parts; "
              "OPC 40001-1 Maintenance", mode=_set("Service")),
    StateRule("planned_down", "OPC 40001-1 MachineryOperationMode Maintenance",
              machinery_mode=_set("Maintenance")),
    StateRule("setup", "12.5 Manual and Setup: reduced axis speeds, the operator makes "
              "settings for the subsequent work", mode=SETUP_MODES),
    StateRule("setup", "OPC 40001-1 MachineryOperationMode Setup",
              machinery_mode=_set("Setup")),
    StateRule("producing", "8.4.8 Running in an automatic mode", program=_set("Running")),
    StateRule("setup", "8.4.8 Initializing: the program is being prepared",
              program=_set("Initializing")),
    StateRule("idle", "8.4.8 Ended (or Interrupted or Aborted after setting up): no program "
              "runs, the machine waits for the next"),
)
"""The state table, in order; docs/commissioning.md shows it with the same reasons."""


def machine_state(program: str, mode: str, item_state: str | None = None,
                  machinery_mode: str | None = None) -> str:
    """The machine state of one combination of the inputs (see :data:`STATE_RULES`).

    ``program`` is a name of :data:`PROGRAM_STATES`, ``mode`` one of
    :data:`OPERATION_MODES`' values; the OPC 40001-1 inputs are None where the server
    does not have them.
    """
    for rule in STATE_RULES:
        if rule.matches(program, mode, item_state, machinery_mode):
            return rule.state
    raise AssertionError("the last rule holds for everything")


_RANK = {"good": 0, "uncertain": 1, "bad": 2}

INPUT_SIGNALS = ("program", "mode", "item_state", "machinery_mode", "job")
"""The profile's own signals (``opc40501.<name>``): inputs of ``state`` and the job
watch; they never leave the collector."""


def input_signal(name: str) -> str:
    """The signal name of a profile input as the collector carries it internally."""
    return f"{NAME}.{name}"


class Inputs:
    """The latest value of each input of one machine, and the ``state`` they give.

    Program and mode are required; ``optional`` names the OPC 40001-1 inputs the server
    has, which are waited for too (so a connect does not report a passing state) but are
    left out while their quality is bad. The combined sample is stamped with the latest
    input's timestamp (never earlier than the one before) and has the worst quality of
    the inputs used; it is ``bad`` while a required input is. Only changes are returned.
    """

    __slots__ = ("_last", "_values", "device", "optional")

    def __init__(self, device: str, optional: frozenset[str] = frozenset()) -> None:
        self.device = device
        self.optional = optional
        self._values: dict[str, Sample] = {}
        self._last: Sample | None = None

    def with_optional(self, optional: frozenset[str]) -> Inputs:
        """The same memory for a server whose optional inputs changed (a re-expansion)."""
        other = Inputs(self.device, optional)
        other._values = {k: v for k, v in self._values.items()
                         if k in ("program", "mode") or k in optional}
        other._last = self._last
        return other

    def feed(self, name: str, sample: Sample) -> Sample | None:
        """Take one input sample; the new ``state`` sample, or None when it is unchanged
        or cannot be told yet."""
        self._values[name] = sample
        program, mode = self._values.get("program"), self._values.get("mode")
        if program is None or mode is None or any(k not in self._values for k in self.optional):
            return None
        extra = [self._values[k] for k in ("item_state", "machinery_mode")
                 if k in self.optional and self._values[k].quality != "bad"]
        used = [program, mode, *extra]
        latest = max(used, key=lambda s: s.ts_ms)
        ts = latest.ts_ms if self._last is None else max(latest.ts_ms, self._last.ts_ms)
        quality = max((s.quality for s in used), key=lambda q: _RANK.get(q, 2))
        value: str | None = None
        if quality == "bad" or not all(isinstance(s.value, str) for s in used):
            quality = "bad"
        else:
            known = {k: self._values[k].value for k in ("item_state", "machinery_mode")
                     if self._values.get(k) in extra}
            value = machine_state(str(program.value), str(mode.value),
                                  _text(known.get("item_state")),
                                  _text(known.get("machinery_mode")))
        last = self._last
        if last is not None and (last.value, last.quality) == (value, quality):
            return None
        out = Sample(ts, self.device, "state", value, quality, latest.ts_source)
        self._last = out
        return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def job_left(value: object) -> bool:
    """True when a watched job state says the job is no longer the one worked on."""
    return value not in ACTIVE_JOB_STATES

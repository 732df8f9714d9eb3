"""The ground-truth ledger: what the simulated plant really did, as JSON Lines.

Tests compare the agent's KPIs with this file, so it records every event with the same
timestamp that was written to the server (the OPC UA SourceTimestamp, or the instant
a Modbus register moved). Two files, one per server (see ``Plant.ledger_paths``):
``opcua.jsonl`` for machines and ``modbus.jsonl`` for meters. Line kinds:

``init``
    First line per device: ``state``, ``parts_total``, ``parts_scrap``, ``program`` for a
    machine; ``register_kwh``, ``resolution_kwh``, ``modulus_kwh``, ``machine``,
    ``unit_id``, ``layout`` for a meter.
``state``
    ``{"kind":"state","device":"cnc-01","ts":"...Z","state":"producing"}``
``part``
    ``{"kind":"part","device":"cnc-01","ts":...,"good":true,"parts_total":N,
    "parts_scrap":M,"program":"O1001"}``; one line per part, counters as served after it.
``program``
    The active program changed (``program``).
``energy``
    ``{"kind":"energy","device":"meter-01","ts_start":...,"ts_end":...,"kwh":"0.02",
    "register_kwh":"1000.02"}``; the register moved by ``kwh`` at ``ts_end``; entries
    tile time without gaps; decimal strings are exact.
``counter_reset`` / ``rollover``
    ``signal`` (``parts_total``, ``parts_scrap`` or ``energy_kwh``), ``before``,
    ``after`` (decimal strings for energy).
``fault``
    An injected fault began or ended: ``fault`` names it (``opcua_stop``,
    ``opcua_start``, ``opcua_bad_status``, ``opcua_status_cleared``,
    ``opcua_node_missing``, ``opcua_node_restored`` (``node``: the variable path, null
    for the whole machine), ``modbus_exception`` (``code``), ``modbus_silent``,
    ``modbus_slow`` (``delay_s``), ``modbus_cleared``, ``clock_skew`` (``skew_s``)).

All timestamps are RFC 3339 UTC with milliseconds, in the simulator's clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from rules.types import ms_to_rfc3339, rfc3339_to_ms
from simulators.machine import CounterEvent, MachineEvent, PartDone, ProgramChange, StateChange
from simulators.meter import EnergyStep, MeterCounterEvent, MeterEvent

__all__ = ["Ledger", "energy_in", "event_to_entry", "max_power_kw", "parts_in", "read_ledger"]


def event_to_entry(event: MachineEvent | MeterEvent) -> dict[str, Any] | None:
    """The ledger line of a model event (``None`` for events the ledger does not keep)."""
    if isinstance(event, StateChange):
        return {"kind": "state", "device": event.device, "ts": ms_to_rfc3339(event.ts_ms),
                "state": event.state}
    if isinstance(event, PartDone):
        return {"kind": "part", "device": event.device, "ts": ms_to_rfc3339(event.ts_ms),
                "good": event.good, "parts_total": event.parts_total,
                "parts_scrap": event.parts_scrap, "program": event.program}
    if isinstance(event, ProgramChange):
        return {"kind": "program", "device": event.device, "ts": ms_to_rfc3339(event.ts_ms),
                "program": event.program}
    if isinstance(event, CounterEvent):
        return {"kind": event.kind, "device": event.device, "ts": ms_to_rfc3339(event.ts_ms),
                "signal": event.signal, "before": event.before, "after": event.after}
    if isinstance(event, EnergyStep):
        return {"kind": "energy", "device": event.device,
                "ts_start": ms_to_rfc3339(event.ts_start_ms),
                "ts_end": ms_to_rfc3339(event.ts_end_ms),
                "kwh": str(event.kwh), "register_kwh": str(event.register_kwh)}
    if isinstance(event, MeterCounterEvent):
        res = event.resolution_kwh
        return {"kind": event.kind, "device": event.device, "ts": ms_to_rfc3339(event.ts_ms),
                "signal": "energy_kwh", "before": str(event.before_counts * res),
                "after": str(event.after_counts * res)}
    return None


class Ledger:
    """An append-only JSON Lines file, flushed after every batch so tests can read it live.

    ``path`` None keeps nothing (a demo that needs no ground truth).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("w", encoding="utf-8")
        self.lines = 0

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (compact JSON, one line)."""
        self.lines += 1
        if self._fh is not None:
            self._fh.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Make everything written so far visible to readers."""
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """All entries of a ledger file (a torn last line from a live writer is skipped)."""
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            out.append(json.loads(line))
    return out


# Ground truth for a window [start_ms, end_ms), computed from the ledger alone, the way a
# test compares it with the agent's KPI records.

Entry = dict[str, Any]


def parts_in(entries: Iterable[Entry], machine: str, start_ms: int, end_ms: int
             ) -> tuple[int, int]:
    """Parts completed and parts scrapped by ``machine`` in the window."""
    parts = [e for e in entries if e["kind"] == "part" and e["device"] == machine
             and start_ms <= rfc3339_to_ms(e["ts"]) < end_ms]
    return len(parts), sum(1 for e in parts if not e["good"])


def energy_in(entries: Iterable[Entry], meter: str, start_ms: int, end_ms: int) -> Decimal:
    """The meter's energy in the window, each register step spread uniformly over the time
    it covers (the agent spreads readings the same way, docs/kpi.md "Energy")."""
    total = Decimal(0)
    for e in entries:
        if e["kind"] != "energy" or e["device"] != meter:
            continue
        a, b = rfc3339_to_ms(e["ts_start"]), rfc3339_to_ms(e["ts_end"])
        overlap = min(b, end_ms) - max(a, start_ms)
        if overlap > 0 and b > a:
            total += Decimal(e["kwh"]) * overlap / (b - a)
    return total


def max_power_kw(entries: Iterable[Entry], meter: str) -> Decimal:
    """The highest mean power of any one register step: bounds what one poll can miss."""
    best = Decimal(0)
    for e in entries:
        if e["kind"] == "energy" and e["device"] == meter:
            dt_ms = rfc3339_to_ms(e["ts_end"]) - rfc3339_to_ms(e["ts_start"])
            if dt_ms > 0:
                best = max(best, Decimal(e["kwh"]) * 3_600_000 / dt_ms)
    return best

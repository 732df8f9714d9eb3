"""Fifty machines through a whole simulated 8-hour shift, on a manual clock.

The plant is stepped from before the shift to after it; at several instants (before
the shift, in production, in both breaks, after the shift) a plain asyncua client and
a plain pymodbus client read every machine and every meter, and what they read must
equal the running totals in the ledger exactly: no drift between ledger and servers.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from rules.types import rfc3339_to_ms
from simulators.machine import STATE_CODES
from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant, SimClock
from simulators.registers import decode_u32_lo_hi
from simulators.scenario import Scenario, scenario_from_dict

pytestmark = pytest.mark.integration

MACHINES = 50
DAY = datetime(2024, 3, 4, tzinfo=UTC)
WRAPPING = "cnc-07"  # starts just below 2^32 and wraps during the shift
ROLLING = "meter-01"  # starts just below its modulus and rolls over during the shift


def _ms(hhmm: str) -> int:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return round(DAY.replace(hour=hour, minute=minute).timestamp() * 1000)


def _scenario() -> Scenario:
    machines: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    for i in range(MACHINES):
        mid = f"cnc-{i + 1:02d}"
        machines.append({
            "id": mid,
            "programs": [
                {"name": f"O{1000 + i}1", "batch_size": [20, 60],
                 "cycle_time_s": {"mean": 35.0 + i, "sd": 4.0, "min": 20.0, "max": 200.0}},
                {"name": f"O{1000 + i}2", "batch_size": [10, 40], "weight": 0.5,
                 "scrap_probability": 0.05,
                 "cycle_time_s": {"mean": 75.0, "sd": 6.0, "min": 40.0, "max": 200.0}},
            ],
            "setup_time_s": {"mean": 600.0, "sd": 120.0, "min": 180.0},
            "idle_time_s": {"mean": 120.0, "sd": 60.0, "min": 0.0},
            "mtbf_s": 7200.0,
            "mttr_s": {"mean": 900.0, "kind": "exponential", "min": 60.0, "max": 3600.0},
            "initial_parts_total": 2**32 - 30 if mid == WRAPPING else 1000 * i,
            "initial_parts_scrap": 10 * i,
        })
        sdm = i % 2 == 0
        meters.append({
            "id": f"meter-{i + 1:02d}",
            "machine": mid,
            "layout": "sdm630" if sdm else "scaled32",
            "update_interval_s": 30.0 if sdm else 20.0,
            "initial_kwh": "9990.00" if i == 0 else str(Decimal("500.00") + i),
        })
    return scenario_from_dict({
        "name": "shift-50",
        "seed": 42,
        "calendar": {"timezone": "UTC", "shifts": [{
            "name": "A", "start": "06:00", "end": "14:00",
            "breaks": [["09:00", "09:15"], ["11:30", "12:00"]],
        }]},
        "machines": machines,
        "meters": meters,
    })


class _Truth:
    """Running totals folded from the ledger files as they grow (read incrementally)."""

    def __init__(self, plant: Plant) -> None:
        paths = plant.ledger_paths()
        self._files = {name: paths[name].open(encoding="utf-8") for name in ("opcua", "modbus")}
        self.machines: dict[str, dict[str, Any]] = {}
        self.meters: dict[str, Decimal] = {}
        self._modulus: dict[str, Decimal] = {}
        self._last_end: dict[str, str] = {}
        self.entries: dict[str, list[dict[str, Any]]] = {"opcua": [], "modbus": []}

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()

    def update(self) -> None:
        for name, fh in self._files.items():
            for line in fh.readlines():
                assert line.endswith("\n")
                entry = json.loads(line)
                self.entries[name].append(entry)
                if name == "opcua":
                    self._machine(entry)
                else:
                    self._meter(entry)

    def _machine(self, e: dict[str, Any]) -> None:
        dev = e.get("device")
        if e["kind"] == "init":
            self.machines[dev] = {"total": e["parts_total"], "scrap": e["parts_scrap"],
                                  "parts": 0, "state": e["state"],
                                  "state_ts": rfc3339_to_ms(e["ts"])}
        elif e["kind"] == "part":
            row = self.machines[dev]
            row["total"] = (row["total"] + 1) % 2**32
            row["scrap"] = (row["scrap"] + (0 if e["good"] else 1)) % 2**32
            row["parts"] += 1
            assert row["total"] == e["parts_total"] and row["scrap"] == e["parts_scrap"]
        elif e["kind"] == "state":
            self.machines[dev]["state"] = e["state"]
            self.machines[dev]["state_ts"] = rfc3339_to_ms(e["ts"])

    def _meter(self, e: dict[str, Any]) -> None:
        dev = e["device"]
        if e["kind"] == "init":
            self.meters[dev] = Decimal(e["register_kwh"])
            self._modulus[dev] = Decimal(e["modulus_kwh"])
        elif e["kind"] == "energy":
            self.meters[dev] = (self.meters[dev] + Decimal(e["kwh"])) % self._modulus[dev]
            assert self.meters[dev] == Decimal(e["register_kwh"])
            if dev in self._last_end:  # steps tile time without gaps
                assert e["ts_start"] == self._last_end[dev]
            self._last_end[dev] = e["ts_end"]


async def _read_machines(client: Client, nodes: dict[str, list[Any]]) -> dict[str, Any]:
    flat = [n for ns in nodes.values() for n in ns]
    values = await client.read_attributes(flat, ua.AttributeIds.Value)
    out: dict[str, Any] = {}
    for n, machine in enumerate(nodes):
        dvs = values[3 * n:3 * n + 3]
        total, scrap, state = dvs
        assert all(dv.StatusCode.is_good() for dv in dvs)
        out[machine] = {
            "total": total.Value.Value,
            "scrap": scrap.Value.Value,
            "state": state.Value.Value,
            "state_ts": round(state.SourceTimestamp.replace(tzinfo=UTC).timestamp() * 1000),
        }
    return out


async def _read_meters(client: AsyncModbusTcpClient, plant: Plant) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    layouts = {m.id: m for m in plant.scenario.effective_meters}
    for meter, unit in plant.meters:
        spec = layouts[meter]
        if spec.layout == "sdm630":
            rr = await client.read_input_registers(0x0048, count=2, device_id=unit)
            assert not rr.isError(), rr
            value = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
            out[meter] = Decimal(round(float(value) / float(spec.resolution_kwh))) * \
                spec.resolution_kwh
        else:
            rr = await client.read_holding_registers(0x0000, count=2, device_id=unit)
            assert not rr.isError(), rr
            out[meter] = decode_u32_lo_hi(rr.registers) * spec.resolution_kwh
    return out


async def test_fifty_machines_through_a_shift_without_drift(tmp_path: Path) -> None:
    clock = SimClock(manual=True, start_ms=_ms("05:50"))
    checkpoints = [("05:55", "off"), ("07:40", None), ("09:07", "planned_down"),
                   ("10:45", None), ("11:45", "planned_down"), ("13:59", None),
                   ("14:10", "off")]
    seen_states: Counter[str] = Counter()
    async with Plant(_scenario(), ledger_dir=tmp_path, clock=clock) as plant:
        assert len(plant.machines) == MACHINES and len(plant.meters) == MACHINES
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=3,
                                      retries=1)
        await client.connect()
        ledger = _Truth(plant)
        try:
            async with Client(plant.opcua_endpoint, timeout=10) as ua_client:
                ns = await ua_client.get_namespace_index(NAMESPACE_URI)
                nodes: dict[str, list[Any]] = {}
                for machine in plant.machines:
                    base = [f"{ns}:Machines", f"{ns}:{machine}"]
                    nodes[machine] = [
                        await ua_client.nodes.objects.get_child(
                            [*base, *(f"{ns}:{p}" for p in path)])
                        for path in (("Production", "PartsProducedInLifetime"),
                                     ("Production", "PartsScrapInLifetime"),
                                     ("Monitoring", "MachineTool", "MachineState"))
                    ]
                for hhmm, everyone in checkpoints:
                    await plant.run_until(_ms(hhmm))
                    assert plant.model_time_ms == _ms(hhmm)
                    served = await _read_machines(ua_client, nodes)
                    energy = await _read_meters(client, plant)
                    ledger.update()
                    truth, meters_truth = ledger.machines, ledger.meters
                    for machine in plant.machines:
                        got, want = served[machine], truth[machine]
                        assert got["total"] == want["total"], (hhmm, machine)
                        assert got["scrap"] == want["scrap"], (hhmm, machine)
                        assert got["state"] == STATE_CODES[want["state"]], (hhmm, machine)
                        assert got["state_ts"] == want["state_ts"], (hhmm, machine)
                        if everyone is not None:
                            assert want["state"] == everyone, (hhmm, machine)
                        seen_states[want["state"]] += 1
                    assert energy == meters_truth, hhmm
                    for meter, _ in plant.meters:  # and the models agree as well
                        assert meters_truth[meter] == plant.meter_model(meter).image().energy_kwh
        finally:
            client.close()
            ledger.close()
    machines_ledger, meters_ledger = ledger.entries["opcua"], ledger.entries["modbus"]

    assert {"producing", "setup", "idle", "unplanned_down"} <= set(seen_states)
    assert all(row["parts"] > 100 for row in ledger.machines.values())
    assert any(e["kind"] == "rollover" and e["device"] == WRAPPING for e in machines_ledger)
    assert any(e["kind"] == "rollover" and e["device"] == ROLLING for e in meters_ledger)

    # State intervals tile the run; the calendar shows in them to the millisecond.
    end = _ms("14:10")
    for machine in [f"cnc-{i + 1:02d}" for i in range(MACHINES)]:
        mine = [e for e in machines_ledger if e.get("device") == machine
                and e["kind"] in ("init", "state")]
        spans: Counter[str] = Counter()
        for a, b in itertools.pairwise([*mine, {"ts": "", "state": ""}]):
            stop = end if not b["ts"] else rfc3339_to_ms(b["ts"])
            spans[a["state"]] += stop - rfc3339_to_ms(a["ts"])
        assert sum(spans.values()) == end - _ms("05:50")
        assert spans["off"] == 20 * 60_000, machine
        assert spans["planned_down"] == 45 * 60_000, machine

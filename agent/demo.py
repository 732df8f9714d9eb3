"""``edge-agent demo``: the whole chain on one machine with zero set-up.

Bundled simulators -> agent -> broker (Mosquitto if installed, else an embedded one) ->
ingest -> InfluxDB (when an ``influxd`` is available), with a live view of each machine's
KPIs as windows close. It says plainly what it found and what it used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import tomli_w

from agent.aio import run_until_signal
from agent.broker import EmbeddedBroker
from agent.config.model import AgentConfig
from agent.runtime import Agent
from agent.services import ManagedInfluxd, ManagedMosquitto, find_influxd, find_mosquitto
from rules.engine import EngineOutput
from rules.errors import ServiceError
from rules.report import Scope, summarize
from rules.types import KpiRecord, Sample
from simulators.plant import Plant
from simulators.scenario import default_scenario

log = logging.getLogger(__name__)

SIM_NAMESPACE = "urn:factory-edge:simulator:cnc"
STATE_CODES = {"0": "off", "1": "idle", "2": "producing", "3": "setup", "4": "unplanned_down",
               "5": "planned_down"}
DEMO_SITE = "demo-site"
DEMO_LINE = "line-a"


def _machine_path(machine: str, *parts: str) -> str:
    return "/".join(["Objects", "cnc:Machines", f"cnc:{machine}", *(f"cnc:{p}" for p in parts)])


def simulator_config(
    plant: Plant,
    *,
    mqtt_port: int,
    protocol: str = "5",
    window: str = "10s",
    state_dir: Path,
    lateness_s: float = 2.0,
    health_port: int | None = None,
) -> dict[str, Any]:
    """An agent config (as TOML data) pointing at a running simulated plant.

    It is the same shape as ``deploy/examples/simulators.toml``; only the ports differ.
    """
    machines = []
    for spec in plant.scenario.machines:
        m = spec.id
        machines.append({
            "id": m,
            "line": DEMO_LINE,
            # The fastest program's mean cycle stands in for the machine's ideal cycle.
            "ideal_cycle_time_s": min(p.cycle_time_s.mean for p in spec.programs),
            "signals": {
                "state": {"source": "cnc-opcua",
                          "browse_path": _machine_path(m, "Monitoring", "MachineTool",
                                                       "MachineState"),
                          "map": STATE_CODES},
                "parts_total": {"source": "cnc-opcua",
                                "browse_path": _machine_path(m, "Production",
                                                             "PartsProducedInLifetime")},
                "parts_bad": {"source": "cnc-opcua",
                              "browse_path": _machine_path(m, "Production",
                                                           "PartsScrapInLifetime")},
            },
        })
    meters = [
        {"id": meter, "machine": plant.machines[i], "source": "meters", "unit": unit,
         "preset": "sdm630", "resolution_kwh": 0.01}
        for i, (meter, unit) in enumerate(plant.meters)
    ]
    return {
        "agent": {"id": "demo-agent", "state_dir": str(state_dir)},
        "health": ({"enabled": False} if health_port is None
                   else {"host": "127.0.0.1", "port": health_port}),
        "site": {"id": DEMO_SITE, "timezone": "UTC", "grid_factor_kg_per_kwh": 0.5306},
        "kpi": {"windows": [window], "lateness_s": lateness_s},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "protocol": protocol,
                 "reconnect_min_s": 0.5, "reconnect_max_s": 5.0},
        "sources": [
            {"id": "cnc-opcua", "type": "opcua", "url": plant.opcua_endpoint,
             "namespaces": {"cnc": SIM_NAMESPACE}, "publishing_interval_ms": 200},
            {"id": "meters", "type": "modbus", "host": "127.0.0.1", "port": plant.modbus_port,
             "poll_interval_s": 1.0, "timeout_s": 0.3, "retries": 1},
        ],
        "lines": [{"id": DEMO_LINE, "output_machine": plant.machines[-1]}],
        "machines": machines,
        "meters": meters,
    }


def _fmt(value: float | int | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


@dataclass
class LiveView:
    """Prints each machine's latest KPIs as windows close, and the final summary."""

    out: TextIO = sys.stdout
    latest: dict[str, KpiRecord] = field(default_factory=dict)
    history: list[KpiRecord] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    records: int = 0

    def samples(self, batch: list[Sample]) -> None:
        """Called by the agent with every batch of samples: keeps each machine's state."""
        for s in batch:
            if s.signal == "state" and s.quality == "good" and isinstance(s.value, str):
                self.states[s.device] = s.value

    def update(self, output: EngineOutput) -> None:
        """Called by the agent with every engine output (records are in window order)."""
        for rec in output.records:
            self.records += 1
            key = rec.machine or (f"line {rec.line}" if rec.line else "site")
            self.latest[key] = rec
            self.history.append(rec)
        for alarm in output.alarms:
            print(f"  alarm {alarm.state}: {alarm.rule} on {alarm.machine}: {alarm.message}",
                  file=self.out)
        ends = {r.window_end_ms for r in output.records if r.machine}
        if ends:
            self.print_table()

    def print_table(self) -> None:
        """One row per machine (and line, and site) with the latest closed window."""
        rows = [("", "state now", "window end", "OEE", "avail", "perf", "quality", "defect%",
                 "cycle s", "kWh/good", "kgce/good", "kgCO2/good", "parts/scrap", "flags")]
        for key, r in self.latest.items():
            rows.append((
                key, self.states.get(key, "") if r.machine else "",
                time.strftime("%H:%M:%S", time.gmtime(r.window_end_ms / 1000)),
                _fmt(r.oee, ".3f"), _fmt(r.availability, ".3f"), _fmt(r.performance, ".3f"),
                _fmt(r.quality_ratio, ".3f"), _fmt(r.defect_rate, ".1f", 100),
                _fmt(r.cycle_time_mean_s, ".2f"), _fmt(r.energy_per_good_unit_kwh, ".4f"),
                _fmt(r.kgce_per_good_unit, ".5f"), _fmt(r.co2_per_good_unit_kg, ".4f"),
                f"{r.parts_produced}/{r.parts_scrap}", ",".join(r.flags),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print("", file=self.out)
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                  file=self.out)
        self.out.flush()


class BrokerCounter:
    """A plain MQTT subscriber that counts the KPI records that really reached the broker."""

    def __init__(self, host: str, port: int, protocol: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.count = 0
        self._lock = threading.Lock()
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto,
                                  client_id="edge-agent-demo-view")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe("factory/+/+/+/kpi", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.count += 1

    def close(self) -> None:
        """Stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def _optional_influxd() -> Iterator[ManagedInfluxd | None]:
    if find_influxd() is None:
        print("InfluxDB: no influxd found (scripts/provide-influxd builds one); "
              "KPI records go to the broker only")
        yield None
        return
    server = ManagedInfluxd()
    try:
        server.start()
    except ServiceError as err:
        print(f"InfluxDB: influxd did not start ({err}); KPI records go to the broker only")
        server.close()
        yield None
        return
    print(f"InfluxDB: influxd {server.binary} on {server.url}, database {server.database}")
    try:
        yield server
    finally:
        server.close()


async def _demo(stop: asyncio.Event, duration_s: float | None, machines: int, window: str,
                state_dir: Path, broker_choice: str) -> dict[str, Any]:
    mosquitto_bin = None if broker_choice == "embedded" else find_mosquitto()
    if broker_choice == "mosquitto" and mosquitto_bin is None:
        raise ServiceError("--broker mosquitto: mosquitto is not installed "
                           "(apt-get install mosquitto)")
    async with contextlib.AsyncExitStack() as stack:
        if mosquitto_bin is not None:
            broker = stack.enter_context(ManagedMosquitto())
            host, port, protocol = broker.host, broker.port, "5"
            print(f"Broker: Mosquitto ({mosquitto_bin}) on {host}:{port}, MQTT 5")
        else:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            host, port, protocol = embedded.host, embedded.port, "3.1.1"
            reason = "as asked" if broker_choice == "embedded" else "Mosquitto not found"
            print(f"Broker: {reason}; embedded broker on {host}:{port}, MQTT 3.1.1 "
                  "(install Mosquitto for MQTT 5: apt-get install mosquitto)")
        influx = stack.enter_context(_optional_influxd())
        plant = await stack.enter_async_context(
            Plant(default_scenario(machines=machines, fast=True), ledger_dir=state_dir / "ledger")
        )
        print(f"Simulators: OPC UA {plant.opcua_endpoint} ({len(plant.machines)} CNC machines), "
              f"Modbus TCP 127.0.0.1:{plant.modbus_port} ({len(plant.meters)} meters)")
        raw = simulator_config(plant, mqtt_port=port, protocol=protocol, window=window,
                               state_dir=state_dir / "agent")
        cfg = AgentConfig.model_validate(raw)
        (state_dir / "agent.toml").write_text(tomli_w.dumps(raw))
        print(f"Agent config: {state_dir / 'agent.toml'}; windows of {window}; Ctrl-C stops")
        view = LiveView()
        agent = Agent(cfg, on_output=view.update, on_samples=view.samples)
        counter = BrokerCounter(host, port, protocol)
        stack.callback(counter.close)
        async with asyncio.TaskGroup() as tg:
            agent_stop = asyncio.Event()
            agent_task = tg.create_task(agent.run(agent_stop), name="agent")
            ingest_task = None
            if influx is not None:
                ingest_task = tg.create_task(_run_ingest(influx, host, port, protocol,
                                                         state_dir), name="ingest")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):
                    await stop.wait()
            agent_stop.set()
            await agent_task
            stored = None
            if ingest_task is not None and influx is not None:
                # Let the ingest store what the agent published before stopping it.
                deadline = time.monotonic() + 15
                while True:
                    stored = _stored_records(influx)
                    if stored >= agent.records_out or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.3)
                ingest_task.cancel()
        return {"view": view, "broker": counter.count, "influx": stored,
                "produced": agent.records_out}


def _stored_records(influx: ManagedInfluxd) -> int:
    rows = influx.rows('SELECT count("parts_produced") FROM "kpi"')
    return int(rows[0]["count"]) if rows else 0  # type: ignore[call-overload]


async def _run_ingest(influx: ManagedInfluxd, host: str, port: int, protocol: str,
                      state_dir: Path) -> None:
    from agent.ingest.config import IngestConfig
    from agent.ingest.service import IngestService

    cfg = IngestConfig.model_validate({
        "mqtt": {"host": host, "port": port, "protocol": protocol},
        "influxdb": {"url": influx.url, "org": influx.org, "bucket": influx.bucket,
                     "token": influx.token},
        "ingest": {"shared_group": "",
                   "dead_letter_path": str(state_dir / "dead-letter.jsonl")},
    })
    await IngestService(cfg).run()


def run_demo(*, duration_s: float | None, machines: int, window: str,
             state_dir: Path | None, broker: str = "auto") -> int:
    """Run the demo until Ctrl-C (or ``duration_s``), then print the summary."""
    own_dir = state_dir is None
    base = state_dir or Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}

    async def main(stop: asyncio.Event) -> None:
        result.update(await _demo(stop, duration_s, machines, window, base, broker))

    try:
        asyncio.run(run_until_signal(main))
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    _summary(result)
    _write_report(result.get("view"), Path.cwd() if own_dir else base)
    return 0


REPORT_NAME = "demo-report.html"


def _write_report(view: LiveView | None, directory: Path) -> Path | None:
    """The run's own demonstration report (``edge-agent report --format html`` of the
    line): the first half of its windows as the baseline, the second half as the reported
    period. Written to the state directory when one was given, else (the temporary one is
    gone by now) to the current directory; where it went is printed."""
    from agent.report import Period, ReportRequest
    from agent.reporting import build_demonstration, write
    from agent.reporting.i18n import default_lang
    from rules.errors import EdgeAgentError
    from rules.targets import DEFAULT_TARGETS
    from rules.types import ms_to_rfc3339

    starts = sorted({r.window_start_ms for r in view.history}) if view else []
    if view is None or len(starts) < 2:
        print("Report: not written (it needs at least two closed windows)")
        return None
    end = max(r.window_end_ms for r in view.history)
    start, middle = starts[0], starts[len(starts) // 2]

    def period(a: int, b: int) -> Period:
        return Period(a, b, f"{ms_to_rfc3339(a)}/{ms_to_rfc3339(b)}")

    request = ReportRequest(window=view.history[0].window, current=period(middle, end),
                            baseline=period(start, middle), site=DEMO_SITE, line=DEMO_LINE)
    target = directory / REPORT_NAME
    try:
        report = build_demonstration(view.history, request, timezone="UTC",
                                     lang=default_lang("UTC"), targets=DEFAULT_TARGETS)
        write(report, "html", target)
    except (EdgeAgentError, OSError) as err:
        print(f"Report: not written ({err})")
        return None
    print(f"Report: {target.resolve()} (baseline: the run's first half; open it in a browser)")
    return target


def _summary(result: dict[str, Any]) -> None:
    """The whole run per machine, line and site: rates from the summed windows (as
    ``edge-agent report`` computes a period), not the last window alone."""
    view: LiveView | None = result.get("view")
    print("\nSummary")
    if view is None or not view.history:
        print("  no window closed yet (run longer than one window)")
    else:
        start = min(r.window_start_ms for r in view.history)
        end = max(r.window_end_ms for r in view.history)
        window = view.history[0].window
        for key, r in view.latest.items():
            totals = summarize(view.history, Scope.of(r), window, start, end).values
            print(f"  {key}: OEE {_fmt(totals['oee'], '.3f')}, defect rate "
                  f"{_fmt(totals['defect_rate'], '.2%')}, cycle time "
                  f"{_fmt(totals['cycle_time_mean_s'], '.2f')} s, energy/unit "
                  f"{_fmt(totals['energy_per_unit_kwh'], '.4f')} kWh, "
                  f"CO2 {_fmt(totals['co2_kg'], '.4f')} kg, "
                  f"parts {totals['parts_produced']} ({totals['parts_scrap']} scrap)")
        print(f"  (all {len({r.window_end_ms for r in view.history})} windows from "
              f"{time.strftime('%H:%M:%S', time.gmtime(start / 1000))} to "
              f"{time.strftime('%H:%M:%S', time.gmtime(end / 1000))} UTC)")
    print(f"  KPI records computed: {result.get('produced', 0)}")
    print(f"  KPI records that reached the broker: {result.get('broker', 0)}")
    stored = result.get("influx")
    print("  KPI records stored in InfluxDB: "
          + ("n/a (no influxd)" if stored is None else str(stored)))

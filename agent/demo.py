"""``edge-agent demo``: the whole chain on one machine with zero set-up.

Bundled simulators -> agent -> broker (Mosquitto if installed, else an embedded one) ->
ingest -> InfluxDB (when an ``influxd`` is available), with a live view of each machine's
KPIs as windows close. It says plainly what it found and what it used instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import tomli_w
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.aio import run_until_signal
from agent.broker import EmbeddedBroker
from agent.config.common import MqttSettings
from agent.config.model import AgentConfig
from agent.mqtt.client import new_client, start_client
from agent.mqtt.reconnect import ReconnectPacer
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
TERMINAL_WIDTH = 100
Say = Callable[[str], object]
"""Where the demo's own lines go: print, or the terminal console (which wraps them)."""
"""The terminal view fits this many columns (or the terminal, when narrower)."""


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


_HEADER = ("", "state now", "window end", "OEE", "avail", "perf", "quality", "defect%",
           "cycle s", "kWh/good", "kgce/good", "kgCO2/good", "parts/scrap", "flags")
_TERMINAL_COLUMNS: tuple[tuple[int, str], ...] = (
    (0, ""), (1, "state"), (3, "OEE"), (4, "avail"), (5, "perf"), (6, "qual"), (7, "def%"),
    (8, "cycle"), (9, "kWh/gd"), (11, "CO2/gd"), (12, "parts"), (13, "flags"))
"""The terminal view's columns (index into :meth:`LiveView.rows`, short header), so that
a row fits 100 columns: the window end goes to the title, kgce/good is left out (energy
times a constant) and the caption explains the short headers. The plain lines keep all."""
_TERMINAL_CAPTION = ("def% defect rate, cycle mean cycle time (s), kWh/gd and CO2/gd energy "
                     "and CO2 (kg) per good part, parts produced/scrap")


@dataclass
class LiveView:
    """Each machine's latest KPIs as windows close, and the final summary.

    Plain (``out`` is not a terminal): a block of lines per closed window, as a log
    reads. In a terminal :func:`terminal_view` shows :meth:`renderable` instead, one
    table refreshed in place with the latest log lines below it.
    """

    out: TextIO = sys.stdout
    latest: dict[str, KpiRecord] = field(default_factory=dict)
    history: list[KpiRecord] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    records: int = 0
    in_place: bool = False
    """Set by :func:`terminal_view`: rebuild the table, print nothing."""
    _table: Table | None = field(default=None, init=False, repr=False)

    def samples(self, batch: list[Sample]) -> None:
        """Called by the agent with every batch of samples: keeps each machine's state."""
        changed = False
        for s in batch:
            if s.signal == "state" and s.quality == "good" and isinstance(s.value, str):
                changed = changed or self.states.get(s.device) != s.value
                self.states[s.device] = s.value
        if changed and self.in_place:
            self._table = self._build_table()

    def update(self, output: EngineOutput) -> None:
        """Called by the agent with every engine output (records are in window order)."""
        for rec in output.records:
            self.records += 1
            key = rec.machine or (f"line {rec.line}" if rec.line else "site")
            self.latest[key] = rec
            self.history.append(rec)
        for alarm in output.alarms:
            text = f"alarm {alarm.state}: {alarm.rule} on {alarm.machine}: {alarm.message}"
            if self.in_place:
                log.warning("%s", text)
            else:
                print(f"  {text}", file=self.out)
        if any(r.machine for r in output.records):
            if self.in_place:
                self._table = self._build_table()
            else:
                self.print_table()

    def rows(self) -> list[tuple[str, ...]]:
        """One row per machine (and line, and site) with the latest closed window."""
        rows: list[tuple[str, ...]] = []
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
        return rows

    def print_table(self) -> None:
        """The latest windows as aligned plain lines."""
        rows = [_HEADER, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print("", file=self.out)
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                  file=self.out)
        self.out.flush()

    def renderable(self) -> RenderableType:
        """The table as it stands (built on the event loop, read by rich's refresh thread)."""
        table = self._table
        return table if table is not None else Text("waiting for the first window to close")

    def _build_table(self) -> Table:
        rows = self.rows()
        end = max((r.window_end_ms for r in self.latest.values()), default=0)
        table = Table(title=f"KPIs of the latest closed window, ending "
                            f"{time.strftime('%H:%M:%S', time.gmtime(end / 1000))} UTC "
                            f"({len(self.history)} records)",
                      caption=_TERMINAL_CAPTION, box=box.SIMPLE_HEAD, padding=0,
                      pad_edge=False)
        for i, header in _TERMINAL_COLUMNS:
            if header == "flags":  # the one column that may wrap: the others stay whole
                table.add_column(header, overflow="fold", min_width=len(header))
            else:
                width = max([len(header), *(len(row[i]) for row in rows)])
                table.add_column(header, no_wrap=True, min_width=width,
                                 justify="left" if i < 2 else "right")
        for row in rows:
            # Flags one per line when the column is narrow: spaces let rich wrap them.
            table.add_row(*(row[i].replace(",", " ") if i == 13 else row[i]
                            for i, _ in _TERMINAL_COLUMNS))
        return table


class LogTail(logging.Handler):
    """Keeps the last log lines for the terminal view, which shows them below the table
    instead of letting them scroll the table away."""

    def __init__(self, lines: int = 8) -> None:
        super().__init__()
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            datefmt="%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        """Format and keep one record (any thread: a deque append is atomic)."""
        try:
            self._lines.append(self.format(record).splitlines()[0])
        except Exception:
            self.handleError(record)

    def renderable(self) -> RenderableType:
        """The kept lines in a panel, each cut to one screen line."""
        text = Text("\n".join(list(self._lines)) or "(nothing logged yet)", no_wrap=True,
                    overflow="ellipsis")
        return Panel(text, title="log", title_align="left", box=box.SQUARE)


def terminal_width() -> int:
    """:data:`TERMINAL_WIDTH`, or the terminal's width when it is narrower."""
    return min(TERMINAL_WIDTH, shutil.get_terminal_size((TERMINAL_WIDTH, 24)).columns)


@contextlib.contextmanager
def terminal_view(view: LiveView, console: Console, lines: int = 8) -> Iterator[None]:
    """Show ``view`` refreshed in place, with the log below it, while the block runs.

    The root logger's handlers give way to a :class:`LogTail` (keeping their filters, so
    secrets stay masked) and come back afterwards; the last picture stays on screen.
    """
    tail = LogTail(lines)
    root = logging.getLogger()
    saved = root.handlers[:]
    for handler in saved:
        for f in handler.filters:
            tail.addFilter(f)
    view.in_place = True
    view._table = view._build_table() if view.latest else None
    root.handlers[:] = [tail]
    try:
        with Live(console=console, refresh_per_second=2,
                  get_renderable=lambda: Group(view.renderable(), tail.renderable())):
            yield
    finally:
        root.handlers[:] = saved
        view.in_place = False


class BrokerCounter:
    """A plain MQTT subscriber that counts the KPI records that really reached the broker.

    Built like every client of the project (:func:`agent.mqtt.client.new_client`), so it
    reconnects at our jittered delays. :meth:`subscribed` waits for the SUBACK: a record
    published before it would not be counted.
    """

    CLIENT_ID = "edge-agent-demo-view"

    def __init__(self, host: str, port: int, protocol: str) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        settings = MqttSettings.model_validate({
            "host": host, "port": port, "protocol": protocol,
            "reconnect_min_s": 0.5, "reconnect_max_s": 5.0})
        self._pacer = ReconnectPacer(settings, self.CLIENT_ID,
                                     advice="Stop the other demo using this broker.")
        self.client = new_client(settings, client_id=self.CLIENT_ID, pacer=self._pacer)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._stopping = False
        start_client(self.client, settings)

    def subscribed(self, timeout_s: float) -> bool:
        """Wait until the broker confirmed the subscription; False after ``timeout_s``."""
        return self._subscribed.wait(timeout_s)

    # paho callbacks (network thread): an exception escaping one would end reconnects.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        try:
            if not rc.is_failure:
                self._pacer.connected()
                client.subscribe("factory/+/+/+/kpi", qos=1)
        except Exception:
            log.exception("error in the demo's MQTT on_connect (contained)")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:
        try:
            if not self._stopping:
                self._pacer.lost(client, rc,
                                 from_broker=bool(flags.is_disconnect_packet_from_server))
        except Exception:
            log.exception("error in the demo's MQTT on_disconnect (contained)")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        try:
            self._pacer.failed(client)
        except Exception:
            log.exception("error in the demo's MQTT on_connect_fail (contained)")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any,
                      props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.count += 1

    def close(self) -> None:
        """Stop the network thread."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def _optional_influxd(say: Say) -> Iterator[ManagedInfluxd | None]:
    if find_influxd() is None:
        say("InfluxDB: no influxd found (scripts/provide-influxd builds one); "
              "KPI records go to the broker only")
        yield None
        return
    server = ManagedInfluxd()
    try:
        server.start()
    except ServiceError as err:
        say(f"InfluxDB: influxd did not start ({err}); KPI records go to the broker only")
        server.close()
        yield None
        return
    say(f"InfluxDB: influxd {server.binary} on {server.url}, database {server.database}")
    try:
        yield server
    finally:
        server.close()


async def _demo(stop: asyncio.Event, duration_s: float | None, machines: int, window: str,
                state_dir: Path, broker_choice: str, console: Console | None,
                say: Say) -> dict[str, Any]:
    mosquitto_bin = None if broker_choice == "embedded" else find_mosquitto()
    if broker_choice == "mosquitto" and mosquitto_bin is None:
        raise ServiceError("--broker mosquitto: mosquitto is not installed "
                           "(apt-get install mosquitto)")
    async with contextlib.AsyncExitStack() as stack:
        if mosquitto_bin is not None:
            broker = stack.enter_context(ManagedMosquitto())
            host, port, protocol = broker.host, broker.port, "5"
            say(f"Broker: Mosquitto ({mosquitto_bin}) on {host}:{port}, MQTT 5")
        else:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            host, port, protocol = embedded.host, embedded.port, "3.1.1"
            reason = "as asked" if broker_choice == "embedded" else "Mosquitto not found"
            say(f"Broker: {reason}; embedded broker on {host}:{port}, MQTT 3.1.1 "
                  "(install Mosquitto for MQTT 5: apt-get install mosquitto)")
        influx = stack.enter_context(_optional_influxd(say))
        plant = await stack.enter_async_context(
            Plant(default_scenario(machines=machines, fast=True), ledger_dir=state_dir / "ledger")
        )
        say(f"Simulators: OPC UA {plant.opcua_endpoint} ({len(plant.machines)} CNC machines), "
              f"Modbus TCP 127.0.0.1:{plant.modbus_port} ({len(plant.meters)} meters)")
        raw = simulator_config(plant, mqtt_port=port, protocol=protocol, window=window,
                               state_dir=state_dir / "agent")
        cfg = AgentConfig.model_validate(raw)
        (state_dir / "agent.toml").write_text(tomli_w.dumps(raw))
        say(f"Agent config: {state_dir / 'agent.toml'}; windows of {window}; Ctrl-C stops")
        view = LiveView()
        if console is not None:  # before the agent, which logs from its start
            stack.enter_context(terminal_view(view, console))
        agent = Agent(cfg, on_output=view.update, on_samples=view.samples)
        counter = BrokerCounter(host, port, protocol)
        stack.callback(counter.close)
        if not await asyncio.to_thread(counter.subscribed, 15.0):
            log.warning("the demo's own subscriber is not subscribed yet; the count of "
                        "records that reached the broker may fall short")
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
    """Run the demo until Ctrl-C (or ``duration_s``), then print the summary.

    In a terminal the KPIs show as one table refreshed in place (:func:`terminal_view`);
    piped or redirected, as plain lines per closed window.
    """
    console = Console(width=terminal_width()) if sys.stdout.isatty() else None
    say: Say = print if console is None else functools.partial(
        console.print, markup=False, highlight=False)
    own_dir = state_dir is None
    base = state_dir or Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}

    async def main(stop: asyncio.Event) -> None:
        result.update(await _demo(stop, duration_s, machines, window, base, broker,
                                  console, say))

    try:
        asyncio.run(run_until_signal(main))
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    _summary(result, say)
    _write_report(result.get("view"), Path.cwd() if own_dir else base, say)
    return 0


REPORT_NAME = "demo-report.html"


def _write_report(view: LiveView | None, directory: Path, say: Say) -> Path | None:
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
        say("Report: not written (it needs at least two closed windows)")
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
        say(f"Report: not written ({err})")
        return None
    say(f"Report: {target.resolve()} (baseline: the run's first half; open it in a browser)")
    return target


def _summary(result: dict[str, Any], say: Say) -> None:
    """The whole run per machine, line and site: rates from the summed windows (as
    ``edge-agent report`` computes a period), not the last window alone."""
    view: LiveView | None = result.get("view")
    say("\nSummary")
    if view is None or not view.history:
        say("  no window closed yet (run longer than one window)")
    else:
        start = min(r.window_start_ms for r in view.history)
        end = max(r.window_end_ms for r in view.history)
        window = view.history[0].window
        for key, r in view.latest.items():
            totals = summarize(view.history, Scope.of(r), window, start, end).values
            say(f"  {key}: OEE {_fmt(totals['oee'], '.3f')}, defect rate "
                  f"{_fmt(totals['defect_rate'], '.2%')}, cycle time "
                  f"{_fmt(totals['cycle_time_mean_s'], '.2f')} s, energy/unit "
                  f"{_fmt(totals['energy_per_unit_kwh'], '.4f')} kWh, "
                  f"CO2 {_fmt(totals['co2_kg'], '.4f')} kg, "
                  f"parts {totals['parts_produced']} ({totals['parts_scrap']} scrap)")
        say(f"  (all {len({r.window_end_ms for r in view.history})} windows from "
              f"{time.strftime('%H:%M:%S', time.gmtime(start / 1000))} to "
              f"{time.strftime('%H:%M:%S', time.gmtime(end / 1000))} UTC)")
    say(f"  KPI records computed: {result.get('produced', 0)}")
    say(f"  KPI records that reached the broker: {result.get('broker', 0)}")
    stored = result.get("influx")
    say("  KPI records stored in InfluxDB: "
          + ("n/a (no influxd)" if stored is None else str(stored)))

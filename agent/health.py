"""Health and metrics over HTTP on a local port: ``/healthz``, ``/readyz``, ``/metrics``.

* ``/healthz``: the process is up and its event loop answers (liveness).
* ``/readyz``: 200 when every readiness check passes, else 503 with a JSON body naming
  the failing checks (broker not connected, collectors not running, ...).
* ``/metrics``: Prometheus text exposition, built from the stats snapshots at each scrape.

The server is deliberately minimal HTTP/1.1 over ``asyncio.start_server``: one request per
connection (``Connection: close``), GET and HEAD only, bounded request size, and a
deadline on reading the request and on writing the answer, so a slow or stuck client
costs one connection slot for a few seconds and never blocks the agent. Loopback by
default: the endpoint has no authentication, so exposing it is a deliberate choice.

Who provides the numbers is a :class:`StatusProvider`; :class:`AgentStatus` and
:class:`IngestStatus` adapt the agent runtime and the ingest service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent import __version__
from agent.ingest.deadletter import REJECT_CODES
from agent.metrics import CONTENT_TYPE, Registry

__all__ = [
    "AgentStatus",
    "Check",
    "HealthServer",
    "HealthSettings",
    "HealthSnapshot",
    "IngestStatus",
    "StatusProvider",
    "serve_health",
]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
"""Deadline for a client to send its whole request head."""
WRITE_TIMEOUT_S = 5.0
"""Deadline for a client to take the whole answer."""
MAX_REQUEST_HEAD = 8192
"""Longest accepted request line plus headers; longer ones get 431."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at once instead of queueing."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HealthSettings(BaseModel):
    """``[health]`` of ``agent.toml`` and ``ingest.toml``: where the endpoint listens.

    Defined on plain pydantic (not ``agent.config``) so the config models can import it
    without an import cycle; it follows the same rules as every config model: unknown
    keys are errors and the value is immutable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True)
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=9464, ge=0, le=65535)
    """0 picks a free port (tests); 9464 is the port commonly used for OpenTelemetry/
    Prometheus exporters."""


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check: its name, whether it passes, and a human-readable detail."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """The readiness checks at one instant; ready when every check passes."""

    checks: tuple[Check, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when every check passes (no checks at all counts as ready)."""
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """Why it is not ready: ``name: detail`` of each failing check."""
        return [f"{c.name}: {c.detail}" if c.detail else c.name for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        """The ``/readyz`` body."""
        out: dict[str, Any] = {
            "status": "ready" if self.ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
        }
        if not self.ready:
            out["reasons"] = self.reasons
        if self.info:
            out["info"] = dict(self.info)
        return out


class StatusProvider(Protocol):
    """What the health server asks of the process it reports on.

    Both methods run on the event loop for every request, so they must be quick and
    must not block: read in-memory counters and snapshots only.
    """

    def health_snapshot(self) -> HealthSnapshot:
        """The readiness checks now."""
        ...

    def collect(self, registry: Registry) -> None:
        """Add this process's metrics to ``registry``."""
        ...


# ------------------------------------------------------------------------- providers


class _Observable(Protocol):
    """A collector that exposes its stats (both bundled collectors do)."""

    name: str

    @property
    def stats(self) -> Any: ...


def _age_s(now_s: float, ts_ms: int | None) -> float | None:
    return None if ts_ms is None else max(0.0, now_s - ts_ms / 1000.0)


class AgentStatus:
    """The edge agent's :class:`StatusProvider`, reading the runtime's parts.

    ``agent`` needs ``cfg``, ``collectors``, ``engine``, ``outbox`` and ``publisher``
    (the attributes of ``agent.runtime.Agent``). ``tasks`` maps collector names to their
    running tasks; the runtime keeps the same dict up to date (also across a reload), so
    a collector that died shows as not running. Without it, collectors count as running.
    """

    def __init__(
        self,
        agent: Any,
        *,
        tasks: Mapping[str, asyncio.Future[Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.tasks = tasks
        self.clock = clock

    def _collectors(self) -> list[_Observable]:
        return list(self.agent.collectors)

    def health_snapshot(self) -> HealthSnapshot:
        """Ready when the broker is connected, every collector task runs, and at least
        one source is connected (one failing device or source never makes it unready)."""
        publisher = self.agent.publisher
        checks = [Check("broker", bool(publisher.connected),
                        "connected" if publisher.connected else
                        f"not connected ({publisher.stats.last_error or 'no connection yet'})")]
        collectors = self._collectors()
        dead = []
        if self.tasks is not None:
            for c in collectors:
                task = self.tasks.get(c.name)
                if task is None or task.done():
                    dead.append(c.name)
        if dead:
            checks.append(Check("collectors", False, f"not running: {', '.join(sorted(dead))}"))
        else:
            checks.append(Check("collectors", True, f"{len(collectors)} running"))
        if collectors:
            up = [c.name for c in collectors if getattr(c.stats, "connected", False)]
            down = sorted(c.name for c in collectors if c.name not in up)
            detail = f"{len(up)}/{len(collectors)} connected"
            if down:
                detail += f"; down: {', '.join(down)}"
            checks.append(Check("sources", bool(up), detail))
        return HealthSnapshot(tuple(checks), {
            "site": self.agent.cfg.site.id,
            "agent": self.agent.cfg.agent.id,
            "outbox_depth": self.agent.outbox.depth(),
        })

    def collect(self, registry: Registry) -> None:
        """Per-device, engine, outbox and publisher metrics."""
        agent = self.agent
        registry.gauge("edge_agent_info", "Agent identity; the value is always 1.",
                       ("version", "site", "agent")).set(
            1, version=__version__, site=agent.cfg.site.id, agent=agent.cfg.agent.id)
        collector_metrics(registry, self._collectors(), self.clock())
        engine_metrics(registry, agent.engine.stats)
        outbox_metrics(registry, agent.outbox.stats)
        publisher_metrics(registry, agent.publisher.stats, bool(agent.publisher.connected))


class IngestStatus:
    """The platform ingest's :class:`StatusProvider`: ready while the broker is
    connected and InfluxDB accepts writes. ``service`` needs ``.stats`` (IngestStats)."""

    def __init__(self, service: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock

    def health_snapshot(self) -> HealthSnapshot:
        """Broker connected and InfluxDB not in an outage."""
        stats = self.service.stats
        down_since = getattr(stats, "influx_down_since", None)
        checks = (
            Check("broker", bool(stats.connected),
                  "connected" if stats.connected else "not connected"),
            Check("influxdb", down_since is None,
                  "writes accepted" if down_since is None else
                  f"writes failing for {max(0.0, self.clock() - down_since):.0f} s"
                  + (f" ({stats.last_error})" if stats.last_error else "")),
        )
        return HealthSnapshot(checks)

    def collect(self, registry: Registry) -> None:
        """Ingest throughput, errors and write latency."""
        ingest_metrics(registry, self.service.stats, self.clock())


# ---------------------------------------------------------- metrics from stats objects

_SRC_DEV = ("source", "device")


def collector_metrics(registry: Registry, collectors: Iterable[Any], now_s: float) -> None:
    """Per source and per device: connection, samples, errors, last sample age."""
    src_connected = registry.gauge("edge_agent_source_connected",
                                   "1 while the source (server, gateway, bus) is connected.",
                                   ("source",))
    src_reconnects = registry.counter("edge_agent_source_reconnects_total",
                                      "Successful connects after the first.", ("source",))
    src_overflows = registry.counter("edge_agent_source_overflows_total",
                                     "Notifications dropped because a bounded queue was full.",
                                     ("source",))
    connected = registry.gauge("edge_agent_device_connected",
                               "1 while the device answers, else 0.", _SRC_DEV)
    samples = registry.counter("edge_agent_device_samples_total",
                               "Samples read from the device.", _SRC_DEV)
    errors = registry.counter("edge_agent_device_errors_total",
                              "Failed reads of the device.", _SRC_DEV)
    age = registry.gauge("edge_agent_device_last_sample_age_seconds",
                         "Seconds since the device's latest sample (absent before the first).",
                         _SRC_DEV)
    skew = registry.counter("edge_agent_device_clock_skew_total",
                            "Samples whose source timestamp was off the receive time.",
                            _SRC_DEV)
    failing = registry.gauge("edge_agent_device_failing_seconds",
                             "Seconds the device has been failing; 0 while it works.",
                             _SRC_DEV)
    for collector in collectors:
        stats = getattr(collector, "stats", None)
        if stats is None:
            continue
        src = str(collector.name)
        src_connected.set(1 if stats.connected else 0, source=src)
        src_reconnects.set(stats.reconnects, source=src)
        src_overflows.set(stats.overflows, source=src)
        for dev, h in sorted(stats.devices.items()):
            connected.set(1 if h.connected else 0, source=src, device=dev)
            samples.set(h.samples, source=src, device=dev)
            errors.set(h.errors, source=src, device=dev)
            skew.set(getattr(h, "clock_skew", 0), source=src, device=dev)
            sample_age = _age_s(now_s, h.last_sample_ms)
            if sample_age is not None:
                age.set(sample_age, source=src, device=dev)
            down = _age_s(now_s, h.failing_since_ms)
            failing.set(down or 0.0, source=src, device=dev)


_ENGINE_COUNTERS = (
    ("samples", "edge_agent_engine_samples_total", "Samples given to the KPI engine."),
    ("late_dropped", "edge_agent_engine_late_dropped_total",
     "Samples dropped because they arrived after their slice was sealed."),
    ("windows_closed", "edge_agent_windows_closed_total", "KPI windows closed."),
    ("records", "edge_agent_kpi_records_total",
     "KPI records produced (and stored in the outbox for publishing)."),
    ("alarms", "edge_agent_alarm_events_total", "Alarm events produced."),
)


def engine_metrics(registry: Registry, stats: Mapping[str, int]) -> None:
    """The KPI engine's counters (``KpiEngine.stats``)."""
    for key, name, help_text in _ENGINE_COUNTERS:
        if key in stats:
            registry.counter(name, help_text).set(stats[key])
    ignored = registry.counter("edge_agent_engine_ignored_total",
                               "Samples that entered no KPI, by reason.", ("reason",))
    for key, value in sorted(stats.items()):
        if key.startswith("ignored_"):
            ignored.set(value, reason=key.removeprefix("ignored_"))


def outbox_metrics(registry: Registry, stats: Any) -> None:
    """Outbox depth, size and drops (``OutboxStats``)."""
    registry.gauge("edge_agent_outbox_depth", "Messages waiting for delivery.").set(stats.depth)
    registry.gauge("edge_agent_outbox_bytes", "Topic and payload bytes stored.").set(stats.bytes)
    registry.gauge("edge_agent_outbox_file_bytes",
                   "Disk space of the outbox file and its WAL.").set(stats.file_bytes)
    registry.counter("edge_agent_outbox_enqueued_total", "Messages stored.").set(stats.enqueued)
    dropped = registry.counter("edge_agent_outbox_dropped_total",
                               "Messages dropped undelivered by the outbox bounds, by bound.",
                               ("reason",))
    dropped.set(stats.dropped_full, reason="full")
    dropped.set(stats.dropped_age, reason="age")


def publisher_metrics(registry: Registry, stats: Any, connected: bool) -> None:
    """MQTT publisher counters and latency (``PublisherStats``)."""
    registry.gauge("edge_agent_mqtt_connected", "1 while the broker connection is up.").set(
        1 if connected else 0)
    registry.counter("edge_agent_mqtt_published_total",
                     "Publish calls, re-sends included.").set(stats.published)
    registry.counter("edge_agent_mqtt_acked_total",
                     "Messages acknowledged by the broker and removed from the outbox.").set(
        stats.acked)
    registry.counter("edge_agent_mqtt_refused_total",
                     "PUBACKs carrying a failure code.").set(getattr(stats, "refused", 0))
    registry.counter("edge_agent_mqtt_reconnects_total",
                     "Successful connects after the first.").set(stats.reconnects)
    registry.gauge("edge_agent_mqtt_inflight", "Messages awaiting their PUBACK.").set(
        stats.inflight)
    latency = stats.last_publish_latency_s
    if latency is not None and math.isfinite(latency):
        registry.gauge("edge_agent_mqtt_publish_latency_seconds",
                       "Publish-to-PUBACK time of the latest acknowledged message.").set(latency)


def ingest_metrics(registry: Registry, stats: Any, now_s: float) -> None:
    """Platform ingest counters (``IngestStats``)."""
    registry.gauge("edge_ingest_mqtt_connected", "1 while the broker connection is up.").set(
        1 if stats.connected else 0)
    for attr, name, help_text in (
        ("received", "edge_ingest_received_total",
         "Messages taken from the broker, redeliveries included."),
        ("written", "edge_ingest_points_written_total", "Points InfluxDB accepted."),
        ("dead_lettered", "edge_ingest_dead_lettered_total",
         "Messages written to the dead-letter file."),
        ("acked", "edge_ingest_acked_total", "Messages acknowledged to the broker."),
        ("retries", "edge_ingest_write_errors_total", "Failed write attempts (retried)."),
        ("batches", "edge_ingest_batches_total", "Batches written and acknowledged."),
        ("replaced", "edge_ingest_replaced_total",
         "Stored KPI points deleted so that a newer version replaces them whole."),
        ("ignored", "edge_ingest_ignored_total",
         "Messages with nothing to store (an empty retained status)."),
    ):
        value = getattr(stats, attr, None)
        if value is not None:
            registry.counter(name, help_text).set(value)
    rejected = getattr(stats, "rejected", None)
    if rejected is not None:
        by_reason = registry.counter(
            "edge_ingest_rejected_total",
            "Messages written to the dead-letter file, by reason (ids_differ_from_topic, "
            "less_complete_than_stored, invalid_payload, ...).", ("reason",))
        for code in sorted({*REJECT_CODES, *rejected}):
            by_reason.set(rejected.get(code, 0), reason=code)
    latency = getattr(stats, "last_write_latency_s", None)
    if latency is not None:
        registry.gauge("edge_ingest_write_latency_seconds",
                       "Duration of the latest batch write.").set(latency)
    max_latency = getattr(stats, "max_write_latency_s", None)
    if max_latency is not None:
        registry.gauge("edge_ingest_write_latency_max_seconds",
                       "Longest batch write since start.").set(max_latency)
    down_since = getattr(stats, "influx_down_since", None)
    registry.gauge("edge_ingest_influxdb_down_seconds",
                   "Seconds InfluxDB writes have been failing; 0 while they work.").set(
        0.0 if down_since is None else max(0.0, now_s - down_since))


# ----------------------------------------------------------------------- HTTP server


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: Mapping[str, Any]) -> _Response:
    return _Response(status, (json.dumps(payload, separators=(",", ":")) + "\n").encode())


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[str, str]:
    """Method and path of a request head; raises _BadRequest for anything malformed."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        if version.startswith("HTTP/"):
            raise _BadRequest(505, f"unsupported version {version}")
        raise _BadRequest(400, "malformed request line")
    if not method.isalpha() or not method.isupper():
        raise _BadRequest(400, "malformed method")
    for line in lines[1:]:
        if line and (":" not in line or line[0] in " \t"):
            raise _BadRequest(400, "malformed header line")
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise _BadRequest(400, "request target must be a path")
    return method, target.split("?", 1)[0].split("#", 1)[0]


class HealthServer:
    """The HTTP endpoint. :meth:`start` binds (port 0 picks a free one), :meth:`close`
    stops listening and ends the connections still open."""

    def __init__(
        self,
        provider: StatusProvider,
        ready_check: Callable[[], HealthSnapshot] | None = None,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.provider = provider
        self.ready_check = ready_check or provider.health_snapshot
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.requests = 0

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the health server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Bind and listen; raises OSError when the address is taken or not local."""
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=MAX_REQUEST_HEAD, reuse_address=True
        )

    async def close(self) -> None:
        """Stop listening, cancel open connections, wait for both."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    # -- routing -------------------------------------------------------------------

    def respond(self, method: str, path: str) -> _Response:
        """The answer to one request (public so it can be tested without sockets)."""
        if path not in ("/healthz", "/readyz", "/metrics"):
            return _json(404, {"error": f"no such path {path!r}",
                               "paths": ["/healthz", "/readyz", "/metrics"]})
        if method not in ("GET", "HEAD"):
            return _Response(405, b'{"error":"use GET"}\n', headers=(("Allow", "GET, HEAD"),))
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            snap = self.ready_check()
            return _json(200 if snap.ready else 503, snap.to_json())
        registry = Registry()
        self.provider.collect(registry)
        return _Response(200, registry.render().encode(), CONTENT_TYPE)

    # -- connections ---------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if len(self._handlers) > self.max_connections:
                return  # shed load: closing is cheaper than queueing behind slow clients
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            async with asyncio.timeout(self.read_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _parse_head(head[:-4])
            response = self._safe_respond(method, path)
        except TimeoutError:
            response = _json(408, {"error": "request not received in time"})
        except asyncio.LimitOverrunError:
            response = _json(431, {"error": "request head too large"})
        except asyncio.IncompleteReadError:
            return  # the client went away before finishing its request
        except _BadRequest as err:
            response = _json(err.status, {"error": str(err)})
        self.requests += 1
        await self._write(writer, response, head_only=method == "HEAD")

    def _safe_respond(self, method: str, path: str) -> _Response:
        try:
            return self.respond(method, path)
        except Exception as err:
            log.exception("health endpoint: %s %s failed", method, path)
            return _json(500, {"error": f"{type(err).__name__}"})

    async def _write(self, writer: asyncio.StreamWriter, response: _Response, *,
                     head_only: bool) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in response.headers),
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        writer.write(data if head_only else data + response.body)
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # a reader that never reads must not pin the buffer


async def serve_health(
    host: str,
    port: int,
    provider: StatusProvider,
    ready_check: Callable[[], HealthSnapshot] | None = None,
    *,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve the health endpoint until cancelled (a task in the runtime's TaskGroup).

    If the address cannot be bound (port taken, host not local) the error is logged and
    this returns: metrics are one path that may fail without taking the agent down.
    ``on_bound`` receives the bound port (useful with port 0).
    """
    server = HealthServer(provider, ready_check)
    try:
        await server.start(host, port)
    except OSError as err:
        log.error("health endpoint: cannot listen on %s:%d: %s; continuing without it",
                  host, port, err.strerror or err)
        return
    try:
        log.info("health endpoint on http://%s:%d (/healthz, /readyz, /metrics)",
                 host, server.port)
        if on_bound is not None:
            on_bound(server.port)
        await asyncio.Event().wait()
    finally:
        await server.close()

"""What the endpoint reports: readiness checks and metrics, read from typed seams.

A :class:`StatusProvider` answers ``/readyz`` and ``/metrics``. :class:`AgentStatus` and
:class:`IngestStatus` are the two providers; each reads only what a small Protocol here
declares of the runtime (:class:`AgentView`) or the ingest service (:class:`IngestView`),
so either can be given a fake in a test and a missing counter is a type error, not a
silently absent metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent import __version__
from agent.ingest.deadletter import REJECT_CODES
from agent.metrics import Registry

if TYPE_CHECKING:
    from agent.config.model import AgentConfig
    from agent.ingest.service import IngestStats
    from agent.mqtt.publisher import PublisherStats
    from agent.outbox import OutboxStats
    from collectors.base import CollectorStats

__all__ = [
    "AgentStatus",
    "AgentView",
    "Check",
    "EngineView",
    "HealthSnapshot",
    "InfoValue",
    "IngestStatus",
    "IngestView",
    "OutboxView",
    "PublisherView",
    "SourceView",
    "StatusProvider",
    "TaskView",
    "collector_metrics",
    "engine_metrics",
    "ingest_metrics",
    "outbox_metrics",
    "publisher_metrics",
    "signal_place",
    "unresolved_signals",
]

InfoValue = str | int | float | bool | None
"""A value of the ``info`` object of ``/readyz`` (plain JSON scalars)."""


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
    info: Mapping[str, InfoValue] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when every check passes (no checks at all counts as ready)."""
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """Why it is not ready: ``name: detail`` of each failing check."""
        return [f"{c.name}: {c.detail}" if c.detail else c.name for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, object]:
        """The ``/readyz`` body."""
        out: dict[str, object] = {
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


# ------------------------------------------------------------------- the seams read


class SourceView(Protocol):
    """A collector (one source) as health sees it: its name and a counters snapshot."""

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> CollectorStats: ...


class EngineView(Protocol):
    """The KPI engine's counters (``KpiEngine.stats``)."""

    @property
    def stats(self) -> Mapping[str, int]: ...


class OutboxView(Protocol):
    """The outbox's size and counters (a part of ``agent.outbox.Outbox``)."""

    def depth(self) -> int: ...

    @property
    def stats(self) -> OutboxStats: ...


class PublisherView(Protocol):
    """The MQTT publisher's connection state and counters."""

    @property
    def connected(self) -> bool: ...

    @property
    def stats(self) -> PublisherStats: ...


class TaskView(Protocol):
    """A collector's running task: only whether it has ended."""

    def done(self) -> bool: ...


class AgentView(Protocol):
    """What :class:`AgentStatus` reads of the runtime (``agent.runtime.Agent``)."""

    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def collectors(self) -> Sequence[SourceView]: ...

    @property
    def engine(self) -> EngineView: ...

    @property
    def outbox(self) -> OutboxView: ...

    @property
    def publisher(self) -> PublisherView: ...


class IngestView(Protocol):
    """What :class:`IngestStatus` reads of the ingest service: a counters snapshot."""

    @property
    def stats(self) -> IngestStats: ...


# ------------------------------------------------------------------------- providers


def _age_s(now_s: float, ts_ms: int | None) -> float | None:
    return None if ts_ms is None else max(0.0, now_s - ts_ms / 1000.0)


class AgentStatus:
    """The edge agent's :class:`StatusProvider`, reading the runtime's parts.

    ``tasks`` maps collector names to their running tasks; the runtime keeps the same
    dict up to date (also across a reload), so a collector that died shows as not
    running. Without it, collectors count as running.
    """

    def __init__(
        self,
        agent: AgentView,
        *,
        tasks: Mapping[str, TaskView] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.tasks = tasks
        self.clock = clock

    def health_snapshot(self) -> HealthSnapshot:
        """Ready when the broker is connected, every collector task runs, at least one
        source is connected (one failing device or source never makes it unready) and
        every configured signal resolves on its device (one that does not is a config
        mistake that no waiting mends)."""
        agent = self.agent
        publisher = agent.publisher
        checks = [Check("broker", publisher.connected,
                        "connected" if publisher.connected else
                        f"not connected ({publisher.stats.last_error or 'no connection yet'})")]
        collectors = list(agent.collectors)
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
            stats = [(c.name, c.stats) for c in collectors]
            up = [name for name, st in stats if st.connected]
            down = sorted(name for name, _ in stats if name not in up)
            detail = f"{len(up)}/{len(collectors)} connected"
            if down:
                detail += f"; down: {', '.join(down)}"
            checks.append(Check("sources", bool(up), detail))
            checks.append(_signals_check(agent.cfg, [st for _, st in stats]))
        return HealthSnapshot(tuple(checks), {
            "site": agent.cfg.site.id,
            "agent": agent.cfg.agent.id,
            "outbox_depth": agent.outbox.depth(),
        })

    def collect(self, registry: Registry) -> None:
        """Per-device, engine, outbox and publisher metrics."""
        agent = self.agent
        registry.gauge("edge_agent_info", "Agent identity; the value is always 1.",
                       ("version", "site", "agent")).set(
            1, version=__version__, site=agent.cfg.site.id, agent=agent.cfg.agent.id)
        collector_metrics(registry, agent.collectors, self.clock())
        engine_metrics(registry, agent.engine.stats)
        outbox_metrics(registry, agent.outbox.stats)
        publisher_metrics(registry, agent.publisher.stats, agent.publisher.connected)


READY_NAMES_MAX = 20
"""Unresolved signals named in the ``signals`` check's detail; more are counted."""


def signal_place(cfg: AgentConfig, device: str, signal: str) -> str:
    """How the config file names the signal ``signal`` of ``device``: its
    ``signals.<role>`` or ``inputs.<name>`` table, or the ``preset`` or ``profile`` that
    defines it, else ``device.signal``."""
    from agent.config.load import label

    items: list[tuple[str, list[Any]]] = [("machines", list(cfg.machines)),
                                          ("meters", list(cfg.meters))]
    for kind, entries in items:
        for i, item in enumerate(entries):
            if item.id != device:
                continue
            where = label(kind, i, item.id)
            if getattr(item.signals, signal, None) is not None:
                return f"{where}: signals.{signal}"
            if signal in getattr(item, "inputs", {}):
                return f"{where}: inputs.{signal}"
            for table in ("preset", "profile"):
                if getattr(item, table, None) is not None:
                    return f"{where}: {table} ({signal})"
            return f"{where}: {signal}"
    return f"{device}.{signal}"


def unresolved_signals(cfg: AgentConfig, stats: Iterable[CollectorStats]
                       ) -> list[tuple[str, str]]:
    """``(config place, why)`` of every signal whose address does not resolve."""
    out = [(signal_place(cfg, device, signal), status.detail or "")
           for st in stats for (device, signal), status in st.signals.items()
           if status.state == "unresolved"]
    return sorted(out)


def _signals_check(cfg: AgentConfig, stats: Sequence[CollectorStats]) -> Check:
    counts = {"ok": 0, "pending": 0, "failing": 0, "unresolved": 0}
    for st in stats:
        for state, n in st.signal_counts().items():
            counts[state] += n
    if not counts["unresolved"]:
        return Check("signals", True, ", ".join(f"{n} {state}" for state, n in counts.items()
                                                if n or state == "ok"))
    bad = unresolved_signals(cfg, stats)
    named = "; ".join(f"{where} ({why})" if why else where
                      for where, why in bad[:READY_NAMES_MAX])
    more = f"; and {len(bad) - READY_NAMES_MAX} more" if len(bad) > READY_NAMES_MAX else ""
    return Check("signals", False, f"{len(bad)} unresolved: {named}{more}")


class IngestStatus:
    """The platform ingest's :class:`StatusProvider`: ready while the broker is
    connected and InfluxDB accepts writes."""

    def __init__(self, service: IngestView, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock

    def health_snapshot(self) -> HealthSnapshot:
        """Broker connected and InfluxDB not in an outage."""
        stats = self.service.stats
        down_since = stats.influx_down_since
        checks = (
            Check("broker", stats.connected,
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


def collector_metrics(registry: Registry, collectors: Iterable[SourceView],
                      now_s: float) -> None:
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
    signals = registry.gauge("edge_agent_source_signals",
                             "Configured signals of the source by status: ok, pending (not "
                             "read yet), failing (no answer or bad values), unresolved (the "
                             "address does not exist on the device).", ("source", "status"))
    for collector in collectors:
        stats = collector.stats
        src = collector.name
        src_connected.set(1 if stats.connected else 0, source=src)
        src_reconnects.set(stats.reconnects, source=src)
        src_overflows.set(stats.overflows, source=src)
        for state, n in stats.signal_counts().items():
            signals.set(n, source=src, status=state)
        for dev, h in sorted(stats.devices.items()):
            connected.set(1 if h.connected else 0, source=src, device=dev)
            samples.set(h.samples, source=src, device=dev)
            errors.set(h.errors, source=src, device=dev)
            skew.set(h.clock_skew, source=src, device=dev)
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


def outbox_metrics(registry: Registry, stats: OutboxStats) -> None:
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


def publisher_metrics(registry: Registry, stats: PublisherStats, connected: bool) -> None:
    """MQTT publisher counters and latency (``PublisherStats``)."""
    registry.gauge("edge_agent_mqtt_connected", "1 while the broker connection is up.").set(
        1 if connected else 0)
    registry.counter("edge_agent_mqtt_published_total",
                     "Publish calls, re-sends included.").set(stats.published)
    registry.counter("edge_agent_mqtt_acked_total",
                     "Messages acknowledged by the broker and removed from the outbox.").set(
        stats.acked)
    registry.counter("edge_agent_mqtt_refused_total",
                     "PUBACKs carrying a failure code.").set(stats.refused)
    registry.counter("edge_agent_mqtt_reconnects_total",
                     "Successful connects after the first.").set(stats.reconnects)
    registry.gauge("edge_agent_mqtt_inflight", "Messages awaiting their PUBACK.").set(
        stats.inflight)
    latency = stats.last_publish_latency_s
    if latency is not None and math.isfinite(latency):
        registry.gauge("edge_agent_mqtt_publish_latency_seconds",
                       "Publish-to-PUBACK time of the latest acknowledged message.").set(latency)


_INGEST_COUNTERS: tuple[tuple[Callable[[IngestStats], int], str, str], ...] = (
    (lambda s: s.received, "edge_ingest_received_total",
     "Messages taken from the broker, redeliveries included."),
    (lambda s: s.written, "edge_ingest_points_written_total", "Points InfluxDB accepted."),
    (lambda s: s.dead_lettered, "edge_ingest_dead_lettered_total",
     "Messages written to the dead-letter file."),
    (lambda s: s.acked, "edge_ingest_acked_total", "Messages acknowledged to the broker."),
    (lambda s: s.retries, "edge_ingest_write_errors_total", "Failed write attempts (retried)."),
    (lambda s: s.batches, "edge_ingest_batches_total", "Batches written and acknowledged."),
    (lambda s: s.replaced, "edge_ingest_replaced_total",
     "Stored KPI points deleted so that a newer version replaces them whole."),
    (lambda s: s.ignored, "edge_ingest_ignored_total",
     "Messages with nothing to store (an empty retained status)."),
)


def ingest_metrics(registry: Registry, stats: IngestStats, now_s: float) -> None:
    """Platform ingest counters (``IngestStats``)."""
    registry.gauge("edge_ingest_mqtt_connected", "1 while the broker connection is up.").set(
        1 if stats.connected else 0)
    for value_of, name, help_text in _INGEST_COUNTERS:
        registry.counter(name, help_text).set(value_of(stats))
    by_reason = registry.counter(
        "edge_ingest_rejected_total",
        "Messages written to the dead-letter file, by reason (ids_differ_from_topic, "
        "less_complete_than_stored, invalid_payload, ...).", ("reason",))
    for code in sorted({*REJECT_CODES, *stats.rejected}):
        by_reason.set(stats.rejected.get(code, 0), reason=code)
    if stats.last_write_latency_s is not None:
        registry.gauge("edge_ingest_write_latency_seconds",
                       "Duration of the latest batch write.").set(stats.last_write_latency_s)
    registry.gauge("edge_ingest_write_latency_max_seconds",
                   "Longest batch write since start.").set(stats.max_write_latency_s)
    down_since = stats.influx_down_since
    registry.gauge("edge_ingest_influxdb_down_seconds",
                   "Seconds InfluxDB writes have been failing; 0 while they work.").set(
        0.0 if down_since is None else max(0.0, now_s - down_since))

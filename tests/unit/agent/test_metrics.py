"""The metrics registry and the providers' metrics, checked with Prometheus' own parser."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.health import AgentStatus, IngestStatus
from agent.ingest.service import IngestStats
from agent.metrics import Registry, format_value
from collectors.base import CollectorStats, DeviceHealth


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_counter_gauge_render_with_help_type_and_labels() -> None:
    reg = Registry()
    c = reg.counter("jobs_total", "Jobs done.", ("kind",))
    c.inc(kind="a")
    c.inc(2, kind="a")
    c.set(7, kind="b")
    reg.gauge("depth", "Queue depth.").set(3.5)
    text = reg.render()
    assert text.endswith("\n")
    assert "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\n" in text
    fams = parse(text)
    # the parser strips _total from a counter family's name
    assert fams["jobs"].type == "counter"
    assert values(fams["jobs"]) == {
        ("jobs_total", (("kind", "a"),)): 3.0,
        ("jobs_total", (("kind", "b"),)): 7.0,
    }
    assert fams["depth"].type == "gauge"
    assert fams["depth"].samples[0].value == 3.5


@pytest.mark.parametrize("raw", [
    'back\\slash', 'quote"d', "new\nline", "all \\ \" \n three", "ünïcødé 中文", "",
])
def test_label_values_round_trip_through_the_parser(raw: str) -> None:
    reg = Registry()
    reg.gauge("g", "help", ("v",)).set(1, v=raw)
    family = parse(reg.render())["g"]
    assert family.samples[0].labels == {"v": raw}


def test_help_text_is_escaped() -> None:
    reg = Registry()
    reg.gauge("g", 'line one\nline "two" \\ end').set(1)
    text = reg.render()
    assert '# HELP g line one\\nline "two" \\\\ end\n' in text
    assert parse(text)["g"].documentation == 'line one\nline "two" \\ end'


def test_histogram_buckets_sum_and_count() -> None:
    reg = Registry()
    h = reg.histogram("latency_seconds", "Latency.", ("op",), buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 3.0):
        h.observe(v, op="w")
    fam = parse(reg.render())["latency_seconds"]
    assert fam.type == "histogram"
    got = values(fam)
    assert got[("latency_seconds_bucket", (("le", "0.1"), ("op", "w")))] == 1
    assert got[("latency_seconds_bucket", (("le", "1"), ("op", "w")))] == 3
    assert got[("latency_seconds_bucket", (("le", "+Inf"), ("op", "w")))] == 4
    assert got[("latency_seconds_count", (("op", "w"),))] == 4
    assert got[("latency_seconds_sum", (("op", "w"),))] == pytest.approx(4.05)


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
    (12345678901, "12345678901"), (1e-7, "1e-07"),
])
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_special_values_parse() -> None:
    reg = Registry()
    g = reg.gauge("g", "h", ("k",))
    g.set(math.inf, k="a")
    g.set(math.nan, k="b")
    got = {s.labels["k"]: s.value for s in parse(reg.render())["g"].samples}
    assert got["a"] == math.inf
    assert math.isnan(got["b"])


@pytest.mark.parametrize(("make", "error"), [
    (lambda r: r.counter("jobs", "no _total suffix"), "_total"),
    (lambda r: r.gauge("bad-name", "h"), "invalid metric name"),
    (lambda r: r.gauge("g", "h", ("__reserved",)), "invalid label name"),
    (lambda r: r.gauge("g", "h", ("a", "a")), "twice"),
    (lambda r: r.histogram("h", "h", ("le",)), "reserved"),
    (lambda r: r.gauge("g", "h", ("a",)).set(1), "takes labels"),
    (lambda r: r.gauge("g", "h", ("a",)).set(1, a="x", b="y"), "takes labels"),
    (lambda r: r.counter("c_total", "h").inc(-1), "cannot decrease"),
])
def test_misuse_is_an_error(make: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make(Registry())


def test_same_family_twice_is_shared_but_a_type_clash_is_refused() -> None:
    reg = Registry()
    a = reg.gauge("g", "h", ("x",))
    assert reg.gauge("g", "h", ("x",)) is a
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("g", "h", ("y",))
    with pytest.raises(ValueError, match="already registered"):
        reg.histogram("g", "h", ("x",))


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""


# ------------------------------------------------------------------ provider metrics


@dataclass
class FakeCollector:
    name: str
    stats: CollectorStats


@dataclass
class FakePublisher:
    connected: bool = True
    stats: Any = field(default_factory=lambda: SimpleNamespace(
        published=12, acked=10, inflight=2, reconnects=1, last_error=None,
        last_publish_latency_s=0.042, refused=0))


def fake_agent(now_s: float) -> Any:
    plc = CollectorStats(name="plc", connected=True, reconnects=2, overflows=1)
    plc.devices["cnc-01"] = DeviceHealth("cnc-01", connected=True, samples=100,
                                         last_sample_ms=int((now_s - 1.5) * 1000))
    plc.devices['odd "id"\\x'] = DeviceHealth('odd "id"\\x', connected=False, errors=3,
                                             failing_since_ms=int((now_s - 30) * 1000),
                                             last_error="timeout")
    gw = CollectorStats(name="gw", connected=False)
    return SimpleNamespace(
        cfg=SimpleNamespace(site=SimpleNamespace(id="s1"), agent=SimpleNamespace(id="a1")),
        collectors=[FakeCollector("plc", plc), FakeCollector("gw", gw)],
        engine=SimpleNamespace(stats={
            "samples": 500, "windows_closed": 4, "records": 9, "alarms": 1, "late_dropped": 2,
            "ignored_unknown": 3, "ignored_bad_quality": 0, "ignored_invalid": 0,
            "ignored_after_end": 0,
        }),
        outbox=SimpleNamespace(
            stats=SimpleNamespace(enqueued=20, acked=10, dropped_full=5, dropped_age=1,
                                  depth=4, bytes=2048, file_bytes=90112),
            depth=lambda: 4,
        ),
        publisher=FakePublisher(),
    )


def test_agent_metrics_cover_the_issue_list_and_parse() -> None:
    now = 1_800_000_000.0
    reg = Registry()
    AgentStatus(fake_agent(now), clock=lambda: now).collect(reg)
    fams = parse(reg.render())
    dev = (("device", "cnc-01"), ("source", "plc"))
    odd = (("device", 'odd "id"\\x'), ("source", "plc"))
    assert values(fams["edge_agent_device_connected"])[
        ("edge_agent_device_connected", dev)] == 1
    assert values(fams["edge_agent_device_connected"])[
        ("edge_agent_device_connected", odd)] == 0
    assert values(fams["edge_agent_device_samples"])[
        ("edge_agent_device_samples_total", dev)] == 100
    assert values(fams["edge_agent_device_last_sample_age_seconds"])[
        ("edge_agent_device_last_sample_age_seconds", dev)] == pytest.approx(1.5)
    # a device that never delivered has no age sample (not a fake 0)
    assert ("edge_agent_device_last_sample_age_seconds", odd) not in values(
        fams["edge_agent_device_last_sample_age_seconds"])
    assert values(fams["edge_agent_device_failing_seconds"])[
        ("edge_agent_device_failing_seconds", odd)] == pytest.approx(30)
    assert values(fams["edge_agent_source_connected"]) == {
        ("edge_agent_source_connected", (("source", "plc"),)): 1,
        ("edge_agent_source_connected", (("source", "gw"),)): 0,
    }
    assert fams["edge_agent_windows_closed"].samples[0].value == 4
    assert fams["edge_agent_kpi_records"].samples[0].value == 9
    assert fams["edge_agent_outbox_depth"].samples[0].value == 4
    assert fams["edge_agent_outbox_file_bytes"].samples[0].value == 90112
    assert values(fams["edge_agent_outbox_dropped"]) == {
        ("edge_agent_outbox_dropped_total", (("reason", "full"),)): 5,
        ("edge_agent_outbox_dropped_total", (("reason", "age"),)): 1,
    }
    assert fams["edge_agent_mqtt_publish_latency_seconds"].samples[0].value == 0.042
    assert fams["edge_agent_mqtt_connected"].samples[0].value == 1
    assert fams["edge_agent_mqtt_acked"].samples[0].value == 10
    ignored = {s.labels["reason"]: s.value for s in fams["edge_agent_engine_ignored"].samples}
    assert ignored["unknown"] == 3
    assert fams["edge_agent_info"].samples[0].labels["site"] == "s1"


def test_agent_readiness() -> None:
    agent = fake_agent(0.0)
    ready = AgentStatus(agent).health_snapshot()
    assert ready.ready, ready.reasons
    agent.publisher.connected = False
    agent.publisher.stats.last_error = "connection refused"
    snap = AgentStatus(agent).health_snapshot()
    assert not snap.ready
    assert snap.reasons == ["broker: not connected (connection refused)"]
    assert snap.to_json()["status"] == "not ready"


def test_agent_readiness_needs_running_collectors_and_one_connected_source() -> None:
    agent = fake_agent(0.0)
    done = SimpleNamespace(done=lambda: True)
    running = SimpleNamespace(done=lambda: False)
    snap = AgentStatus(agent, tasks={"plc": running, "gw": done}).health_snapshot()  # type: ignore[dict-item]
    assert snap.reasons == ["collectors: not running: gw"]
    for c in agent.collectors:
        c.stats.connected = False
    snap = AgentStatus(agent).health_snapshot()
    assert snap.reasons == ["sources: 0/2 connected; down: gw, plc"]


def test_ingest_metrics_and_readiness() -> None:
    stats = IngestStats(received=10, written=9, dead_lettered=1, acked=10, retries=2,
                        batches=3, last_error="HTTP 503", last_write_latency_s=0.2,
                        max_write_latency_s=1.5, influx_down_since=None, connected=True)
    status = IngestStatus(SimpleNamespace(stats=stats), clock=lambda: 100.0)
    reg = Registry()
    status.collect(reg)
    fams = parse(reg.render())
    assert fams["edge_ingest_points_written"].samples[0].value == 9
    assert fams["edge_ingest_write_errors"].samples[0].value == 2
    assert fams["edge_ingest_influxdb_down_seconds"].samples[0].value == 0
    assert status.health_snapshot().ready
    stats.influx_down_since = 40.0
    snap = status.health_snapshot()
    assert snap.reasons == ["influxdb: writes failing for 60 s (HTTP 503)"]

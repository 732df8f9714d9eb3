"""/metrics without sockets: content negotiation, process metrics, no global state."""

from __future__ import annotations

import os
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent.health import Check, HealthServer, HealthSnapshot
from agent.metrics import Registry

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The Accept header Prometheus 2.x sends when it scrapes."""


class Provider:
    def health_snapshot(self) -> HealthSnapshot:
        return HealthSnapshot((Check("broker", True),))

    def collect(self, registry: Registry) -> None:
        registry.gauge("edge_agent_outbox_depth", "Messages waiting for delivery.").set(3)
        registry.counter("edge_agent_device_samples_total", "Samples read from the device.",
                         ("source", "device")).set(42, source="plc", device='cnc "01"')
        registry.histogram("edge_test_seconds", "Latency.", buckets=(0.5,)).observe(0.2)


def values(fams: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in fams for s in f.samples if not s.name.startswith("process_")}


def test_without_accept_the_text_format_0_0_4() -> None:
    answer = HealthServer(Provider()).respond("GET", "/metrics")
    assert answer.status == 200
    assert answer.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert ("Vary", "Accept") in answer.headers
    fams = {f.name: f for f in parse_text(answer.body.decode())}
    assert fams["edge_agent_device_samples"].samples[0].labels == {
        "source": "plc", "device": 'cnc "01"'}


@pytest.mark.parametrize("accept", [
    PROMETHEUS_ACCEPT,
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
])
def test_openmetrics_when_the_scraper_asks_for_it(accept: str) -> None:
    server = HealthServer(Provider())
    answer = server.respond("GET", "/metrics", accept)
    assert answer.content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = answer.body.decode()
    assert text.endswith("# EOF\n")
    # the same series and values as the text format
    plain = server.respond("GET", "/metrics").body.decode()
    assert values(parse_openmetrics(text)) == values(parse_text(plain))


@pytest.mark.parametrize("accept", ["text/plain", "*/*", "application/json", "text/html"])
def test_anything_else_gets_the_text_format(accept: str) -> None:
    answer = HealthServer(Provider()).respond("GET", "/metrics", accept)
    assert answer.content_type == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="process metrics read /proc")
@pytest.mark.parametrize("accept", ["", PROMETHEUS_ACCEPT])
def test_process_metrics_are_exposed(accept: str) -> None:
    body = HealthServer(Provider()).respond("GET", "/metrics", accept).body.decode()
    parse = parse_openmetrics if accept else parse_text
    fams = {f.name: f for f in parse(body)}
    for name in ("process_cpu_seconds", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds"):
        assert name in fams, sorted(fams)
    assert fams["process_resident_memory_bytes"].samples[0].value > 0


def test_scrapes_leave_the_default_registry_alone() -> None:
    before = generate_latest(REGISTRY)
    server = HealthServer(Provider())
    for _ in range(3):
        server.respond("GET", "/metrics")
    assert b"edge_agent" not in generate_latest(REGISTRY)
    assert generate_latest(REGISTRY).count(b"# TYPE") == before.count(b"# TYPE")

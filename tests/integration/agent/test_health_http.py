"""The health endpoint over real loopback sockets, with a fake provider.

Timing here is generous on purpose (shared CI machines): a "slow client" test only
checks that other clients are served while one stalls, and that the stalled one is
eventually cut off, never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from agent.health import Check, HealthServer, HealthSettings, HealthSnapshot, serve_health
from agent.metrics import Registry


@dataclass
class FakeProvider:
    broker: bool = True
    boom: bool = False
    scrapes: int = 0

    def health_snapshot(self) -> HealthSnapshot:
        return HealthSnapshot((
            Check("broker", self.broker, "connected" if self.broker else "not connected"),
            Check("collectors", True, "2 running"),
        ))

    def collect(self, registry: Registry) -> None:
        if self.boom:
            raise RuntimeError("provider failed")
        self.scrapes += 1
        registry.gauge("edge_agent_outbox_depth", "Messages waiting.").set(3)
        registry.counter("edge_agent_device_samples_total", "Samples.",
                         ("source", "device")).set(42, source="plc", device='cnc "01"')


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(30):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeProvider, int]]:
    """serve_health in a TaskGroup on a free loopback port, cancelled at the end."""
    provider = FakeProvider()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(serve_health("127.0.0.1", 0, provider, on_bound=bound.set_result))
        async with asyncio.timeout(30):
            port = await bound
        yield provider, port
        task.cancel()


async def test_healthz(served: tuple[FakeProvider, int]) -> None:
    _, port = served
    status, headers, body = await get(port, "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)


async def test_readyz_follows_the_provider(served: tuple[FakeProvider, int]) -> None:
    provider, port = served
    status, _, body = await get(port, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    provider.broker = False
    status, _, body = await get(port, "/readyz?verbose=1")
    doc = json.loads(body)
    assert status == 503
    assert doc["reasons"] == ["broker: not connected"]
    assert doc["checks"]["collectors"]["ok"] is True


async def test_metrics_parse(served: tuple[FakeProvider, int]) -> None:
    _, port = served
    status, headers, body = await get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert fams["edge_agent_outbox_depth"].samples[0].value == 3
    sample = fams["edge_agent_device_samples"].samples[0]
    assert sample.labels == {"source": "plc", "device": 'cnc "01"'} and sample.value == 42


async def test_metrics_in_openmetrics_when_the_accept_header_asks(
    served: tuple[FakeProvider, int]
) -> None:
    _, port = served
    status, headers, body = await request(port, (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;"
        b"version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n"))
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    fams = {f.name: f for f in openmetrics_families(body.decode())}
    assert fams["edge_agent_outbox_depth"].samples[0].value == 3
    assert "process_cpu_seconds" in fams


async def test_head_has_headers_only(served: tuple[FakeProvider, int]) -> None:
    _, port = served
    status, headers, body = await get(port, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET healthz HTTP/1.1\r\n\r\n", 400),
    (b"get /healthz HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"GET http://localhost:9464/healthz HTTP/1.0\r\n\r\n", 200),
])
async def test_bad_and_unknown_requests(served: tuple[FakeProvider, int], raw: bytes,
                                        status: int) -> None:
    _, port = served
    got, _, body = await request(port, raw)
    assert got == status
    json.loads(body)  # every answer is a JSON document


async def test_provider_failure_is_a_500_and_the_server_lives_on(
    served: tuple[FakeProvider, int]
) -> None:
    provider, port = served
    provider.boom = True
    status, _, body = await get(port, "/metrics")
    assert status == 500 and json.loads(body) == {"error": "RuntimeError"}
    provider.boom = False
    assert (await get(port, "/metrics"))[0] == 200


async def test_a_slow_client_never_blocks_the_others() -> None:
    provider = FakeProvider()
    server = HealthServer(provider, read_timeout_s=0.5, write_timeout_s=0.5)
    await server.start("127.0.0.1", 0)
    try:
        # one client sends half a request line and stalls, another connects and says nothing
        r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        w1.write(b"GET /metr")
        await w1.drain()
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        # meanwhile everyone else is served
        for _ in range(5):
            assert (await get(server.port, "/healthz"))[0] == 200
        # the stalled clients are answered 408 and cut off once the deadline passes
        async with asyncio.timeout(30):
            answer1 = await r1.read()
            answer2 = await r2.read()
        assert answer1.startswith(b"HTTP/1.1 408 ")
        assert answer2.startswith(b"HTTP/1.1 408 ")
        for w in (w1, w2):
            w.close()
    finally:
        await server.close()


async def test_a_client_that_never_reads_is_cut_off() -> None:
    """A client that sends requests but never reads answers cannot pin server memory."""
    provider = FakeProvider()
    server = HealthServer(provider, write_timeout_s=0.5)
    await server.start("127.0.0.1", 0)
    try:
        # a big /metrics answer so the socket buffers fill
        big = FakeProvider()

        def collect(registry: Registry) -> None:
            g = registry.gauge("g", "filler", ("i",))
            for i in range(200_000):
                g.set(i, i=str(i))

        big.collect = collect  # type: ignore[method-assign]
        server.provider = big
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        await writer.drain()
        reader._transport.pause_reading()  # type: ignore[attr-defined]
        # the handler gives up after its write deadline; close() would cancel it anyway,
        # so wait for the server to drop it on its own
        async with asyncio.timeout(30):
            while server._handlers:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        server.provider = provider
        assert (await get(server.port, "/healthz"))[0] == 200
        writer.close()
    finally:
        await server.close()


async def test_cancelling_serve_health_closes_open_connections() -> None:
    provider = FakeProvider()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_health("127.0.0.1", 0, provider,
                                            on_bound=bound.set_result))
    port = await asyncio.wait_for(bound, 30)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hea")  # stalled mid-request
    await writer.drain()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    async with asyncio.timeout(30):
        assert await reader.read() == b""  # closed without an answer
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_port_taken_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    provider = FakeProvider()
    server = HealthServer(provider)
    await server.start("127.0.0.1", 0)
    try:
        async with asyncio.timeout(30):
            await serve_health("127.0.0.1", server.port, provider)  # returns at once
        assert "cannot listen" in caplog.text
    finally:
        await server.close()


def test_settings_defaults_and_validation() -> None:
    s = HealthSettings()
    assert (s.enabled, s.host, s.port) == (True, "127.0.0.1", 9464)
    with pytest.raises(ValueError, match="Extra inputs"):
        HealthSettings.model_validate({"prot": 1})
    with pytest.raises(ValueError):
        HealthSettings.model_validate({"port": 70000})

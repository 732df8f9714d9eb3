"""Health and metrics over HTTP on a local port: ``/healthz``, ``/readyz``, ``/metrics``.

* ``/healthz``: the process is up and its event loop answers (liveness).
* ``/readyz``: 200 when every readiness check passes, else 503 with a JSON body naming
  the failing checks (broker not connected, collectors not running, ...).
* ``/metrics``: the provider's metrics and the ``process_*`` metrics, collected into a
  fresh ``prometheus_client`` registry at each scrape, in the format the scraper's
  ``Accept`` header asks for (OpenMetrics, or the text format 0.0.4 by default).

The server is deliberately minimal HTTP/1.1 over ``asyncio.start_server``: one request per
connection (``Connection: close``), GET and HEAD only, bounded request size, and a
deadline on reading the request and on writing the answer, so a slow or stuck client
costs one connection slot for a few seconds and never blocks the agent. Loopback by
default: the endpoint has no authentication, so exposing it is a deliberate choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from agent.health.status import HealthSnapshot, StatusProvider
from agent.metrics import Family, Registry

__all__ = ["HealthServer", "ProviderCollector", "scrape", "serve_health"]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
"""Deadline for a client to send its whole request head."""
WRITE_TIMEOUT_S = 5.0
"""Deadline for a client to take the whole answer."""
MAX_REQUEST_HEAD = 8192
"""Longest accepted request line plus headers; longer ones get 431."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at once instead of queueing."""

_PATHS = ("/healthz", "/readyz", "/metrics")

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


class ProviderCollector:
    """A ``prometheus_client`` custom collector asking a :class:`StatusProvider` for its
    metrics each time it is collected, into a :class:`Registry` of that one scrape."""

    def __init__(self, provider: StatusProvider) -> None:
        self.provider = provider

    def collect(self) -> Iterator[Family]:
        """The provider's families now."""
        registry = Registry()
        self.provider.collect(registry)
        return registry.collect()


def scrape(provider: StatusProvider, accept: str = "",
           process: ProcessCollector | None = None) -> tuple[bytes, str]:
    """One ``/metrics`` answer: the body and its content type, negotiated from ``accept``.

    The registry lives for this call only, so no metric state is shared between scrapes
    or with anything else in the process (``prometheus_client``'s default registry is
    never used). ``process`` adds the ``process_*`` metrics.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProviderCollector(provider))
    if process is not None:
        registry.register(process)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]
    """Header values by lower-case name (a repeated header keeps its last value)."""


def _json(status: int, payload: Mapping[str, object]) -> _Response:
    return _Response(status, (json.dumps(payload, separators=(",", ":")) + "\n").encode())


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> _Request:
    """Method, path and headers of a request head; raises _BadRequest for anything
    malformed."""
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
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line or line[0] in " \t":
            raise _BadRequest(400, "malformed header line")
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise _BadRequest(400, "request target must be a path")
    return _Request(method, target.split("?", 1)[0].split("#", 1)[0], headers)
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
        self._handlers: set[asyncio.Task[None]] = set()
        self._process = ProcessCollector(registry=None)
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

    def respond(self, method: str, path: str, accept: str = "") -> _Response:
        """The answer to one request (public so it can be tested without sockets);
        ``accept`` is the request's ``Accept`` header, which picks the metrics format."""
        if path not in _PATHS:
            return _json(404, {"error": f"no such path {path!r}", "paths": list(_PATHS)})
        if method not in ("GET", "HEAD"):
            return _Response(405, b'{"error":"use GET"}\n', headers=(("Allow", "GET, HEAD"),))
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            snap = self.ready_check()
            return _json(200 if snap.ready else 503, snap.to_json())
        body, content_type = scrape(self.provider, accept, self._process)
        return _Response(200, body, content_type, (("Vary", "Accept"),))

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
            request = _parse_head(head[:-4])
            method = request.method
            response = self._safe_respond(request)
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

    def _safe_respond(self, request: _Request) -> _Response:
        try:
            return self.respond(request.method, request.path, request.headers.get("accept", ""))
        except Exception as err:
            log.exception("health endpoint: %s %s failed", request.method, request.path)
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

"""The OPC UA collector against a server that is not asyncua: node-opcua.

node-opcua comes from the npm registry through ``scripts/provide-node-opcua`` (cached
under ``~/.cache/edge-agent``). Where it cannot be provided the tests are skipped, except
under CI (``CI=true``), where that is a failure: an interop suite that silently skips
proves nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest

from collectors.opcua import Deadband, OpcUaCollector, OpcUaSourceSpec, OpcUaTag
from collectors.opcua.security import CLIENT_CERT_FILE, load_certificate_info, thumbprints
from collectors.opcua.spec import ProfileSpec
from rules.types import Sample

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NS = "urn:edge-agent:interop"
MACHINE = "Objects/i:Machines/i:cnc-01"
STATE_MAP = {"0": "off", "1": "idle", "2": "producing", "3": "setup"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"node-opcua interop test cannot run under CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def node_path() -> str:
    """NODE_PATH with node-opcua in it, installed once into the cache."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node and npm are not installed")
    try:
        done = subprocess.run(["bash", str(REPO / "scripts" / "provide-node-opcua")],
                              capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        _unavailable("installing node-opcua took longer than 15 minutes")
        raise AssertionError("unreachable") from None
    if done.returncode != 0:
        _unavailable(f"scripts/provide-node-opcua failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class NodeServer:
    """The running node-opcua process, its URL, certificate and PKI directory."""

    proc: subprocess.Popen[str]
    url: str
    certificate: bytes
    lines: Queue[str]
    pki: Path
    """node-opcua's certificate store: ``rejected/``, ``trusted/certs/``, ..."""

    def set(self, **values: Any) -> None:
        """Apply values on the server and wait until it says so."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(values) + "\n")
        self.proc.stdin.flush()
        while True:
            reply = json.loads(self.lines.get(timeout=10))
            if "applied" in reply:
                return


@contextlib.contextmanager
def _node_server(node_path: str, directory: Path, *options: str) -> Iterator[NodeServer]:
    port = _free_port()
    proc = subprocess.Popen(
        ["node", str(HERE / "opcua_server.js"), str(port), str(directory), *options],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NODE_PATH": node_path})
    lines: Queue[str] = Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                lines.put(line)

    threading.Thread(target=reader, daemon=True).start()
    try:
        try:
            ready = json.loads(lines.get(timeout=120))
        except Empty:
            pytest.fail("node-opcua server did not start within 120 s")
        yield NodeServer(proc, f"opc.tcp://127.0.0.1:{port}",
                         base64.b64decode(ready["certificate"]), lines, directory / "pki")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def node_server(node_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """A server that accepts every client certificate."""
    with _node_server(node_path, tmp_path_factory.mktemp("node-opcua")) as server:
        yield server


@pytest.fixture
def strict_node_server(node_path: str, tmp_path: Path) -> Iterator[NodeServer]:
    """A server whose trust list does not hold the agent's certificate."""
    with _node_server(node_path, tmp_path / "node-opcua", "--reject-unknown") as server:
        yield server


def _spec(url: str, tags: tuple[OpcUaTag, ...], **kw: Any) -> OpcUaSourceSpec:
    params: dict[str, Any] = {
        "id": "node-opcua", "url": url, "tags": tags, "namespaces": {"i": NS},
        "publishing_interval_ms": 100, "timeout_s": 5.0, "watchdog_s": 10.0,
        "reconnect_min_s": 0.5, "reconnect_max_s": 1.0}
    params.update(kw)
    return OpcUaSourceSpec(**params)


@asynccontextmanager
async def _running(collector: OpcUaCollector,
                   sink: asyncio.Queue[Sample]) -> AsyncIterator[None]:
    task = asyncio.create_task(collector.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait(sink: asyncio.Queue[Sample], pred: Callable[[Sample], bool],
                within: float = 20) -> Sample:
    async with asyncio.timeout(within):
        while True:
            sample = await sink.get()
            if pred(sample):
                return sample


TAGS = (
    OpcUaTag("cnc-01", "parts_total", node=f"nsu={NS};s=cnc-01.Parts"),
    OpcUaTag("cnc-01", "state", browse_path=f"{MACHINE}/i:MachineState", value_map=STATE_MAP),
    OpcUaTag("cnc-01", "power_kw", browse_path=f"{MACHINE}/i:Power",
             deadband=Deadband("percent", 10.0)),  # 10 % of EURange 0..1000 = 100 kW
)


async def test_subscribe_by_nsu_and_browse_path_with_percent_deadband(
    node_server: NodeServer,
) -> None:
    node_server.set(parts=41, state=1, power=100.0)
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(_spec(node_server.url, TAGS))
    async with _running(collector, sink):
        first = await _wait(sink, lambda s: s.signal == "parts_total")
        assert (first.value, first.quality, first.ts_source) == (41, "good", "source")
        assert (await _wait(sink, lambda s: s.signal == "state")).value == "idle"
        await _wait(sink, lambda s: s.signal == "power_kw" and s.value == 100.0)
        for power in (150.0, 180.0, 260.0):  # +50, +80: inside the deadband; +160: out
            node_server.set(power=power)
            await asyncio.sleep(0.3)
        node_server.set(parts=42, state=2)
        got: list[Sample] = []
        async with asyncio.timeout(20):
            while not any(s.signal == "power_kw" and s.value == 260.0 for s in got) or \
                    not any(s.signal == "state" and s.value == "producing" for s in got):
                got.append(await sink.get())
        assert [s.value for s in got if s.signal == "power_kw"] == [260.0]
        assert 42 in [s.value for s in got if s.signal == "parts_total"]
    assert collector.stats.connected is False and collector.health["cnc-01"].errors == 0


@pytest.mark.parametrize("policy", ["Basic256Sha256", "Aes256_Sha256_RsaPss"])
async def test_sign_and_encrypt_with_trust_dir_and_user(node_server: NodeServer, policy: str,
                                                        tmp_path: Path) -> None:
    trusted = tmp_path / "pki" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "node-opcua.der").write_bytes(node_server.certificate)
    spec = _spec(node_server.url, TAGS[:2], security_policy=policy,
                 security_mode="SignAndEncrypt", pki_dir=tmp_path / "pki",
                 application_uri="urn:interop-test:factory-edge-agent",
                 username="edge", password="s3cret")
    node_server.set(parts=77)
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(spec)
    async with _running(collector, sink):
        sample = await _wait(sink, lambda s: s.signal == "parts_total" and s.value == 77)
        assert sample.quality == "good"
        node_server.set(parts=78)
        await _wait(sink, lambda s: s.signal == "parts_total" and s.value == 78)
    assert collector.stats.connects == 1


async def test_untrusted_node_opcua_server_is_refused(node_server: NodeServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    spec = _spec(node_server.url, TAGS[:1], security_policy="Basic256Sha256",
                 security_mode="SignAndEncrypt", pki_dir=tmp_path / "pki")
    collector = OpcUaCollector(spec)
    sink: asyncio.Queue[Sample] = asyncio.Queue(10)
    async with _running(collector, sink):
        await _until(lambda: collector.health["cnc-01"].errors >= 3)  # a few retries
    error = collector.health["cnc-01"].last_error or ""
    assert "not trusted" in error
    assert thumbprints(node_server.certificate)[1] in error
    assert sink.empty()
    said = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    _assert_quiet_library(caplog)


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


async def _until(cond: Callable[[], bool], within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _assert_quiet_library(caplog: pytest.LogCaptureFixture) -> None:
    """No asyncua line above INFO and no traceback: the collector's own lines say it all."""
    loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("asyncua") and r.levelno >= logging.WARNING]
    assert loud == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_a_server_refusing_the_agent_certificate_is_told_once_until_trusted(
    strict_node_server: NodeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """node-opcua with its trust list not holding the agent: one line naming the
    certificate, its URI and thumbprint over several retries; then the operator moves
    the certificate from the server's rejected/ to trusted/ and the collector connects."""
    caplog.set_level(logging.INFO)
    pki = tmp_path / "pki"
    (pki / "trusted").mkdir(parents=True)
    (pki / "trusted" / "node-opcua.der").write_bytes(strict_node_server.certificate)
    uri = "urn:interop-test:factory-edge-agent"
    spec = _spec(strict_node_server.url, TAGS[:1], security_policy="Basic256Sha256",
                 security_mode="SignAndEncrypt", pki_dir=pki, application_uri=uri)
    strict_node_server.set(parts=55)
    collector = OpcUaCollector(spec)
    sink: asyncio.Queue[Sample] = asyncio.Queue(100)
    async with _running(collector, sink):
        await _until(lambda: collector.health["cnc-01"].errors >= 3)
        cert = load_certificate_info(pki / CLIENT_CERT_FILE)

        def refusal_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if str(cert.cert_path) in r.getMessage() and uri in r.getMessage()
                    and _colons(cert.sha256) in r.getMessage()]

        said = refusal_lines()
        assert len(said) == 1, said
        assert "did not accept the agent's certificate" in said[0]
        assert "rejected/" in said[0] and "trusted/" in said[0]
        assert not collector.stats.connected and sink.empty()
        _assert_quiet_library(caplog)
        rejected = strict_node_server.pki / "rejected"
        await _until(lambda: any(rejected.glob("*.pem")))
        [refused] = list(rejected.glob("*.pem"))
        assert cert.sha1 in refused.name  # node-opcua names the file by the SHA-1 thumbprint
        shutil.move(refused, strict_node_server.pki / "trusted" / "certs" / refused.name)
        sample = await _wait(sink, lambda s: s.signal == "parts_total", within=30)
        assert (sample.value, sample.quality) == (55, "good")
    again = [r.getMessage() for r in caplog.records if "again after" in r.getMessage()]
    assert len(again) == 1
    assert refusal_lines() == said
    _assert_quiet_library(caplog)


async def test_a_quiet_node_opcua_server_keeps_its_session_on_keep_alives(
    node_server: NodeServer,
) -> None:
    """Nothing changes for longer than the silence limit (2 x 1 s keep-alive + 1 s): the
    server's keep-alives must count, or the collector would reconnect every few seconds."""
    node_server.set(parts=7, state=1, power=100.0)
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(_spec(node_server.url, TAGS, watchdog_s=1.0, timeout_s=1.0))
    async with _running(collector, sink):
        await _wait(sink, lambda s: s.signal == "parts_total")
        await asyncio.sleep(8.0)
        assert collector.stats.connected and collector.stats.reconnects == 0
        node_server.set(parts=8)
        assert (await _wait(sink, lambda s: s.signal == "parts_total")).value == 8
    assert collector.health["cnc-01"].errors == 0


@pytest.fixture(scope="module")
def umati_server(node_path: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[NodeServer]:
    """A server with the published OPC 40501-1 model and one MachineToolType instance."""
    with _node_server(node_path, tmp_path_factory.mktemp("node-opcua-umati"),
                      "--umati") as server:
        yield server


async def test_the_opc40501_profile_resolves_on_the_published_model(
    umati_server: NodeServer,
) -> None:
    umati_server.set(umati={"program": "Running", "mode": 1, "item": "Executing",
                            "lifetime": 41, "job": "J1", "good": 3, "completed": 4})
    profile = ProfileSpec("cnc-01", "opc40501", "Objects/ma:Machines/i:cnc-01",
                          frozenset({"state", "parts_total", "parts_good"}))
    spec = _spec(umati_server.url, (), profiles=(profile,),
                 namespaces={"i": NS, "ma": "http://opcfoundation.org/UA/Machinery/"})
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(spec)

    async def value(signal: str, wanted: object) -> None:
        await _wait(sink, lambda s: s.signal == signal and s.value == wanted)

    async with _running(collector, sink):
        await value("state", "producing")
        await value("parts_total", 41)
        await value("parts_good", 3)
        umati_server.set(umati={"mode": 2})  # Setup
        await value("state", "setup")
        umati_server.set(umati={"mode": 1, "item": "OutOfService"})
        await value("state", "unplanned_down")
        umati_server.set(umati={"item": "NotExecuting", "program": "Ended"})
        await value("state", "idle")
        # a new job: the active program names it, and its counters are followed
        umati_server.set(umati={"job": "J2", "program": "Running", "item": "Executing"})
        await value("parts_good", 0)
        umati_server.set(umati={"good": 1, "completed": 1, "lifetime": 42})
        wanted = {("parts_good", 1), ("parts_total", 42)}
        async with asyncio.timeout(20):
            while wanted:
                got = await sink.get()
                wanted.discard((got.signal, got.value))
    assert collector.health["cnc-01"].errors == 0
    signals = collector.stats.signals
    assert all(signals[("cnc-01", role)].state == "ok" for role in profile.roles)

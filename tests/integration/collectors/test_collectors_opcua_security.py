"""OPC UA security, deadband and clock skew against real servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from opcua_modbus_servers import free_port, running, start_cnc_server, wait_for_sample, wait_until
from secure_servers import CNC_NS, start_secure_server

from collectors.opcua import Deadband, OpcUaCollector, OpcUaSourceSpec, OpcUaTag
from collectors.opcua.security import CLIENT_CERT_FILE, load_certificate_info, thumbprints
from rules.types import Sample
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

PARTS_PATH = "Objects/cnc:Machines/cnc:cnc-01/cnc:PartsProducedInLifetime"
POWER = f"nsu={CNC_NS};s=cnc-01.Power"
APP_URI = "urn:test-host:factory-edge-agent"


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


def _spec(url: str, tags: tuple[OpcUaTag, ...], **kw: object) -> OpcUaSourceSpec:
    params: dict[str, object] = {
        "id": "cnc", "url": url, "tags": tags, "namespaces": {"cnc": CNC_NS},
        "publishing_interval_ms": 50, "timeout_s": 3.0, "watchdog_s": 5.0,
        "reconnect_min_s": 0.2, "reconnect_max_s": 0.5}
    params.update(kw)
    return OpcUaSourceSpec(**params)  # type: ignore[arg-type]


async def test_sign_and_encrypt_refuses_untrusted_server_until_trusted(tmp_path: Path) -> None:
    srv = await start_secure_server(free_port(), tmp_path / "server",
                                    [("Basic256Sha256", "SignAndEncrypt")])
    pki = tmp_path / "pki"
    try:
        tags = (OpcUaTag("cnc-01", "parts_total", browse_path=PARTS_PATH),)
        spec = _spec(srv.url, tags, security_policy="Basic256Sha256",
                     security_mode="SignAndEncrypt", pki_dir=pki, application_uri=APP_URI)
        collector = OpcUaCollector(spec)
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        async with running(collector, sink):
            await wait_until(lambda: collector.health["cnc-01"].last_error is not None)
            error = collector.health["cnc-01"].last_error or ""
            assert "not trusted" in error and str(pki / "trusted") in error
            sha256 = thumbprints(srv.cert_path.read_bytes())[1]
            assert f"sha256:{sha256}" in error
            rejected = list((pki / "rejected").glob("*.der"))
            assert [p.read_bytes() for p in rejected] == [srv.cert_path.read_bytes()]
            assert sink.empty() and not collector.stats.connected
            # The operator's fix, as the message says: move the certificate into the trust list.
            (pki / "trusted").mkdir(exist_ok=True)
            shutil.move(rejected[0], pki / "trusted" / rejected[0].name)
            sample = await wait_for_sample(sink, lambda s: s.signal == "parts_total", within=15)
            assert sample.value == 7 and sample.quality == "good"
            await srv.parts.write_value(ua.Variant(8, ua.VariantType.UInt32))
            assert (await wait_for_sample(sink, lambda s: s.value == 8)).signal == "parts_total"
        cert = x509.load_der_x509_certificate((pki / CLIENT_CERT_FILE).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [APP_URI]
        assert (pki / "client-key.pem").stat().st_mode & 0o077 == 0
    finally:
        await srv.stop()


async def test_a_refused_client_certificate_is_told_once_with_what_to_trust(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The server answers CreateSession with BadCertificateUntrusted (the status is known,
    so the line says so without "probably"). The collector starts before the server:
    the first failure (nothing listening) and the refusal are different kinds, each
    told once; the recovery once, after the server trusts the certificate."""
    caplog.set_level(logging.INFO)
    port = free_port()
    pki = tmp_path / "pki"
    trusted_by_server: set[bytes] = set()

    async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        if cert.public_bytes(serialization.Encoding.DER) not in trusted_by_server:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    server_dir = tmp_path / "server"
    tags = (OpcUaTag("cnc-01", "parts_total", browse_path=PARTS_PATH),)
    spec = _spec(f"opc.tcp://127.0.0.1:{port}/", tags, security_policy="Basic256Sha256",
                 security_mode="SignAndEncrypt", pki_dir=pki, application_uri=APP_URI)
    collector = OpcUaCollector(spec)
    sink: asyncio.Queue[Sample] = asyncio.Queue(100)
    srv = None
    try:
        async with running(collector, sink):
            await wait_until(lambda: collector.health["cnc-01"].errors >= 1)
            srv = await start_secure_server(port, server_dir, [("Basic256Sha256",
                                                                "SignAndEncrypt")])
            srv.server.set_certificate_validator(validate)
            (pki / "trusted").mkdir(parents=True, exist_ok=True)
            shutil.copy(srv.cert_path, pki / "trusted" / "server.der")
            await wait_until(lambda: "BadCertificateUntrusted" in (
                collector.health["cnc-01"].last_error or ""))
            errors = collector.health["cnc-01"].errors
            await wait_until(lambda: collector.health["cnc-01"].errors >= errors + 3)
            cert = load_certificate_info(pki / CLIENT_CERT_FILE)
            refused = [r.getMessage() for r in caplog.records
                       if str(cert.cert_path) in r.getMessage()
                       and APP_URI in r.getMessage() and _colons(cert.sha256) in r.getMessage()]
            assert len(refused) == 1, refused
            assert ("did not accept the agent's certificate (it answered "
                    "BadCertificateUntrusted to CreateSession)") in refused[0]
            assert "probably" not in refused[0]
            down = [r for r in caplog.records if "unavailable" in r.getMessage()]
            assert len(down) == 1  # nothing listening yet: the other kind, told once
            trusted_by_server.add((pki / CLIENT_CERT_FILE).read_bytes())
            sample = await wait_for_sample(sink, lambda s: s.signal == "parts_total", within=15)
            assert sample.value == 7
        again = [r for r in caplog.records if "again after" in r.getMessage()]
        assert len(again) == 1
        loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records
                if r.name.startswith("asyncua.client") and r.levelno >= logging.WARNING]
        assert loud == []
        assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    finally:
        if srv is not None:
            await srv.stop()


@pytest.mark.parametrize(("policy", "mode"), [("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
                                              ("Aes256_Sha256_RsaPss", "Sign")])
async def test_pinned_thumbprint_and_user_password(tmp_path: Path, policy: str,
                                                   mode: str) -> None:
    srv = await start_secure_server(free_port(), tmp_path / "server", [(policy, mode)],
                                    users={"edge": "s3cret"})
    try:
        sha1 = thumbprints(srv.cert_path.read_bytes())[0]
        pin = ":".join(sha1[i:i + 2] for i in range(0, 40, 2)).upper()  # as UaExpert shows it
        tags = (OpcUaTag("cnc-01", "parts_total", browse_path=PARTS_PATH),)
        common: dict[str, object] = {"security_policy": policy, "security_mode": mode,
                                     "pki_dir": tmp_path / "pki", "server_thumbprints": (pin,),
                                     "username": "edge"}
        wrong = OpcUaCollector(_spec(srv.url, tags, password="nope", **common))
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        async with running(wrong, sink):
            await wait_until(lambda: wrong.health["cnc-01"].errors > 0)
        assert sink.empty() and srv.users.logins == []
        good = OpcUaCollector(_spec(srv.url, tags, password="s3cret", **common))
        async with running(good, sink):
            sample = await wait_for_sample(sink, lambda s: s.signal == "parts_total")
        assert sample.value == 7 and srv.users.logins == ["edge"]
    finally:
        await srv.stop()


async def test_endpoint_mismatch_names_what_the_server_offers(tmp_path: Path) -> None:
    srv = await start_secure_server(free_port(), tmp_path / "server",
                                    [("Basic256Sha256", "Sign")])
    try:
        tags = (OpcUaTag("cnc-01", "parts_total", browse_path=PARTS_PATH),)
        collector = OpcUaCollector(_spec(
            srv.url, tags, security_policy="Aes256_Sha256_RsaPss",
            security_mode="SignAndEncrypt", pki_dir=tmp_path / "pki",
            server_thumbprints=(thumbprints(srv.cert_path.read_bytes())[1],)))
        async with running(collector, asyncio.Queue(10)):
            await wait_until(lambda: collector.health["cnc-01"].last_error is not None)
        error = collector.health["cnc-01"].last_error or ""
        assert "Aes256_Sha256_RsaPss/SignAndEncrypt" in error and "Basic256Sha256/Sign" in error
    finally:
        await srv.stop()


async def test_absolute_deadband_per_tag_and_source_default() -> None:
    cnc = await start_cnc_server(free_port())
    try:
        power = await cnc.server.nodes.objects.add_variable(
            ua.NodeId("cnc-01.Power", cnc.ns), ua.QualifiedName("Power", cnc.ns),
            ua.Variant(100.0, ua.VariantType.Double))
        tags = (
            OpcUaTag("cnc-01", "power_kw", node=POWER),  # source default: 5 absolute
            OpcUaTag("cnc-01", "parts_total",
                     node=f"nsu={CNC_NS};s=cnc-01.PartsProducedInLifetime",
                     deadband=Deadband("absolute", 0)),  # opted out: every change
        )
        spec = _spec(cnc.url, tags, deadband=Deadband("absolute", 5.0), sampling_interval_ms=0)
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        async with running(OpcUaCollector(spec), sink):
            await wait_for_sample(sink, lambda s: s.signal == "power_kw" and s.value == 100.0)
            await wait_for_sample(sink, lambda s: s.signal == "parts_total")
            for value in (102.0, 104.0, 110.0, 111.0, 120.0):
                await power.write_value(ua.Variant(value, ua.VariantType.Double))
                await cnc.set("cnc-01.parts", int(value), ua.VariantType.UInt32)
                await asyncio.sleep(0.15)
            got: list[Sample] = []
            async with asyncio.timeout(10):
                while not any(s.signal == "parts_total" and s.value == 120 for s in got) or \
                        not any(s.signal == "power_kw" and s.value == 120.0 for s in got):
                    got.append(await sink.get())
        powers = [s.value for s in got if s.signal == "power_kw"]
        parts = [s.value for s in got if s.signal == "parts_total"]
        assert powers == [110.0, 120.0]
        assert parts == [102, 104, 110, 111, 120]
    finally:
        await cnc.server.stop()


@pytest.mark.parametrize("action", ["flag", "receive"])
async def test_clock_skew_is_counted_and_logged_once(tmp_path: Path, action: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    scenario = default_scenario(machines=1, seed=3, fast=True)
    async with Plant(scenario, ledger_dir=tmp_path) as plant:
        plant.set_clock_skew(60.0)  # the controller's clock runs a minute ahead
        tags = (OpcUaTag("cnc-01", "power_on", browse_path=(
            "Objects/cnc:Machines/cnc:cnc-01/cnc:Monitoring/cnc:MachineTool/"
            "cnc:PowerOnDuration")),)
        spec = _spec(plant.opcua_endpoint, tags, max_clock_skew_s=5.0, clock_skew_action=action)
        collector = OpcUaCollector(spec)
        sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
        with caplog.at_level("WARNING", logger="collectors.opcua"):
            async with running(collector, sink):
                samples = [await wait_for_sample(sink, lambda s: True) for _ in range(3)]
                await wait_until(lambda: collector.stats.clock_skew >= 3)
    health = collector.health["cnc-01"]
    assert health.clock_skew >= 3 and health.clock_offset_ms is not None
    assert 50_000 < health.clock_offset_ms < 70_000
    assert all(s.quality == "good" for s in samples)
    expected = "receive" if action == "receive" else "source"
    assert {s.ts_source for s in samples} == {expected}
    assert len([r for r in caplog.records if "clock is off" in r.getMessage()]) == 1

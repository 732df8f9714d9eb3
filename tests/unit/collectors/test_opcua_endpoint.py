"""The one endpoint, policy and trust set-up the collector and ``browse`` share, and the
monitored-item requests the collector builds, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.crypto import security_policies as sp

from collectors.opcua.endpoint import NoEndpointError, secure_client, server_trust
from collectors.opcua.security import (
    CertInfo,
    UntrustedServerError,
    ensure_client_certificate,
    thumbprints,
)
from collectors.opcua.session import _item_request
from collectors.opcua.spec import OpcUaSourceSpec
from rules.errors import DeviceError

URL = "opc.tcp://plc:4840"


class FakeClient:
    """Answers GetEndpoints with the given endpoints and records the security set-up."""

    def __init__(self, endpoints: list[ua.EndpointDescription] | Exception) -> None:
        self.endpoints = endpoints
        self.application_uri = ""
        self.security: tuple[Any, ...] | None = None

    async def connect_and_get_server_endpoints(self) -> list[ua.EndpointDescription]:
        if isinstance(self.endpoints, Exception):
            raise self.endpoints
        return self.endpoints

    async def set_security(self, policy: Any, cert: str, key: str, *, server_certificate: bytes,
                           mode: ua.MessageSecurityMode) -> None:
        self.security = (policy, cert, key, server_certificate, mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertInfo, bytes]:
    client = ensure_client_certificate(tmp_path_factory.mktemp("client"), "urn:host:agent",
                                       hostname="host")
    server = ensure_client_certificate(tmp_path_factory.mktemp("server"), "urn:plc:server",
                                       hostname="plc")
    return client, server.cert_path.read_bytes()


def _endpoint(policy: type[sp.SecurityPolicy], mode: ua.MessageSecurityMode,
              der: bytes) -> ua.EndpointDescription:
    return ua.EndpointDescription(EndpointUrl=URL, SecurityPolicyUri=policy.URI,
                                  SecurityMode=mode, ServerCertificate=der)


def _offering(*endpoints: tuple[ua.MessageSecurityMode, bytes]) -> FakeClient:
    """A server offering Basic256Sha256 in the given modes, with the given certificates."""
    return FakeClient([_endpoint(sp.SecurityPolicyBasic256Sha256, mode, der)
                       for mode, der in endpoints])


async def _secure(client: FakeClient, spec: OpcUaSourceSpec, cert: CertInfo,
                  **kw: Any) -> None:
    await secure_client(client, spec, cert, server_trust(spec), **kw)  # type: ignore[arg-type]


def _spec(tmp_path: Path, **kw: Any) -> OpcUaSourceSpec:
    return OpcUaSourceSpec(id="plc", url=URL, tags=(), security_policy="Basic256Sha256",
                           security_mode="SignAndEncrypt", pki_dir=tmp_path, **kw)


def test_server_trust_defaults_to_the_pki_directory(tmp_path: Path) -> None:
    trust = server_trust(_spec(tmp_path, server_thumbprints=("AB:" * 19 + "CD",)))
    assert trust.trust_dir == tmp_path / "trusted"
    assert trust.rejected_dir == tmp_path / "rejected"
    assert trust.thumbprints == frozenset({"ab" * 19 + "cd"})
    assert server_trust(OpcUaSourceSpec(id="p", url=URL, tags=())).rejected_dir is None


async def test_the_matching_endpoint_of_a_pinned_server_is_pinned_for_the_channel(
    tmp_path: Path, certs: tuple[CertInfo, bytes],
) -> None:
    cert, server_der = certs
    spec = _spec(tmp_path, server_thumbprints=(thumbprints(server_der)[1],))
    client = _offering((ua.MessageSecurityMode.Sign, b""),
                       (ua.MessageSecurityMode.SignAndEncrypt, server_der))
    await _secure(client, spec, cert)
    assert client.application_uri == "urn:host:agent"
    assert client.security == (sp.SecurityPolicyBasic256Sha256, str(cert.cert_path),
                               str(cert.key_path), server_der,
                               ua.MessageSecurityMode.SignAndEncrypt)


async def test_an_untrusted_server_is_refused_before_any_security_is_set(
    tmp_path: Path, certs: tuple[CertInfo, bytes],
) -> None:
    cert, server_der = certs
    spec = _spec(tmp_path)
    client = _offering((ua.MessageSecurityMode.SignAndEncrypt, server_der))
    with pytest.raises(UntrustedServerError, match="not trusted"):
        await _secure(client, spec, cert)
    assert client.security is None
    assert list((tmp_path / "rejected").glob("*.der"))


async def test_no_matching_endpoint_or_no_answer_is_one_device_error(
    tmp_path: Path, certs: tuple[CertInfo, bytes],
) -> None:
    cert, server_der = certs
    spec = _spec(tmp_path)
    client = _offering((ua.MessageSecurityMode.Sign, server_der))
    with pytest.raises(NoEndpointError, match="offers no endpoint with Basic256Sha256/"
                       "SignAndEncrypt; it offers Basic256Sha256/Sign") as caught:
        await _secure(client, spec, cert)
    assert caught.value.offered == (("Basic256Sha256", "Sign"),)
    down = FakeClient(ConnectionRefusedError("refused"))
    with pytest.raises(DeviceError, match=f"cannot reach {URL}: refused by plc"):
        await _secure(down, spec, cert, reason=lambda err: f"{err} by plc")


def test_monitored_item_requests_carry_sampling_queue_and_filter() -> None:
    deadband = ua.DataChangeFilter(DeadbandValue=ua.Double(0.5))
    request = _item_request(ua.NodeId("speed", 2), 7, 250, 10, deadband)
    params = request.RequestedParameters
    assert (params.ClientHandle, params.SamplingInterval, params.QueueSize) == (7, 250, 10)
    assert params.DiscardOldest is True and params.Filter is deadband
    assert request.ItemToMonitor.NodeId == ua.NodeId("speed", 2)
    assert request.ItemToMonitor.AttributeId == ua.AttributeIds.Value
    assert request.MonitoringMode == ua.MonitoringMode.Reporting
    plain = _item_request(ua.NodeId("x", 2), 8, 0, 1, None).RequestedParameters.Filter
    assert not isinstance(plain, ua.DataChangeFilter)  # the default: any change

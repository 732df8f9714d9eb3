"""The one secure set-up of an OPC UA client: endpoint, security policy and server trust.

The collector (at every connect) and ``edge-agent browse`` (once) both go through
:func:`secure_client`, so what the operator commissions with ``browse`` is exactly what
the agent will do: the same endpoint choice, the same trust rules, the same pinning.
The endpoints are fetched over an unsecured channel (that is what GetEndpoints is for);
the server certificate found there is checked against the trust list and then pinned
for the secure channel, so asyncua refuses a session whose certificate differs from the
one checked, and no password is ever sent to an untrusted server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError

from collectors.opcua import security as sec
from collectors.opcua.spec import OpcUaSourceSpec
from rules.errors import DeviceError

__all__ = ["NoEndpointError", "secure_client", "server_trust"]


class NoEndpointError(DeviceError):
    """The server offers no endpoint with the configured policy and mode.

    ``offered`` holds the ``(policy, mode)`` short names the server does offer, so a
    caller can word them in its own syntax (``browse`` in that of its ``--security``).
    """

    def __init__(self, url: str, wanted: tuple[str, str],
                 offered: tuple[tuple[str, str], ...]) -> None:
        super().__init__(f"{url} offers no endpoint with {wanted[0]}/{wanted[1]}; it offers "
                         f"{', '.join(f'{p}/{m}' for p, m in offered)}")
        self.url = url
        self.wanted = wanted
        self.offered = offered


def server_trust(spec: OpcUaSourceSpec) -> sec.ServerTrust:
    """What makes ``spec``'s server trusted; refused certificates go to ``rejected/``
    next to the trust directory, where the operator finds them to move into it."""
    trust_dir = spec.effective_trust_dir
    return sec.ServerTrust(
        trust_dir=trust_dir,
        thumbprints=frozenset(sec.normalize_thumbprint(t) for t in spec.server_thumbprints),
        rejected_dir=trust_dir.parent / "rejected" if trust_dir is not None else None)


async def secure_client(client: Client, spec: OpcUaSourceSpec, cert: sec.CertInfo,
                        trust: sec.ServerTrust, *,
                        reason: Callable[[BaseException], str] = repr) -> None:
    """Make ``client`` connect with ``spec``'s policy and mode, as ``cert``, to a server
    whose certificate ``trust`` accepts.

    Raises :class:`DeviceError` (``UntrustedServerError`` for a server not trusted,
    :class:`NoEndpointError` for one without the policy and mode) naming the URL;
    ``reason`` words a library failure inside that message (the collector logs the
    exception's repr, ``browse`` a sentence for the operator).
    """
    client.application_uri = cert.application_uri
    policy = sec.policy_class(spec.security_policy)
    mode = sec.message_security_mode(spec.security_mode)
    try:
        async with asyncio.timeout(spec.timeout_s * 2 + 1):
            endpoints = await client.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, UaError) as err:
        raise DeviceError(f"cannot reach {spec.url}: {reason(err)}") from err
    matching = [ep for ep in endpoints
                if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode]
    if not matching:
        offered = sorted({(ep.SecurityPolicyUri.rsplit("#", 1)[-1], ep.SecurityMode.name)
                          for ep in endpoints})
        raise NoEndpointError(spec.url, (spec.security_policy, spec.security_mode),
                              tuple(offered))
    server_der = sec.first_certificate(matching[0].ServerCertificate or b"")
    if not server_der:
        raise DeviceError(f"{spec.url}: the secure endpoint has no server certificate")
    sec.check_server_certificate(server_der, trust, spec.url)
    try:
        await client.set_security(policy, str(cert.cert_path), str(cert.key_path),
                                  server_certificate=server_der, mode=mode)
    except (OSError, ValueError, UaError) as err:
        raise DeviceError(f"security set-up for {spec.url}: {reason(err)}") from err

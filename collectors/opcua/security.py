"""OPC UA security: the client's application instance certificate and server trust.

A secure OPC UA connection needs three things from the operator, and each has a plain
default here so the first run tells them exactly what is missing:

- **The client's own certificate.** :func:`ensure_client_certificate` creates a
  self-signed RSA-2048 certificate and key on first use (``client-cert.der`` and
  ``client-key.pem`` in the PKI directory) with the application URI as the
  ``URI:`` subject alternative name. OPC UA servers check that URI against the one the
  client announces, so the collector sets ``client.application_uri`` from the
  certificate, never from a second source that could disagree. The server has to trust
  this certificate; :func:`describe` prints what to hand to the server's administrator.
- **Trust in the server.** A server certificate is accepted when it is in the trust
  directory (exact certificate, or issued by a CA certificate found there) or when its
  SHA-1 or SHA-256 thumbprint is pinned in the config. An unknown certificate is
  refused *before* the session is created (so no password is ever sent to it), saved
  into ``rejected/`` next to the trust directory, and the error says how to trust it.
- **The server's trust in the client.** When the server refuses the client certificate,
  :func:`client_certificate_refusal` turns the failed handshake into one message naming
  the certificate file, its application URI and thumbprints, and where servers keep
  refused certificates. Servers answer with a ``Bad_Certificate*`` status, or with
  ``Bad_SecurityChecksFailed`` (many answer that for every failed security check, so as
  not to tell an attacker which one), or they just close the socket; asyncua loses the
  status of node-opcua's answer (a secured ERR message it does not decode), so a
  connection closed during OpenSecureChannel or CreateSession of a secure connection
  counts as a probable refusal and is worded so.
- **Which policy and mode.** Only the policies asyncua implements without deprecated
  algorithms are offered: ``Basic256Sha256``, ``Aes128_Sha256_RsaOaep`` and
  ``Aes256_Sha256_RsaPss``, each in ``Sign`` or ``SignAndEncrypt`` mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from asyncua import ua
from asyncua.crypto import security_policies as sp
from asyncua.crypto.cert_gen import generate_private_key, generate_self_signed_app_certificate
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rules.errors import ConfigError, DeviceError

__all__ = [
    "CLIENT_CERT_FILE",
    "CLIENT_KEY_FILE",
    "POLICIES",
    "CertInfo",
    "ClientCertificateRefusedError",
    "HandshakeStep",
    "SecurityMode",
    "SecurityPolicy",
    "ServerTrust",
    "TrustError",
    "UntrustedServerError",
    "check_server_certificate",
    "client_certificate_refusal",
    "default_application_uri",
    "describe",
    "ensure_client_certificate",
    "first_certificate",
    "load_certificate_info",
    "message_security_mode",
    "normalize_thumbprint",
    "policy_class",
    "thumbprints",
]

log = logging.getLogger(__name__)

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                         "Aes256_Sha256_RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]

POLICIES: dict[str, type[sp.SecurityPolicy]] = {
    "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
}
"""Secure policies by their OPC UA short name (the part after ``#`` in the policy URI)."""

CLIENT_CERT_FILE = "client-cert.der"
CLIENT_KEY_FILE = "client-key.pem"
_CERT_DAYS = 3650
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class TrustError(DeviceError):
    """A secure connection failed because one side does not trust the other's certificate.

    Its message is complete and says what to do, so a collector logs it as it is, once
    per failing streak.
    """


class UntrustedServerError(TrustError):
    """The server presented a certificate that is neither in the trust list nor pinned."""


class ClientCertificateRefusedError(TrustError):
    """The server did not accept the agent's certificate (``certain``), or probably not.

    ``status`` is the OPC UA status name the server answered with, None when the
    server only closed the connection.
    """

    def __init__(self, message: str, *, certain: bool, status: str | None) -> None:
        super().__init__(message)
        self.certain = certain
        self.status = status


HandshakeStep = Literal["OpenSecureChannel", "CreateSession", "ActivateSession"]
"""The request of the connection handshake in which a secure connection failed."""

_REFUSED = frozenset({
    StatusCodes.BadCertificateInvalid, StatusCodes.BadCertificateTimeInvalid,
    StatusCodes.BadCertificateIssuerTimeInvalid, StatusCodes.BadCertificateHostNameInvalid,
    StatusCodes.BadCertificateUriInvalid, StatusCodes.BadCertificateUseNotAllowed,
    StatusCodes.BadCertificateIssuerUseNotAllowed, StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadCertificateRevocationUnknown,
    StatusCodes.BadCertificateIssuerRevocationUnknown, StatusCodes.BadCertificateRevoked,
    StatusCodes.BadCertificateIssuerRevoked, StatusCodes.BadCertificateChainIncomplete,
    StatusCodes.BadCertificatePolicyCheckFailed, StatusCodes.BadNoValidCertificates,
})
"""Status codes that name a problem with the client certificate itself."""

_PROBABLY_REFUSED = frozenset({StatusCodes.BadSecurityChecksFailed,
                               StatusCodes.BadApplicationSignatureInvalid})
"""Generic security failures, which a server answers for an untrusted certificate too."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """An application instance certificate on disk and what a peer needs to trust it."""

    cert_path: Path
    key_path: Path | None
    application_uri: str
    subject: str
    sha1: str
    sha256: str
    not_before: datetime
    not_after: datetime
    created: bool = False


@dataclass(frozen=True, slots=True)
class ServerTrust:
    """What makes a server certificate trusted: a trust directory and/or pinned thumbprints.

    ``thumbprints`` hold normalized lowercase hex (40 digits SHA-1 or 64 digits SHA-256).
    ``rejected_dir`` is where an untrusted certificate is saved for the operator.
    """

    trust_dir: Path | None = None
    thumbprints: frozenset[str] = frozenset()
    rejected_dir: Path | None = None


def policy_class(name: str) -> type[sp.SecurityPolicy]:
    """asyncua's class for a policy short name; ConfigError for an unknown one."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(["None", *POLICIES])
        raise ConfigError([("security_policy", f"unknown policy {name!r}; known: {known}")]) \
            from None


def message_security_mode(name: str) -> ua.MessageSecurityMode:
    """The OPC UA enum of a mode name (``None``, ``Sign``, ``SignAndEncrypt``)."""
    modes = {"None": ua.MessageSecurityMode.None_, "Sign": ua.MessageSecurityMode.Sign,
             "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
    try:
        return modes[name]
    except KeyError:
        raise ConfigError([("security_mode", f"unknown mode {name!r}; known: "
                            f"{', '.join(modes)}")]) from None


def default_application_uri(hostname: str | None = None) -> str:
    """``urn:<host>:factory-edge-agent``: unique per machine, stable across restarts."""
    return f"urn:{hostname or socket.gethostname()}:factory-edge-agent"


def thumbprints(der: bytes) -> tuple[str, str]:
    """SHA-1 and SHA-256 thumbprints of a DER certificate, lowercase hex."""
    return hashlib.sha1(der).hexdigest(), hashlib.sha256(der).hexdigest()


def normalize_thumbprint(text: str) -> str:
    """``"AB:CD ..."``, ``"sha256:abcd..."`` -> ``"abcd..."``; ValueError if not SHA-1/256."""
    body = text.strip().lower()
    for prefix in ("sha256:", "sha-256:", "sha1:", "sha-1:"):
        if body.startswith(prefix):
            body = body[len(prefix):]
            break
    body = body.replace(":", "").replace(" ", "")
    if not _HEX_RE.match(body) or len(body) not in (40, 64):
        raise ValueError(f"thumbprint {text!r} is not a SHA-1 (40 hex digits) or SHA-256 "
                         "(64 hex digits) fingerprint")
    return body


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


def _uri_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise ConfigError([(str(path), f"not an X.509 certificate: {err}")]) from err


def _info(cert: x509.Certificate, cert_path: Path, key_path: Path | None,
          created: bool) -> CertInfo:
    der = cert.public_bytes(serialization.Encoding.DER)
    sha1, sha256 = thumbprints(der)
    return CertInfo(
        cert_path=cert_path, key_path=key_path, application_uri=_uri_of(cert) or "",
        subject=cert.subject.rfc4514_string(), sha1=sha1, sha256=sha256,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        created=created,
    )


def load_certificate_info(cert_path: Path, key_path: Path | None = None) -> CertInfo:
    """Describe an existing certificate file (PEM or DER) without changing anything."""
    try:
        cert = _load_cert(cert_path)
    except OSError as err:
        raise ConfigError([(str(cert_path), f"cannot read certificate: {err}")]) from err
    return _info(cert, cert_path, key_path, created=False)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (a crash never leaves half a key) with the given permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _san_entries(application_uri: str, hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri),
                                     x509.DNSName(hostname)]
    with contextlib.suppress(ValueError):
        names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    return names


def ensure_client_certificate(
    directory: Path,
    application_uri: str | None = None,
    *,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    hostname: str | None = None,
    create: bool = True,
) -> CertInfo:
    """The client certificate and key, created in ``directory`` when both are absent.

    ``cert_path``/``key_path`` override the default file names (an operator-supplied
    certificate, e.g. one issued by the plant's CA). An existing certificate is never
    replaced: if its application URI differs from ``application_uri`` that is a
    ConfigError, since the server has already been told to trust the old one. Only one
    of the two files present is also an error (regenerating would orphan the other).
    With ``create=False`` a missing pair is a ConfigError instead of being created.
    """
    cert_file = cert_path or directory / CLIENT_CERT_FILE
    key_file = key_path or directory / CLIENT_KEY_FILE
    have_cert, have_key = cert_file.exists(), key_file.exists()
    if have_cert and have_key:
        info = load_certificate_info(cert_file, key_file)
        if not info.application_uri:
            raise ConfigError([(str(cert_file), "certificate has no URI subject alternative "
                                "name (the OPC UA application URI)")])
        if application_uri and info.application_uri != application_uri:
            raise ConfigError([(str(cert_file),
                                f"certificate is for application URI {info.application_uri!r}"
                                f", config says {application_uri!r}: set application_uri to "
                                "the certificate's, or remove both files to create a new "
                                "certificate (the server must then trust the new one)")])
        return info
    if have_cert != have_key:
        present, missing = (cert_file, key_file) if have_cert else (key_file, cert_file)
        raise ConfigError([(str(missing), f"missing while {present} exists; restore it or "
                            "remove both to create a new certificate")])
    if not create:
        raise ConfigError([(str(cert_file), "no client certificate yet (run "
                            "'edge-agent certs' to create one)")])
    host = hostname or socket.gethostname()
    uri = application_uri or default_application_uri(host)
    try:
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key: rsa.RSAPrivateKey = generate_private_key()
        cert = generate_self_signed_app_certificate(
            key, "factory-edge-agent",
            {"organizationName": "factory-edge-agent"},
            _san_entries(uri, host),
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=_CERT_DAYS,
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        _write_private(key_file, key_pem, 0o600)
        _write_private(cert_file, cert.public_bytes(serialization.Encoding.DER), 0o644)
    except OSError as err:
        raise ConfigError([(str(cert_file), f"cannot create client certificate: {err}")]) \
            from err
    log.info("created OPC UA client certificate %s for %s", cert_file, uri)
    return _info(cert, cert_file, key_file, created=True)


def describe(info: CertInfo, *, trust_dir: Path | None = None) -> str:
    """Human-readable lines: where the certificate is and what the server must trust."""
    lines = [
        f"certificate:      {info.cert_path}" + ("  (created now)" if info.created else ""),
        f"private key:      {info.key_path}" if info.key_path else "",
        f"application URI:  {info.application_uri}",
        f"subject:          {info.subject}",
        f"valid:            {info.not_before:%Y-%m-%d} .. {info.not_after:%Y-%m-%d}",
        f"SHA-1:            {_colons(info.sha1)}",
        f"SHA-256:          {_colons(info.sha256)}",
        "The OPC UA server must trust this certificate: copy the certificate file into the "
        "server's trusted client certificates (or accept it in the server's rejected list) "
        f"for application URI {info.application_uri}.",
    ]
    if trust_dir is not None:
        lines.append(f"Server certificates trusted by this agent: {trust_dir}")
    return "\n".join(line for line in lines if line)


def first_certificate(der_chain: bytes) -> bytes:
    """The leaf certificate of a DER chain as servers send it in endpoint descriptions."""
    if len(der_chain) < 4 or der_chain[0] != 0x30:
        return der_chain
    # DER SEQUENCE: 0x30, then a short or long form length.
    first = der_chain[1]
    if first < 0x80:
        return der_chain[: 2 + first]
    n = first & 0x7F
    length = int.from_bytes(der_chain[2:2 + n], "big")
    return der_chain[: 2 + n + length]


def _trusted_certs(trust_dir: Path) -> Iterable[x509.Certificate]:
    if not trust_dir.is_dir():
        return
    for path in sorted(trust_dir.iterdir()):
        if path.suffix.lower() not in (".der", ".cer", ".crt", ".pem"):
            continue
        try:
            data = path.read_bytes()
            if data.lstrip().startswith(b"-----BEGIN"):
                yield from x509.load_pem_x509_certificates(data)
            else:
                yield x509.load_der_x509_certificate(data)
        except (OSError, ValueError) as err:
            log.warning("ignoring %s in the OPC UA trust list: %s", path, err)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject or cert.issuer == cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else "server"


def check_server_certificate(der: bytes, trust: ServerTrust, url: str) -> CertInfo:
    """Accept the server certificate or raise :class:`UntrustedServerError` saying how to
    trust it; an unreadable certificate is a DeviceError too.

    Trusted when its thumbprint is pinned, when the same certificate is in the trust
    directory, or when a CA certificate there issued it. The refused certificate is
    written to ``trust.rejected_dir`` so the operator can move it into the trust list.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise DeviceError(f"{url}: server certificate does not parse: {err}") from err
    sha1, sha256 = thumbprints(der)
    info = _info(cert, Path("<server>"), None, created=False)
    if sha1 in trust.thumbprints or sha256 in trust.thumbprints:
        # A pin is the operator's explicit word for this very certificate: honoured even
        # outside its validity period (common with machine builders' self-signed certs).
        if expired(info):
            log.warning("%s: pinned server certificate is outside its validity period "
                        "(%s .. %s); accepted because it is pinned", url,
                        f"{info.not_before:%Y-%m-%d}", f"{info.not_after:%Y-%m-%d}")
        return info
    if trust.trust_dir is not None:
        for known in _trusted_certs(trust.trust_dir):
            if known.public_bytes(serialization.Encoding.DER) == der or _issued_by(cert, known):
                if expired(info):
                    raise UntrustedServerError(
                        f"{url}: server certificate is outside its validity period "
                        f"({info.not_before:%Y-%m-%d} .. {info.not_after:%Y-%m-%d}; subject "
                        f"{cert.subject.rfc4514_string()}); renew it on the server, or pin "
                        f'it with server_thumbprints = ["sha256:{sha256}"] to accept it anyway')
                return info
    saved = ""
    if trust.rejected_dir is not None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _name(cert))[:40]
        target = trust.rejected_dir / f"{name}-{sha1[:16]}.der"
        try:
            trust.rejected_dir.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_bytes(der)
            saved = f" (saved as {target})"
        except OSError as err:
            log.debug("cannot save rejected certificate %s: %s", target, err)
    how = []
    if trust.trust_dir is not None:
        how.append(f"copy its certificate{saved} into the trust directory {trust.trust_dir}")
    how.append(f'pin it with server_thumbprints = ["sha256:{sha256}"]')
    raise UntrustedServerError(
        f"{url}: server certificate is not trusted (subject {cert.subject.rfc4514_string()}, "
        f"application URI {info.application_uri or '-'}, SHA-256 {_colons(sha256)}, "
        f"SHA-1 {_colons(sha1)}, valid until {info.not_after:%Y-%m-%d}); to trust it, "
        + " or ".join(how))


def expired(info: CertInfo, now: datetime | None = None) -> bool:
    """True outside the certificate's validity period."""
    at = now or datetime.now(UTC)
    return not info.not_before <= at <= info.not_after


def _causes(err: BaseException) -> Iterable[BaseException]:
    """``err`` and what it wraps: causes, contexts and the members of exception groups."""
    stack, seen = [err], set()
    while stack:
        exc = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        stack.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)


def client_certificate_refusal(err: BaseException, step: HandshakeStep | None,
                               cert: CertInfo, url: str) -> ClientCertificateRefusedError | None:
    """The refusal of the agent's certificate that ``err`` shows, else None.

    ``step`` is the handshake request that was under way when ``err`` ended the connect
    (None: the socket never opened, or the session was already active). A certificate
    status code is a refusal; a generic security status, or a connection the server
    closed during OpenSecureChannel or CreateSession, is a probable one. ActivateSession
    is left out of the second rule: a server may close there for a refused user login.
    """
    if step is None:
        return None
    status: int | None = None
    closed = False
    for exc in _causes(err):
        if isinstance(exc, UaStatusCodeError):
            status = exc.code
            break
        closed = closed or isinstance(exc, ConnectionError)
    if status is not None:
        if status not in _REFUSED and status not in _PROBABLY_REFUSED:
            return None
        name = ua.StatusCode(ua.UInt32(status)).name
        certain = status in _REFUSED
        how = f"it answered {name} to {step}"
    elif closed and step != "ActivateSession":
        name, certain = None, False
        how = f"it closed the connection during {step}"
    else:
        return None
    verdict = "did not accept" if certain else "probably did not accept"
    expiry = ""
    if expired(cert):
        expiry = (f"; the certificate is outside its validity period "
                  f"({cert.not_before:%Y-%m-%d} .. {cert.not_after:%Y-%m-%d}): renew it")
    return ClientCertificateRefusedError(
        f"{url} {verdict} the agent's certificate ({how}): have the server trust "
        f"{cert.cert_path} (application URI {cert.application_uri}, SHA-256 "
        f"{_colons(cert.sha256)}, SHA-1 {_colons(cert.sha1)}); a server usually keeps a "
        f"refused certificate in its PKI rejected/ folder: move it to trusted/{expiry}",
        certain=certain, status=name)

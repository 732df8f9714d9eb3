"""The third layer of config checks: what ``run`` needs beyond a well-formed file.

The models check each item and ``validate.py`` the whole file. This layer checks what the
file points at on the host it runs on — the environment variables named by ``*_env`` keys,
the MQTT TLS files, the OPC UA client certificate and trust list — and runs the
collectors' own validation on the very specs ``run`` builds from the config.

``edge-agent run`` and ``edge-agent check-config`` both load through :func:`check_runtime`
(``check-config --ingest`` and ``ingest`` through :func:`check_ingest_runtime`), so a file
that passes one passes the other and a problem reads the same in both, named by its
place. The checks only read: a client certificate that ``run`` would create on its first
connect is not an error here, only a directory it could not be created in.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import BaseModel

from agent.config.common import TlsSettings
from agent.config.load import label, place
from agent.config.model import AgentConfig
from agent.config.validate import Problems, check_agent
from agent.sources.opcua import OpcUaSourceSection, client_pki_dir
from agent.sources.registry import source_type
from rules.errors import ConfigError

if TYPE_CHECKING:
    from agent.ingest.config import IngestConfig

__all__ = [
    "check_collectors",
    "check_ingest_runtime",
    "check_runtime",
    "check_secrets",
    "check_source_files",
    "check_tls",
    "key_mismatch",
    "opcua_pki_problems",
]

_CERT_SUFFIXES = (".der", ".cer", ".crt", ".pem")
"""Files of an OPC UA trust directory the collector reads (the others it skips)."""


def check_runtime(cfg: AgentConfig, *, host: bool = True) -> Problems:
    """Every check ``run`` makes before it starts, after the per-item models.

    The whole-file checks, then (``host``) environment variables and files, then the
    collectors' validation of the specs built from the config (only once the file itself
    is consistent, since the specs are built from its references). ``host=False`` is for
    checking a file away from the machine it runs on.
    """
    out = check_agent(cfg)
    file_ok = not out
    if host:
        out += check_secrets(cfg)
        out += check_tls(cfg.mqtt.tls, "mqtt.tls")
        out += check_source_files(cfg)
    if file_ok:
        out += check_collectors(cfg)
    return out


def check_ingest_runtime(cfg: IngestConfig, *, host: bool = True) -> Problems:
    """What ``ingest`` checks before it starts: its secrets and TLS files (``host``)."""
    if not host:
        return []
    out = check_secrets(cfg) + check_tls(cfg.mqtt.tls, "mqtt.tls")
    if getattr(cfg.influxdb, "token_file", None) is not None:
        try:
            cfg.influxdb.token_value()
        except ValueError as err:
            out.append(("influxdb.token_file",
                        str(err).removeprefix("influxdb.token_file: ")))
    if not out:
        out += _influx_client_problems(cfg)
    return out


# -- environment variables ---------------------------------------------------------------


def _env_keys(node: BaseModel, loc: tuple[str | int, ...]) -> Iterator[tuple[
        tuple[str | int, ...], str]]:
    """``(location, variable name)`` of every ``*_env`` key that is set, at any depth."""
    for name in type(node).model_fields:
        value = getattr(node, name)
        here = (*loc, name)
        if name.endswith("_env") and isinstance(value, str):
            yield here, value
        elif isinstance(value, BaseModel):
            yield from _env_keys(value, here)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _env_keys(item, (*here, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _env_keys(item, (*here, str(key)))


def check_secrets(cfg: BaseModel) -> Problems:
    """Every ``*_env`` key names a variable that is set and not empty.

    Checked for every such key, used or not: a name the operator wrote that the service's
    environment lacks is a mistake either way, and only the name is ever printed.
    """
    out: Problems = []
    dump = cfg.model_dump()
    for loc, variable in _env_keys(cfg, ()):
        value = os.environ.get(variable)
        if value is None:
            out.append((place(dump, loc), f"environment variable {variable} is not set"))
        elif not value:
            out.append((place(dump, loc), f"environment variable {variable} is empty"))
    return out


# -- files ------------------------------------------------------------------------------


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        return path.read_bytes(), None
    except FileNotFoundError:
        return None, f"file not found: {path}"
    except IsADirectoryError:
        return None, f"{path} is a directory, not a file"
    except PermissionError:
        return None, f"cannot read {path}: permission denied for this user"
    except OSError as err:
        return None, f"cannot read {path}: {err.strerror or err}"


def _pem_certificate(path: Path) -> tuple[x509.Certificate | None, str | None]:
    data, problem = _read(path)
    if data is None:
        return None, problem
    try:
        return x509.load_pem_x509_certificates(data)[0], None
    except ValueError:
        return None, f"{path} is not a PEM certificate"


def _private_key(path: Path, *, pem: bool) -> tuple[PrivateKeyTypes | None, str | None]:
    data, problem = _read(path)
    if data is None:
        return None, problem
    try:
        if pem:
            return serialization.load_pem_private_key(data, password=None), None
        return serialization.load_der_private_key(data, password=None), None
    except TypeError:
        return None, (f"{path} is protected by a passphrase, which the agent cannot be "
                      "given: use an unencrypted key readable only by the agent's user")
    except (ValueError, UnsupportedAlgorithm):
        return None, f"{path} is not a {'PEM' if pem else 'DER'} private key"


def key_mismatch(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True when ``key`` is not the private key of ``cert`` (compared by public key)."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki)


def check_tls(tls: TlsSettings | None, where: str) -> Problems:
    """The TLS files exist, parse as the TLS library needs them, and the key fits.

    Ends by building the SSL context exactly as the MQTT client does, so nothing this
    misses can fail later.
    """
    if tls is None or not tls.enabled:
        return []
    out: Problems = []
    if tls.ca_file is not None:
        data, problem = _read(tls.ca_file)
        if data is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
                    cafile=str(tls.ca_file))
            except ssl.SSLError as err:
                detail = (err.reason or "").replace("_", " ").lower() or str(err)
                problem = f"{tls.ca_file} is not a PEM CA bundle ({detail})"
        if problem is not None:
            out.append((f"{where}.ca_file", problem))
    if tls.cert_file is not None and tls.key_file is not None:
        cert, problem = _pem_certificate(tls.cert_file)
        if problem is not None:
            out.append((f"{where}.cert_file", problem))
        key, problem = _private_key(tls.key_file, pem=True)
        if problem is not None:
            out.append((f"{where}.key_file", problem))
        if cert is not None and key is not None and key_mismatch(cert, key):
            out.append((f"{where}.key_file", f"{tls.key_file} is not the private key of "
                        f"cert_file {tls.cert_file}"))
    if not out:
        from agent.mqtt.paho_transport import tls_context

        try:
            tls_context(tls)
        except ConfigError as err:
            out += err.errors
    return out


# -- OPC UA client certificate and trust list --------------------------------------------


def _creatable(directory: Path) -> str | None:
    """Why ``directory`` (or the missing part of its path) cannot be created, or None."""
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def _opcua_file_problem(path: Path, kind: str) -> str | None:
    """Why the OPC UA library could not load ``path``: it reads a file named ``*.pem`` as
    PEM and any other as DER, whatever the content."""
    data, problem = _read(path)
    if data is None:
        return problem
    pem = path.suffix.lower() == ".pem"
    if kind == "certificate":
        try:
            (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(data)
            return None
        except ValueError:
            problem = f"{path} is not a {'PEM' if pem else 'DER'} X.509 certificate"
    else:
        _, problem = _private_key(path, pem=pem)
        if problem is None or "passphrase" in problem:
            return problem
    looks_pem = data.lstrip().startswith(b"-----BEGIN")
    if looks_pem != pem:
        return (f"{path} holds a {'PEM' if looks_pem else 'DER'} {kind}, but a file "
                f"{'named' if pem else 'not named'} *.pem is read as {'PEM' if pem else 'DER'}"
                ": rename it (.pem for PEM, .der for DER)")
    return problem


def _trust_dir_problems(trust: Path) -> list[str]:
    if not trust.exists():
        return []  # first run: servers are refused and saved for the operator to trust
    if not trust.is_dir():
        return [f"{trust} is not a directory"]
    try:
        entries = sorted(trust.iterdir())
    except OSError as err:
        return [f"cannot list {trust}: {err.strerror or err}"]
    out: list[str] = []
    for path in entries:
        if path.suffix.lower() not in _CERT_SUFFIXES:
            continue
        data, problem = _read(path)
        if data is None:
            out.append(str(problem))
            continue
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                x509.load_pem_x509_certificates(data)
            else:
                x509.load_der_x509_certificate(data)
        except ValueError:
            out.append(f"{path} in the trust directory is not a certificate")
    return out


def check_source_files(cfg: AgentConfig) -> Problems:
    """What each source's files on this host would refuse: its source type's
    ``check_host`` (for OPC UA, :func:`opcua_pki_problems`)."""
    out: Problems = []
    for i, src in enumerate(cfg.sources):
        out += source_type(src.type).check_host(cfg, i, src)
    return out


def opcua_pki_problems(cfg: AgentConfig, index: int, src: OpcUaSourceSection) -> Problems:
    """Client certificate, key and trust list of a secure OPC UA source in use.

    As on the first connect: an existing pair must load the way the OPC UA library
    loads it, carry the configured application URI and be a matching pair; a missing
    pair must be creatable (the collector creates it); a trust directory that exists
    must hold only certificates. A missing trust directory is the documented first run:
    the server is refused and its certificate saved for the operator.
    """
    if src.security_mode == "None" or src.id not in {sig.source for _, _, sig in cfg.signals()}:
        return []
    # asyncua loads the pair, so only a config with a secure source imports it
    from collectors.opcua.security import CLIENT_CERT_FILE, CLIENT_KEY_FILE

    where = label("sources", index, src.id)
    pki = client_pki_dir(cfg, src) or Path(".")
    cert_file = src.certificate or pki / CLIENT_CERT_FILE
    key_file = src.private_key or pki / CLIENT_KEY_FILE
    cert_key = f"{where}: " + ("certificate" if src.certificate else "pki_dir")
    key_key = f"{where}: " + ("private_key" if src.private_key else "pki_dir")
    out: Problems = []
    if not cert_file.exists() and not key_file.exists():
        problem = _creatable(cert_file.parent) or _creatable(key_file.parent)
        if problem is not None:
            out.append((cert_key, f"no client certificate at {cert_file} yet, and it "
                        f"cannot be created on the first connect: {problem} (create it "
                        "with 'edge-agent certs -c <config>' as the agent's user)"))
    else:
        out += _client_pair_problems(src, pki, cert_file, key_file, cert_key, key_key)
    trust = src.trust_dir or pki / "trusted"
    trust_key = f"{where}: " + ("trust_dir" if src.trust_dir else "pki_dir")
    out += [(trust_key, problem) for problem in _trust_dir_problems(trust)]
    return out


def _client_pair_problems(src: OpcUaSourceSection, pki: Path, cert_file: Path,
                          key_file: Path, cert_key: str, key_key: str) -> Problems:
    from collectors.opcua.security import ensure_client_certificate

    try:
        ensure_client_certificate(pki, src.application_uri, cert_path=src.certificate,
                                  key_path=src.private_key, create=False)
    except ConfigError as err:
        return [(key_key if where == str(key_file) else cert_key, f"{where}: {msg}")
                for where, msg in err.errors]
    out: Problems = []
    for path, kind, at in ((cert_file, "certificate", cert_key),
                           (key_file, "private key", key_key)):
        problem = _opcua_file_problem(path, kind)
        if problem is not None:
            out.append((at, problem))
    if out:
        return out
    cert_data = cert_file.read_bytes()
    cert = (x509.load_pem_x509_certificate(cert_data) if cert_file.suffix.lower() == ".pem"
            else x509.load_der_x509_certificate(cert_data))
    key, _ = _private_key(key_file, pem=key_file.suffix.lower() == ".pem")
    if key is not None and key_mismatch(cert, key):
        out.append((key_key, f"{key_file} is not the private key of the client certificate "
                    f"{cert_file}"))
    return out


# -- the collectors' own validation ------------------------------------------------------


def check_collectors(cfg: AgentConfig) -> Problems:
    """What each collector would refuse at start: its source type's ``check``, which
    builds it as ``run`` does (without reading secrets), with problems named by their
    config place."""
    out: Problems = []
    for i, src in enumerate(cfg.sources):
        out += source_type(src.type).check(cfg, i, src)
    return out


def _influx_client_problems(cfg: IngestConfig) -> Problems:
    """Build the InfluxDB client as the ingest does (it fails on a URL it cannot use)."""
    from agent.ingest.sink import InfluxSink

    try:
        sink = InfluxSink(cfg.influxdb)
    except (ValueError, OSError) as err:
        return [("influxdb", str(err))]
    sink.close()
    return []

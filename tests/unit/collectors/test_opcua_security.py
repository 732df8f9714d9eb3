"""Client certificates, server trust and the config -> spec mapping of the new settings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.certs_cmd import run_certs
from agent.config import load_agent_config
from agent.config.build import modbus_specs, opcua_specs
from collectors.opcua import Deadband
from collectors.opcua.security import (
    ServerTrust,
    UntrustedServerError,
    check_server_certificate,
    ensure_client_certificate,
    first_certificate,
    normalize_thumbprint,
    thumbprints,
)
from rules.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
          ca: bool = False, valid_days: int = 30) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer \
        else name
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1 + max(0, -valid_days)))
               .not_valid_after(now + dt.timedelta(days=valid_days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_thumbprint_forms() -> None:
    sha1 = "ab" * 20
    assert normalize_thumbprint(":".join(["AB"] * 20)) == sha1
    assert normalize_thumbprint(f"sha256:{'CD' * 32}") == "cd" * 32
    with pytest.raises(ValueError, match="SHA-1"):
        normalize_thumbprint("abcd")


def test_certificate_created_once_then_reused(tmp_path: Path) -> None:
    info = ensure_client_certificate(tmp_path, "urn:host:agent", hostname="host")
    assert info.created and info.application_uri == "urn:host:agent"
    assert (tmp_path / "client-key.pem").stat().st_mode & 0o777 == 0o600
    again = ensure_client_certificate(tmp_path, "urn:host:agent")
    assert not again.created and again.sha256 == info.sha256
    assert ensure_client_certificate(tmp_path, None).application_uri == "urn:host:agent"
    with pytest.raises(ConfigError, match="application URI 'urn:host:agent'"):
        ensure_client_certificate(tmp_path, "urn:other")
    (tmp_path / "client-key.pem").unlink()
    with pytest.raises(ConfigError, match="missing while"):
        ensure_client_certificate(tmp_path, "urn:host:agent")


def test_show_only_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="edge-agent certs"):
        ensure_client_certificate(tmp_path, None, create=False)
    assert not any(tmp_path.iterdir())


def test_server_trust_by_dir_pin_or_ca_else_refused(tmp_path: Path) -> None:
    ca_key, srv_key = _key(), _key()
    ca = _cert("plant-ca", ca_key, ca=True)
    issued = _cert("cnc-01", srv_key, issuer=("plant-ca", ca_key))
    selfsigned = _cert("cnc-02", srv_key)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    trust = ServerTrust(trust_dir=trusted, rejected_dir=tmp_path / "rejected")
    with pytest.raises(UntrustedServerError) as refused:
        check_server_certificate(selfsigned, trust, "opc.tcp://cnc-02:4840")
    message = str(refused.value)
    assert str(trusted) in message and f"sha256:{thumbprints(selfsigned)[1]}" in message
    (saved,) = (tmp_path / "rejected").iterdir()
    assert saved.read_bytes() == selfsigned
    saved.rename(trusted / saved.name)
    check_server_certificate(selfsigned, trust, "opc.tcp://cnc-02:4840")
    with pytest.raises(UntrustedServerError):
        check_server_certificate(issued, trust, "opc.tcp://cnc-01:4840")
    pem = x509.load_der_x509_certificate(ca).public_bytes(serialization.Encoding.PEM)
    (trusted / "plant-ca.pem").write_bytes(pem)
    check_server_certificate(issued, trust, "opc.tcp://cnc-01:4840")
    pinned = ServerTrust(thumbprints=frozenset({thumbprints(issued)[0]}))
    check_server_certificate(issued, pinned, "opc.tcp://cnc-01:4840")


def test_first_certificate_of_a_chain() -> None:
    key = _key()
    leaf, other = _cert("leaf", key), _cert("other", key)
    assert first_certificate(leaf + other) == leaf
    assert first_certificate(leaf) == leaf


def test_example_config_maps_security_deadband_and_presets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", "x")
    monkeypatch.setenv("EDGE_AGENT_OPCUA_PASSWORD", "pw")
    (spec,) = opcua_specs(load_agent_config(REPO / "deploy" / "examples" / "opcua-secure.toml"))
    assert (spec.security_policy, spec.security_mode, spec.password) == (
        "Basic256Sha256", "SignAndEncrypt", "pw")
    assert spec.deadband == Deadband("absolute", 0.5)
    assert spec.effective_trust_dir == Path("/etc/edge-agent/opcua-trusted")
    tags = {t.signal: t for t in spec.tags}
    assert tags["power_kw"].deadband == Deadband("percent", 2.0)
    assert tags["power_kw"].sampling_interval_ms == 1000 and tags["power_kw"].queue_size == 5
    assert tags["parts_total"].deadband == Deadband("absolute", 0.0)
    assert tags["state"].deadband is None
    rtu, rtu_tcp = modbus_specs(load_agent_config(REPO / "deploy" / "examples" /
                                                  "modbus-rtu.toml"))
    assert (rtu.transport, rtu_tcp.transport) == ("rtu", "rtu-over-tcp")
    scaled = next(d for d in rtu.devices if d.id == "meter-line-a")
    energy = next(p for p in scaled.points if p.signal == "energy_kwh")
    assert (energy.table, energy.dtype, energy.word_order, energy.scale) == (
        "holding", "u32", "little", 0.01)
    (state,) = [p for d in rtu_tcp.devices for p in d.points
                if p.device == "cnc-01" and p.signal == "state"]
    assert state.value_map is not None and state.value_map["2"] == "producing"
    (power,) = [p for d in rtu_tcp.devices for p in d.points
                if p.device == "meter-line-b" and p.signal == "power_kw"]
    assert power.scale == pytest.approx(0.001)  # engineering_unit = "W"
    limits = {d.unit: (d.timeout_s, d.retries) for d in rtu.devices}
    assert limits[3] == (0.9, 0) and limits[1] == (None, None)  # None: the source's 0.5 s


def test_config_rejects_bad_security_and_deadband(tmp_path: Path) -> None:
    base = (REPO / "deploy" / "examples" / "opcua-secure.toml").read_text()
    bad = base.replace('security_mode = "SignAndEncrypt"', 'security_mode = "None"')
    bad = bad.replace("[machines.signals.state]              # mapped: never gets the "
                      "source's deadband", "[machines.signals.state]\ndeadband = 1")
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    text = str(err.value)
    assert "security_policy and security_mode" in text


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_certs(pki_dir=tmp_path / "pki", application_uri="urn:x:agent") == 0
    out = capsys.readouterr().out
    assert "urn:x:agent" in out and "SHA-256" in out and "created now" in out
    assert run_certs(pki_dir=tmp_path / "pki", show_only=True) == 0
    assert "created now" not in capsys.readouterr().out
    assert run_certs(pki_dir=tmp_path / "none", show_only=True) == 2
    assert run_certs() == 2


def test_expired_server_certificate_refused_from_trust_dir_but_pin_wins(tmp_path: Path) -> None:
    key = _key()
    old = _cert("cnc-09", key, valid_days=-2)  # expired two days ago
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "cnc-09.der").write_bytes(old)
    with pytest.raises(UntrustedServerError, match="outside its validity period"):
        check_server_certificate(old, ServerTrust(trust_dir=trusted), "opc.tcp://cnc-09:4840")
    pinned = ServerTrust(thumbprints=frozenset({thumbprints(old)[1]}))
    assert check_server_certificate(old, pinned, "opc.tcp://cnc-09:4840").not_after < \
        dt.datetime.now(dt.UTC)

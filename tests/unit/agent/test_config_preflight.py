"""The third config layer (``agent.config.preflight``): what ``run`` checks on the host.

The same broken files through ``check-config`` and ``run`` as processes are in
``tests/integration/test_config_errors.py``; here the single checks, in process, with
certificates generated per test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives import serialization

from agent.config import load_agent_config, load_ingest_run_config, load_run_config
from agent.config.common import TlsSettings
from agent.config.model import AgentConfig, DataType
from agent.config.preflight import check_runtime, check_secrets, check_source_files, check_tls
from collectors.decode import DTYPES
from rules.errors import ConfigError
from tests.helpers import key_pem, self_signed

URI = "urn:test:factory-edge-agent"


def opcua_config(tmp_path: Path, **source: Any) -> AgentConfig:
    """A secure OPC UA source in use by one machine, state under ``tmp_path``."""
    node = {"source": "plc", "node": "ns=2;s=X"}
    return AgentConfig.model_validate({
        "agent": {"state_dir": str(tmp_path / "state")},
        "site": {"id": "s1"},
        "sources": [{"id": "plc", "type": "opcua", "url": "opc.tcp://127.0.0.1:1",
                     "security_policy": "Basic256Sha256", "security_mode": "Sign",
                     "application_uri": URI, **source}],
        "lines": [{"id": "l", "output_machine": "m"}],
        "machines": [{"id": "m", "line": "l", "ideal_cycle_time_s": 10,
                      "signals": {"state": {**node, "map": {"1": "producing"}},
                                  "parts_total": node, "parts_bad": node}}],
    })


def test_data_types_are_the_decoders() -> None:
    assert set(get_args(DataType)) == DTYPES


def test_every_env_key_is_checked_with_its_place(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("T_PW", raising=False)
    monkeypatch.setenv("T_EMPTY", "")
    cfg = opcua_config(tmp_path, security_policy="None", security_mode="None",
                       password_env="T_PW", username="u")
    cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(
        update={"password_env": "T_EMPTY"})})
    assert check_secrets(cfg) == [
        ("mqtt.password_env", "environment variable T_EMPTY is empty"),
        ('sources[0] "plc": password_env', "environment variable T_PW is not set"),
    ]
    monkeypatch.setenv("T_PW", "x")
    monkeypatch.setenv("T_EMPTY", "y")
    assert check_secrets(cfg) == []


def test_mutual_tls_pair_passes_and_a_foreign_key_does_not(tmp_path: Path) -> None:
    cert, key = self_signed("edge")
    _, other = self_signed("other")
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key_pem(key))
    (tmp_path / "o.pem").write_bytes(key_pem(other))
    (tmp_path / "e.pem").write_bytes(key_pem(key, b"secret"))
    good = TlsSettings(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "c.pem",
                       key_file=tmp_path / "k.pem")
    assert check_tls(good, "mqtt.tls") == []
    assert check_tls(good.model_copy(update={"enabled": False, "ca_file": tmp_path / "x"}),
                     "mqtt.tls") == []
    (problem,) = check_tls(good.model_copy(update={"key_file": tmp_path / "o.pem"}), "mqtt.tls")
    assert problem == ("mqtt.tls.key_file",
                       f"{tmp_path / 'o.pem'} is not the private key of cert_file "
                       f"{tmp_path / 'c.pem'}")
    (problem,) = check_tls(good.model_copy(update={"key_file": tmp_path / "e.pem"}), "mqtt.tls")
    assert "passphrase" in problem[1]
    (problem,) = check_tls(good.model_copy(update={"cert_file": tmp_path / "k.pem"}),
                           "mqtt.tls")
    assert problem == ("mqtt.tls.cert_file", f"{tmp_path / 'k.pem'} is not a PEM certificate")


def test_opcua_first_run_creates_its_certificate_so_none_is_fine(tmp_path: Path) -> None:
    assert check_source_files(opcua_config(tmp_path)) == []


def test_opcua_certificate_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (problem,) = check_source_files(opcua_config(tmp_path, pki_dir=str(tmp_path / "file" / "pki")))
    assert problem[0] == 'sources[0] "plc": pki_dir'
    assert f"{tmp_path / 'file'} is not a directory" in problem[1]
    assert "edge-agent certs" in problem[1]


def test_opcua_pair_is_loaded_as_the_opcua_library_loads_it(tmp_path: Path) -> None:
    cert, key = self_signed("edge", uri=URI)
    (tmp_path / "c.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "pem-named.der").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key_pem(key))
    good = {"certificate": str(tmp_path / "c.der"), "private_key": str(tmp_path / "k.pem")}
    assert check_source_files(opcua_config(tmp_path, **good)) == []
    (problem,) = check_source_files(opcua_config(
        tmp_path, **{**good, "certificate": str(tmp_path / "pem-named.der")}))
    assert problem == ('sources[0] "plc": certificate',
                       f"{tmp_path / 'pem-named.der'} holds a PEM certificate, but a file not "
                       "named *.pem is read as DER: rename it (.pem for PEM, .der for DER)")
    (problem,) = check_source_files(opcua_config(tmp_path, **good,
                                              application_uri="urn:other:agent"))
    assert problem[0] == 'sources[0] "plc": certificate' and "urn:other:agent" in problem[1]


def test_opcua_pair_in_pki_dir_with_a_foreign_key(tmp_path: Path) -> None:
    cert, _ = self_signed("edge", uri=URI)
    _, other = self_signed("other")
    pki = tmp_path / "state" / "pki" / "plc"  # the default pki_dir
    pki.mkdir(parents=True)
    (pki / "client-cert.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (pki / "client-key.pem").write_bytes(key_pem(other))
    (problem,) = check_source_files(opcua_config(tmp_path))
    assert problem == ('sources[0] "plc": pki_dir',
                       f"{pki / 'client-key.pem'} is not the private key of the client "
                       f"certificate {pki / 'client-cert.der'}")


def test_opcua_trust_dir_holds_only_certificates(tmp_path: Path) -> None:
    trust = tmp_path / "trusted"
    trust.mkdir()
    cert, _ = self_signed("server")
    (trust / "server.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (trust / "notes.txt").write_text("ignored: not a certificate suffix")
    assert check_source_files(opcua_config(tmp_path, trust_dir=str(trust))) == []
    (trust / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nxx\n")
    assert check_source_files(opcua_config(tmp_path, trust_dir=str(trust))) == [
        ('sources[0] "plc": trust_dir',
         f"{trust / 'broken.pem'} in the trust directory is not a certificate")]


def test_unused_secure_source_needs_no_certificate(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = opcua_config(tmp_path, pki_dir=str(tmp_path / "file" / "pki"))
    data = cfg.model_dump()
    data["sources"].append({**data["sources"][0], "id": "plc2",
                            "url": "opc.tcp://127.0.0.1:2"})
    data["sources"][0]["pki_dir"] = None
    assert check_source_files(AgentConfig.model_validate(data)) == []


def test_collector_problem_is_named_by_its_config_place(tmp_path: Path) -> None:
    data = opcua_config(tmp_path, security_policy="None", security_mode="None").model_dump()
    data["machines"][0]["signals"]["parts_bad"]["node"] = "nonsense"
    (problem,) = check_runtime(AgentConfig.model_validate(data))
    assert problem[0] == 'machines[0] "m": signals.parts_bad'
    assert "'nonsense' is not a NodeId" in problem[1]


def test_file_only_skips_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_UNSET", raising=False)
    path = tmp_path / "agent.toml"
    path.write_text('[site]\nid = "s"\n[mqtt]\nusername = "u"\npassword_env = "T_UNSET"\n'
                    '[mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n')
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert [p for p, _ in info.value.errors] == ["mqtt.password_env", "mqtt.tls.ca_file"]
    assert info.value.render().startswith(f"{path}: mqtt.password_env: ")
    load_run_config(path, host=False)
    load_agent_config(path)


def test_ingest_checks_its_token_and_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_TOKEN", raising=False)
    path = tmp_path / "ingest.toml"
    path.write_text('[influxdb]\ntoken_env = "T_TOKEN"\n'
                    '[mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n')
    with pytest.raises(ConfigError) as info:
        load_ingest_run_config(path)
    assert info.value.errors == [
        ("influxdb.token_env", "environment variable T_TOKEN is not set"),
        ("mqtt.tls.ca_file", "file not found: /nonexistent/ca.pem")]
    load_ingest_run_config(path, host=False)
    monkeypatch.setenv("T_TOKEN", "t")
    path.write_text('[influxdb]\ntoken_env = "T_TOKEN"\n')
    assert load_ingest_run_config(path).influxdb.token_value() == "t"


@pytest.mark.parametrize(("ident", "why"), [
    ("a+b", "'+' is not allowed in an MQTT topic level"),
    ("a#", "'#' is not allowed in an MQTT topic level"),
    ("hb/sjz", "'/' is not allowed in an MQTT topic level"),
    ("_site", "ids starting with '_' are reserved"),
])
def test_ids_are_topic_levels(ident: str, why: str) -> None:
    with pytest.raises(ValueError, match="is not a valid topic level") as info:
        AgentConfig.model_validate({"site": {"id": ident}})
    assert why in str(info.value)


@pytest.mark.parametrize("prefix", ["fac+tory", "f#", "$SYS", "a/b", ""])
def test_mqtt_prefix_is_one_plain_topic_level(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix must be one non-empty topic level"):
        AgentConfig.model_validate({"site": {"id": "s"}, "mqtt": {"prefix": prefix}})

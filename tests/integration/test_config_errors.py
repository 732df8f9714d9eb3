"""``check-config`` and ``run`` refuse the same broken files with the same message.

Each directory of ``tests/cases/config-errors`` holds one broken ``agent.toml`` (or
``ingest.toml``) and ``expected.err``, the exact text both commands must print. Each case
runs in a copy of its directory with generated certificates under ``certs/``: both
commands exit 2, print that text, and show no traceback; ``run`` must not get as far as
starting anything (a short timeout guards it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import key_pem, self_signed

pytestmark = pytest.mark.integration

CASES = Path(__file__).resolve().parents[1] / "cases" / "config-errors"
UNSET = ("EDGE_AGENT_TEST_UNSET_PASSWORD", "EDGE_AGENT_TEST_UNSET_OPCUA_PASSWORD",
         "EDGE_AGENT_TEST_UNSET_TOKEN")
TIMEOUT_S = 30


def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key_pem(key))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the cases refer to: a CA, a client pair, an unrelated key, an OPC UA
    client pair and a file that is no certificate at all."""
    out = tmp_path_factory.mktemp("certs")
    ca, _ = self_signed("test CA")
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    client, client_key = self_signed("edge-agent")
    (out / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    write_key(out / "client-key.pem", client_key)
    _, other = self_signed("someone else")
    write_key(out / "other-key.pem", other)
    opcua, opcua_key = self_signed("edge-agent", uri="urn:test:factory-edge-agent")
    (out / "opcua-cert.der").write_bytes(opcua.public_bytes(serialization.Encoding.DER))
    write_key(out / "opcua-key.pem", opcua_key)
    (out / "garbage.pem").write_text("this is not a certificate\n")
    return out


def edge_agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_check_config_and_run_refuse_alike(case: str, certs: Path, tmp_path: Path) -> None:
    work = tmp_path / case
    shutil.copytree(CASES / case, work)
    shutil.copytree(certs, work / "certs")
    expected = (work / "expected.err").read_text().strip()
    if (work / "ingest.toml").exists():
        commands = [("check-config", "--ingest", "-c", "ingest.toml"),
                    ("ingest", "-c", "ingest.toml")]
    else:
        commands = [("check-config", "-c", "agent.toml"), ("run", "-c", "agent.toml")]
    for command in commands:
        res = edge_agent(*command, cwd=work)
        assert "Traceback" not in res.stderr, res.stderr
        assert (res.returncode, res.stderr.strip()) == (2, expected), command
    assert not (work / "state").exists(), "run got past its checks"

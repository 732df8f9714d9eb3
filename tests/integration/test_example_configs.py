"""The example configs as an operator installs them: each passes ``check-config`` on a
host that has the files and environment variables it names, and
deploy/examples/simulators.toml really reads the bundled simulators (every configured
role of every machine and meter delivers good samples)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config.model import AgentConfig
from agent.config.preflight import check_runtime
from agent.runtime import build_collectors
from rules.types import Sample
from simulators.plant import Plant
from simulators.scenario import load_scenario

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
EXAMPLE = EXAMPLES / "simulators.toml"


def _env_names(node: Any) -> Iterator[str]:
    """The variables the ``*_env`` keys of a TOML document name."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_env") and isinstance(value, str):
                yield value
            else:
                yield from _env_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_names(item)


def _write_ca(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_example_passes_check_config_where_installed(example: str, tmp_path: Path) -> None:
    """The examples' /etc/edge-agent and /var/lib/edge-agent paths are moved under a
    temporary directory holding the CA the examples name; every secret is set."""
    text = (EXAMPLES / example).read_text()
    text = text.replace("/etc/edge-agent", str(tmp_path / "etc"))
    text = text.replace("/var/lib/edge-agent", str(tmp_path / "var"))
    path = tmp_path / example
    path.write_text(text)
    _write_ca(tmp_path / "etc" / "ca.pem")
    env = dict(os.environ, **{name: "x" for name in _env_names(tomllib.loads(text))})
    args = ["check-config", "-c", str(path)]
    if example.startswith("ingest"):
        args.insert(1, "--ingest")
    res = subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                         text=True, timeout=60, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert f"{path}: ok: " in res.stdout


async def test_simulators_example_reads_every_role(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    async with Plant(load_scenario(), ledger_dir=tmp_path) as plant:
        for src in raw["sources"]:
            if src["type"] == "opcua":
                src["url"] = plant.opcua_endpoint
            else:
                src["port"] = plant.modbus_port
        cfg = AgentConfig.model_validate(raw)
        assert check_runtime(cfg) == []
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c.run(queue)) for c in build_collectors(cfg)]
            await asyncio.sleep(4)
            for task in tasks:
                task.cancel()
    seen: dict[tuple[str, str], Sample] = {}
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            s = queue.get_nowait()
            if s.quality == "good":
                seen[(s.device, s.signal)] = s
    for m in cfg.machines:
        for role in ("state", "parts_total", "parts_bad"):
            assert (m.id, role) in seen, (m.id, role)
        assert seen[(m.id, "state")].value in {"off", "idle", "producing", "setup",
                                               "unplanned_down", "planned_down"}
    for mt in cfg.meters:
        energy = seen[(mt.id, "energy_kwh")].value
        power = seen[(mt.id, "power_kw")].value
        assert isinstance(energy, float) and energy >= 0
        assert isinstance(power, float) and 0 <= power <= 100

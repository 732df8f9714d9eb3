"""Set-ups several test modules share: ``from tests.helpers import ...``.

Fixtures live in the conftest files; what is here are plain functions, for the module-level
data builders and the module-scoped fixtures that cannot take a function-scoped fixture.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from agent.config.model import AgentConfig
from agent.offline import recompute
from agent.samplelog import OBSERVATION_DEVICE, observation_marker
from rules.engine import KpiEngine
from rules.types import KpiRecord, Sample

H = 3_600_000
GRID_KG_PER_KWH = 0.5306
"""The grid's emission factor the report tests' records are made with."""


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS`` to its end, as a user runs it: exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout_s, env=dict(os.environ, **(env or {})),
                          cwd=cwd, check=False)


def hourly_record(line: str | None, machine: str | None, end: int, pq: int, sq: int,
                  apt: float, kwh: float | None, ideal: float | None, *,
                  observed_s: float | None = None) -> KpiRecord:
    """A consistent one-hour KPI record of site ``hb-sjz-01`` from its few inputs.

    ``pq``/``sq`` are the parts produced and scrapped, ``apt`` the producing seconds,
    ``kwh`` the energy (None: an hour without energy data), ``ideal`` the ideal cycle time
    (None: a site record, which has no schedule-based ratios). Every derived KPI is
    computed from these as the engine would, so that report sums can be checked.
    """
    gq = pq - sq
    sched = ideal is not None
    energy: dict[str, Any] = {}
    if kwh is not None:
        energy = {"energy_kwh": kwh, "co2_kg": kwh * GRID_KG_PER_KWH,
                  "energy_per_unit_kwh": kwh / pq if pq else None,
                  "energy_per_good_unit_kwh": kwh / gq if gq else None,
                  "kgce_per_good_unit": 0.1229 * kwh / gq if gq else None,
                  "co2_per_good_unit_kg": kwh * GRID_KG_PER_KWH / gq if gq else None}
    return KpiRecord(
        site="hb-sjz-01", line=line, machine=machine, window="1h",
        window_start_ms=end - H, window_end_ms=end, observed_s=observed_s,
        planned_busy_time_s=3600.0, producing_time_s=apt, idle_time_s=3600.0 - apt,
        parts_produced=pq, parts_good=gq, parts_scrap=sq,
        availability=apt / 3600 if sched else None,
        performance=ideal * pq / apt if ideal is not None and apt else None,
        quality_ratio=gq / pq if sched and pq else None,
        oee=ideal * gq / 3600 if sched and ideal is not None else None,
        defect_rate=sq / pq if sched and pq else None,
        cycle_time_mean_s=apt / pq if sched and pq else None,
        ideal_cycle_time_s=ideal,
        flags=() if kwh is not None else ("no_energy_data",),
        **energy,
    )


def self_signed(name: str, uri: str | None = None) -> tuple[x509.Certificate,
                                                            rsa.RSAPrivateKey]:
    """A throwaway self-signed certificate (with a URI subjectAltName for OPC UA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def key_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    """The private key as PEM, encrypted with ``password`` if one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL, encryption)


def feed(engine: KpiEngine, sample: Sample) -> None:
    """One sample of a recorded stream into a live engine: a restart marker becomes
    ``observe_from``, as in the agent, everything else ``add``."""
    if sample.device == OBSERVATION_DEVICE:
        engine.observe_from(sample.ts_ms)
    else:
        engine.add(sample)


def sample_line(sample: Sample) -> str:
    """The sample as ``edge-agent run --record`` writes it (a marker as the marker)."""
    if sample.device == OBSERVATION_DEVICE:
        return json.dumps(observation_marker(sample.ts_ms)) + "\n"
    return json.dumps(sample.to_json_dict()) + "\n"


def run_live(engine: KpiEngine, samples: Sequence[Sample], data: st.DataObject,
             lags: Sequence[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed ``samples`` in arrival order and, at moments Hypothesis picks, advance the
    engine to the newest timestamp minus one of ``lags`` (a clock running behind or
    ahead of the devices); then finish. The records and the alarms it emitted."""
    records: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    newest: int | None = None
    for s in samples:
        feed(engine, s)
        newest = s.ts_ms if newest is None else max(newest, s.ts_ms)
        if data.draw(st.integers(0, 4)) == 0:
            out = engine.advance(newest - data.draw(st.sampled_from(list(lags))))
            records += [r.to_json_dict() for r in out.records]
            alarms += [a.to_json_dict() for a in out.alarms]
    out = engine.finish()
    records += [r.to_json_dict() for r in out.records]
    alarms += [a.to_json_dict() for a in out.alarms]
    return records, alarms


def run_offline(cfg: AgentConfig, samples: Sequence[Sample], flush_every: int
                ) -> tuple[list[dict[str, Any]], str]:
    """``edge-agent kpi`` over the recorded ``samples``: its records and its summary."""
    out, err = io.StringIO(), io.StringIO()
    recompute(cfg, [sample_line(s) for s in samples], out, "s.jsonl", summary=err,
              flush_every=flush_every)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()

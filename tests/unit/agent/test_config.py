"""Config validation, as a directory of cases: ``agent.toml`` in, expected errors out.

Each ``config_cases/<case>/expected.err`` lists substrings that must each appear in one
error line; an empty file means the config is valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_agent_config, load_run_config
from agent.config.build import engine_spec, modbus_specs, opcua_specs
from rules.errors import ConfigError

CASES = Path(__file__).parent / "config_cases"
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()), ids=str)
def test_config_case(case: str) -> None:
    path = CASES / case / "agent.toml"
    expected = [line for line in (CASES / case / "expected.err").read_text().splitlines() if line]
    if not expected:
        load_agent_config(path)
        return
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    lines = info.value.render().splitlines()
    for want in expected:
        assert any(want in line for line in lines), f"{want!r} not in:\n" + "\n".join(lines)
    assert all(line.startswith(str(path)) for line in lines), lines


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(CASES / "missing_roles" / "agent.toml")
    assert len(info.value.errors) >= 2


def test_kpi_only_ignores_sources(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[site]\nid = "s"\n[[lines]]\nid = "l"\noutput_machine = "m"\n'
        '[[machines]]\nid = "m"\nline = "l"\nideal_cycle_time_s = 10\n'
        '[[meters]]\nid = "e"\nmachine = "m"\nmodulus_kwh = 1000.0\nmax_power_kw = 5\n'
    )
    with pytest.raises(ConfigError):
        load_agent_config(cfg)
    spec = engine_spec(load_agent_config(cfg, kpi_only=True))
    assert spec.machines[0].ideal_cycle_time_s == 10
    assert spec.meters[0].modulus_kwh == 1000.0


def test_secret_is_never_echoed(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[site]\nid = "s"\n[mqtt]\npassword = "hunter2"\nport = 0\n')
    with pytest.raises(ConfigError) as info:
        load_agent_config(cfg)
    assert "hunter2" not in info.value.render()
    assert "mqtt.port" in info.value.render()


@pytest.mark.parametrize("example", sorted((REPO / "deploy" / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_configs_are_valid(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", "x")
    monkeypatch.setenv("EDGE_AGENT_OPCUA_PASSWORD", "x")
    if example.name.startswith("ingest"):
        from agent.ingest.config import load_ingest_config

        load_ingest_config(example)
        return
    cfg = load_run_config(example, host=False)  # the host's files: test_example_configs
    assert engine_spec(cfg).machines
    assert opcua_specs(cfg) or modbus_specs(cfg)


def test_specs_from_small_plant(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_agent_config(REPO / "deploy" / "examples" / "small-plant.toml")
    opcua = {s.id: s for s in opcua_specs(cfg)}
    assert {t.signal for t in opcua["cnc-01-opcua"].tags} == {"state", "parts_total", "parts_bad"}
    (gw,) = modbus_specs(cfg)
    units = {d.unit: d for d in gw.devices}
    assert {p.signal for p in units[1].points} >= {"energy_kwh", "power_kw"}
    (energy,) = units[2].points
    assert (energy.table, energy.address, energy.dtype, energy.word_order, energy.scale) == (
        "holding", 0, "u32", "little", 0.01)
    spec = engine_spec(cfg)
    assert [m.good_counter for m in spec.machines] == [False, True]
    assert spec.windows == ("1m", "15m", "1h", "shift")
    assert spec.shifts[1].end.hour == 0

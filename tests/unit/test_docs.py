"""The documentation cannot drift from the code it describes.

- docs/config-reference.md is exactly what scripts/gen-config-reference produces from the
  config models now (regenerate it after changing a model).
- docs/troubleshooting.md explains every flag a KPI record can carry.
- docs/kpi.md defines every field and flag of a KPI record, names every worked-example
  case under tests/cases/kpi/, and points at nothing outside the repository.
- Relative links in README.md and docs/ point at files that exist.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen-config-reference"
DOCS = REPO / "docs"


def _generator() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_config_reference", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_config_reference_is_up_to_date() -> None:
    generated = _generator().render()
    committed = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert committed == generated, (
        "docs/config-reference.md is stale: run scripts/gen-config-reference")


def test_config_reference_lists_every_key_of_both_files() -> None:
    from agent.config.common import InfluxSettings, MqttSettings
    from agent.config.model import AgentConfig, MachineSection, SignalSection
    from agent.ingest.config import IngestSettings

    text = _generator().render()
    for model in (AgentConfig, MachineSection, SignalSection, MqttSettings, InfluxSettings,
                  IngestSettings):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name}"
    for heading in ("`[[sources]]` with `type = \"opcua\"`", "`[[sources]]` with `type = "
                    "\"modbus\"`", "`[mqtt.tls]`", "`[ingest]`", "`[[calendar.shifts]]`"):
        assert heading in text, heading


def test_generator_script_is_executable_python() -> None:
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert SCRIPT.stat().st_mode & 0o111


def _documented_flags() -> set[str]:
    """Flags named in the definition list of rules/kpi.py's docstring, plus the reload's."""
    import rules.kpi

    doc = rules.kpi.__doc__ or ""
    flags = set()
    for line in doc.splitlines():
        if re.fullmatch(r"``\w+``( / ``\w+``)*", line.strip()) and not line.startswith(" "):
            flags.update(re.findall(r"``(\w+)``", line))
    try:
        from agent.reload import RELOAD_FLAG
    except ImportError:
        return flags
    return flags | {RELOAD_FLAG}


def test_troubleshooting_explains_every_kpi_flag() -> None:
    flags = _documented_flags()
    assert {"counter_wrap", "meter_reset", "incomplete", "energy_carried"} <= flags
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE))
    assert flags <= rows, f"flags missing from docs/troubleshooting.md: {flags - rows}"


KPI_DOC = DOCS / "kpi.md"
KPI_CASES = REPO / "tests" / "cases" / "kpi"


def test_kpi_doc_defines_every_record_field() -> None:
    from rules.types import KPI_FIELDS

    text = KPI_DOC.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)`", text, flags=re.MULTILINE))
    fields = {*KPI_FIELDS, "schema", "site", "line", "machine", "window", "flags"}
    assert fields <= rows, f"fields missing from the table of docs/kpi.md: {fields - rows}"


def test_kpi_doc_defines_every_flag() -> None:
    text = KPI_DOC.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE))
    flags = _documented_flags()
    assert flags <= rows, f"flags missing from docs/kpi.md: {flags - rows}"


def test_kpi_doc_names_every_case() -> None:
    text = KPI_DOC.read_text(encoding="utf-8")
    for case in sorted(p.name for p in KPI_CASES.iterdir() if p.is_dir()):
        assert f"(../tests/cases/kpi/{case})" in text, f"docs/kpi.md does not link {case}"


def test_kpi_doc_is_self_contained() -> None:
    text = KPI_DOC.read_text(encoding="utf-8")
    for outside in ("KPI.md", "DESIGN.md", "/work/", "/tmp/"):
        assert outside not in text, f"docs/kpi.md refers to {outside}"


def test_repository_points_at_nothing_outside_it() -> None:
    """Code, docs and deploy files name only the repository's own documents."""
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    pattern = re.compile(r"(?<![\w/])(?:KPI|DESIGN|LIBRARIES|STYLE)\.md|\.\./shared/")
    offenders = []
    for name in listed:
        path = REPO / name
        if name == "tests/unit/test_docs.py" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if pattern.search(line)]
    assert not offenders, f"references outside the repository: {offenders}"


def test_troubleshooting_covers_the_field_problems() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8").lower()
    for topic in ("certificate", "word_order", "40001", "30001", "max_queued_messages",
                  "clock skew"):
        assert topic in text, topic


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"

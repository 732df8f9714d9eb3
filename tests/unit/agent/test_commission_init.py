"""``edge-agent init``: the shipped examples written as starter configs, never over an
existing file without ``--force``; each one written passes ``check-config``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from agent.cli import main
from agent.commission.starter import next_steps, write
from agent.examples import EXAMPLES, example_text
from rules.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def test_the_examples_are_package_data_with_one_copy_each() -> None:
    shipped = {p.stem for p in (REPO / "agent" / "examples").glob("*.toml")}
    assert shipped == set(EXAMPLES)
    for name in EXAMPLES:
        link = REPO / "deploy" / "examples" / f"{name}.toml"
        assert link.is_symlink(), f"{link} should point at the packaged file"
        assert link.resolve() == (REPO / "agent" / "examples" / f"{name}.toml").resolve()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    assert "agent.examples" in find_packages(str(REPO), include=find["include"])
    assert "*.toml" in pyproject["tool"]["setuptools"]["package-data"]["*"]


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_example_written_passes_check_config(
    example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    assert main(["init", "--example", example, "-o", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == example_text(example)
    out = capsys.readouterr().out
    assert f"wrote {path}" in out
    for step in ("check-config", "test", "run"):
        assert f"edge-agent {step} -c {path}" in out
    assert main(["check-config", "--file-only", "-c", str(path)]) == 0
    assert f"{path}: ok: " in capsys.readouterr().out


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("# mine\n")
    assert main(["init", "-o", str(path)]) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert path.read_text() == "# mine\n"
    assert main(["init", "--force", "--example", "modbus-rtu", "-o", str(path)]) == 0
    assert path.read_text() == example_text("modbus-rtu")


def test_a_missing_directory_or_a_directory_is_bad_usage(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write("simulators", tmp_path / "nope" / "agent.toml")
    with pytest.raises(InputError, match="is a directory"):
        write("simulators", tmp_path)


def test_an_unknown_example_is_refused_by_the_parser(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["init", "--example", "nope", "-o", str(tmp_path / "a.toml")])
    assert exc.value.code == 2


def test_next_steps_follow_the_commissioning_flow() -> None:
    steps = next_steps("small-plant", Path("plant.toml"))
    order = [i for i, line in enumerate(steps)
             for word in ("edit", "check-config", "test -c", "run -c") if word in line]
    assert order == sorted(order) and len(order) == 4

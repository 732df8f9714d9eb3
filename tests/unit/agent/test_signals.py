"""`run` and `ingest` start where POSIX signals do not exist (Windows): no bare reference
to a POSIX-only signal anywhere in the product, and the commands start and stop in order
with ``signal.SIGHUP`` gone and with a loop that cannot watch signals."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest

import agent.logs
from agent import cli
from agent.aio import on_signal, run_until_signal

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "tests" / "unit" / "agent" / "config_cases" / "ok_minimal" / "agent.toml"

# What Windows' signal module has as well; everything else needs a guard.
PORTABLE = {"SIGINT", "SIGTERM", "SIGABRT", "SIGFPE", "SIGILL", "SIGSEGV", "SIG_DFL",
            "SIG_IGN", "signal", "getsignal", "raise_signal", "default_int_handler",
            "set_wakeup_fd", "Signals", "Handlers", "NSIG", "strsignal", "valid_signals"}


def _guarded(test: ast.expr) -> bool:
    """An ``if`` that asks the platform: hasattr(signal, ...), sys.platform, os.name."""
    text = ast.unparse(test)
    return "hasattr(signal" in text or "sys.platform" in text or "os.name" in text


def _unguarded_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If):
            visit(node.test, guarded)
            inner = guarded or _guarded(node.test)
            for stmt in node.body:
                visit(stmt, inner)
            for stmt in node.orelse:
                visit(stmt, guarded)
            return
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "signal" and node.attr not in PORTABLE and not guarded):
            found.append((node.lineno, f"signal.{node.attr}"))
        if isinstance(node, ast.ImportFrom) and node.module == "signal" and not guarded:
            found.extend((node.lineno, f"from signal import {a.name}") for a in node.names
                         if a.name not in PORTABLE)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def test_no_posix_only_signal_outside_a_guard() -> None:
    offenders = []
    for package in ("agent", "collectors", "rules", "simulators"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), rel)
            offenders += [f"{rel}:{line}: {what}" for line, what in _unguarded_uses(tree)]
    assert offenders == []


def test_the_checker_sees_unguarded_uses() -> None:
    bare = ast.parse("import signal\nloop.add_signal_handler(signal.SIGHUP, f)\n")
    guarded = ast.parse("if hasattr(signal, 'SIGHUP'):\n    x = signal.SIGHUP\n")
    assert _unguarded_uses(bare) == [(2, "signal.SIGHUP")]
    assert _unguarded_uses(guarded) == []


@pytest.fixture
def no_sighup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(signal, "SIGHUP")


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands configure logging and redaction for a process of their own; in
    process that would take the handlers away from pytest."""
    monkeypatch.setattr(agent.logs, "setup_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(agent.logs, "install_redaction", lambda secrets: None)


class FakeAgent:
    """Stands in for the runtime: starts, is stopped by SIGTERM."""

    started: ClassVar[list[FakeAgent]] = []

    def __init__(self, cfg: Any, *, record_path: Path | None, config_path: Path) -> None:
        pass

    def request_reload(self) -> None:
        raise AssertionError("no SIGHUP here, so nothing can request a reload")

    async def run(self, stop: asyncio.Event) -> None:
        FakeAgent.started.append(self)
        os.kill(os.getpid(), signal.SIGTERM)  # as a service manager stopping it would
        async with asyncio.timeout(10):
            await stop.wait()


@pytest.mark.usefixtures("no_sighup", "in_process")
def test_run_starts_and_stops_without_sighup(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.runtime

    monkeypatch.setattr(agent.runtime, "Agent", FakeAgent)
    FakeAgent.started.clear()
    assert cli.main(["run", "-c", str(CONFIG)]) == cli.EXIT_OK
    assert len(FakeAgent.started) == 1


class FakeIngest:
    started = 0

    def __init__(self, cfg: Any) -> None:
        pass

    async def run(self) -> None:
        FakeIngest.started += 1
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()  # cancelled by the command on stop


@pytest.mark.usefixtures("no_sighup", "in_process")
def test_ingest_starts_and_stops_without_sighup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import agent.ingest.service

    monkeypatch.setattr(agent.ingest.service, "IngestService", FakeIngest)
    config = tmp_path / "ingest.toml"
    config.write_text('[influxdb]\ntoken = "user:a-long-enough-secret"\n'
                      f'[ingest]\ndead_letter_path = "{tmp_path / "dead.jsonl"}"\n'
                      "[health]\nenabled = false\n")
    FakeIngest.started = 0
    assert cli.main(["ingest", "-c", str(config)]) == cli.EXIT_OK
    assert FakeIngest.started == 1


@pytest.mark.usefixtures("no_sighup")
async def test_on_signal_skips_a_signal_the_platform_lacks() -> None:
    assert on_signal("SIGHUP", lambda: None) is False
    assert on_signal("SIGUSR1", lambda: None) is True
    asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)


def test_stop_signals_work_where_the_loop_cannot_watch_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on Windows: add_signal_handler raises NotImplementedError, yet SIGTERM still
    stops the command in order, and the previous handler is back afterwards."""

    def not_implemented(self: object, sig: int, callback: object, *args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(asyncio.SelectorEventLoop, "add_signal_handler", not_implemented)
    monkeypatch.delattr(signal, "SIGHUP")
    before = signal.getsignal(signal.SIGTERM)
    stopped: list[bool] = []

    async def main(stop: asyncio.Event) -> None:
        assert not on_signal("SIGTERM", stop.set)
        signal.raise_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await stop.wait()
        stopped.append(True)

    asyncio.run(run_until_signal(main))
    assert stopped == [True]
    assert signal.getsignal(signal.SIGTERM) == before

"""`edge-agent demo` in a terminal, looked at as a person sees it: a 100-column tmux pane.

The table is refreshed in place (one table on the screen and in the scroll-back, not a
new copy per window), fits the 100 columns (no line wraps), and the log shows below it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
COLUMNS = 100
TITLE = "KPIs of the latest closed window"
EXITED = "demo exited with"


class Pane:
    """One detached tmux session on a private server socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                             text=True, timeout=30, check=True)
        return res.stdout

    def screen(self) -> list[str]:
        """Everything the pane showed, scroll-back included, wrapped lines joined (-J), so
        a line that did not fit would come back longer than the pane."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "demo").splitlines()

    def wait_for(self, what: str, predicate: Callable[[list[str]], bool],
                 timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.screen()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout_s:.0f} s; the pane shows:\n"
                            + "\n".join(lines))
            time.sleep(0.2)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    if shutil.which("tmux") is None:
        assert not IN_CI, "CI must have tmux (scripts/test installs it)"
        pytest.skip("tmux is not installed")
    p = Pane(tmp_path / "tmux.sock")
    yield p
    subprocess.run(["tmux", "-S", str(p.socket), "kill-server"], capture_output=True,
                   timeout=30)


def _records(lines: list[str]) -> int:
    counts = [int(m.group(1)) for line in lines
              if (m := re.search(rf"{TITLE}.* \((\d+) records\)", line))]
    return max(counts, default=0)


def test_demo_in_a_terminal_refreshes_one_table_with_the_log_below(
        pane: Pane, tmp_path: Path) -> None:
    demo = shlex.join([sys.executable, "-m", "agent.cli", "demo", "--duration", "24",
                       "--window", "3s", "--broker", "embedded",
                       "--state-dir", str(tmp_path / "state")])
    # The tmux server inherits pytest's environment, whose COLUMNS would override the
    # pane's width; a person's terminal exports none.
    command = (f"cd {shlex.quote(str(tmp_path))} && env -u COLUMNS -u LINES {demo}; "
               f"echo \"{EXITED} $?\"; sleep 600")
    pane.tmux("new-session", "-d", "-s", "demo", "-x", str(COLUMNS), "-y", "50",
              "-e", f"PYTHONPATH={REPO}", "-e", "TERM=xterm-256color", command)

    # While it runs: the table is refreshed with more records, and there is still one.
    first = pane.wait_for("first table", lambda ls: _records(ls) > 0, 90)
    later = pane.wait_for("refreshed table", lambda ls: _records(ls) > _records(first), 60)
    assert sum(TITLE in line for line in later) == 1, "\n".join(later)

    lines = pane.wait_for("end of the demo", lambda ls: any(EXITED in x for x in ls), 120)
    text = "\n".join(lines)
    assert f"{EXITED} 0" in text, text
    assert sum(TITLE in line for line in lines) == 1, text
    assert all(len(line) <= COLUMNS for line in lines), max(lines, key=len)

    title = next(i for i, line in enumerate(lines) if TITLE in line)
    header = next(i for i, line in enumerate(lines) if re.search(r"state +OEE ", line))
    rows = [line for line in lines[header:] if re.match(r"^\s*cnc-0[12]\s", line)]
    assert title < header and len(rows) == 2, text
    for row in rows:  # state, the eight figures and parts/scrap whole on the row's line
        assert re.match(r"^\s*cnc-0\d\s+[a-z_]+(\s+(\d+\.\d+|-)){8}\s+\d+/\d+(\s|$)", row), row
    log_title = next(i for i, line in enumerate(lines) if re.match(r"^\W*log\W", line))
    assert log_title > header, text
    logged = [line for line in lines[log_title + 1:]
              if re.search(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line)]
    assert logged, text
    summary = next(i for i, line in enumerate(lines) if line.strip() == "Summary")
    assert summary > log_title, text
    assert "Traceback" not in text, text

"""PDF from the HTML report, printed by headless Chromium (Debian package ``chromium``).

Chromium lays the page out exactly as a browser shows the HTML (its print style sets A4),
with the system's fonts: Chinese text needs a CJK font installed (Debian
``fonts-noto-cjk`` or ``fonts-wqy-zenhei``). It runs with a throw-away profile, on a
local file, and fetches nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent.reporting.errors import RendererError

__all__ = ["CHROMIUM_NAMES", "chromium_command", "find_chromium", "html_to_pdf"]

CHROMIUM_NAMES = ("chromium", "chromium-browser")

_TIMEOUT_S = 120.0


def find_chromium() -> str | None:
    """The Chromium binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(binary: str, profile: Path, *args: str) -> list[str]:
    """A headless Chromium command line with its own ``profile`` directory."""
    command = [binary, "--headless", "--disable-gpu", "--no-first-run",
               "--disable-extensions", "--disable-background-networking",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    return [*command, *args]


def html_to_pdf(html: str) -> bytes:
    """``html`` printed to PDF; a RendererError naming the Debian package
    when Chromium is absent, or saying what Chromium printed when it failed."""
    binary = find_chromium()
    if binary is None:
        raise RendererError("--format pdf needs headless Chromium: install the Debian "
                            "package chromium (apt-get install chromium), or write "
                            "--format html and print it from a browser")
    with tempfile.TemporaryDirectory(prefix="edge-agent-pdf-") as tmp:
        source = Path(tmp) / "report.html"
        source.write_text(html, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        command = chromium_command(binary, Path(tmp) / "profile", "--no-pdf-header-footer",
                                   f"--print-to-pdf={target}", source.as_uri())
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as err:
            raise RendererError(f"{binary} did not print the PDF within "
                                f"{_TIMEOUT_S:g} s") from err
        if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RendererError(f"{binary} could not print the PDF (exit {done.returncode}): "
                                + " | ".join(tail))
        return target.read_bytes()

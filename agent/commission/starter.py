"""``edge-agent init``: write a commented starter config.

Commissioning starts from a file that already has every table in its place and says in
comments what each key is for; the examples shipped in the package (:mod:`agent.examples`)
are those files. The one written is never an existing file overwritten by accident:
that takes ``--force``.

Exit codes: 0 written, 2 bad arguments or the file exists, 1 it cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from agent.examples import EXAMPLES, example_text
from rules.errors import InputError

__all__ = ["DEFAULT_EXAMPLE", "DESCRIPTION", "add_arguments", "next_steps", "run", "write"]

EXIT_OK = 0
DEFAULT_EXAMPLE = "simulators"
DESCRIPTION = """\
Write a commented starter config: one of the examples shipped with the agent.

""" + "\n".join(f"  {name:13} {what}" for name, what in EXAMPLES.items()) + """

The file is written to -o PATH (default agent.toml in the current directory); an
existing file is refused unless --force is given. Then edit it, and check it with
`edge-agent check-config`, read every signal once with `edge-agent test`, and start the
agent with `edge-agent run`.

Exit codes: 0 written, 2 bad arguments or the file exists, 1 it cannot be written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``init`` subcommand's options (for ``agent/cli.py``)."""
    parser.add_argument("--example", choices=list(EXAMPLES), default=DEFAULT_EXAMPLE,
                        help=f"which starter config (default {DEFAULT_EXAMPLE})")
    parser.add_argument("-o", "--output", type=Path, default=Path("agent.toml"),
                        metavar="PATH", help="where to write it (default ./agent.toml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def write(example: str, path: Path, *, force: bool = False) -> None:
    """Write example ``example`` to ``path``; InputError when the file exists (without
    ``force``) or the directory does not, OSError when it cannot be written."""
    text = example_text(example)
    if path.is_dir():
        raise InputError(f"-o: {path} is a directory; name the file to write")
    if not path.parent.is_dir():
        raise InputError(f"-o: directory {path.parent} does not exist")
    if force:
        path.write_text(text, encoding="utf-8")
        return
    try:
        # Exclusive create: a file that appears meanwhile is refused too, never replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:
        raise InputError(f"{path} exists; give --force to overwrite it, or -o another "
                         "path") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def next_steps(example: str, path: Path) -> list[str]:
    """What to do with the file written, in the order of docs/commissioning.md."""
    steps: list[tuple[str, str]] = []
    if example == "simulators":
        steps.append(("edge-agent sim plant", "the simulators, in another terminal"))
    else:
        steps.append((f"edit {path}", "endpoints, node ids or registers, your machines' ids"))
    steps += [
        (f"edge-agent check-config -c {path}", "every key checked, errors by place"),
        (f"edge-agent test -c {path}", "every signal read once, as run reads it"),
        (f"edge-agent run -c {path}", ""),
    ]
    width = max(len(cmd) for cmd, _ in steps)
    lines = [f"wrote {path} (example {example}: {EXAMPLES[example]})", "next:"]
    lines += [f"  {cmd:{width}}  # {why}" if why else f"  {cmd}" for cmd, why in steps]
    return lines


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run with the namespace parsed by :func:`add_arguments`."""
    stdout = out or sys.stdout
    write(args.example, args.output, force=args.force)
    for line in next_steps(args.example, args.output):
        print(line, file=stdout)
    return EXIT_OK

"""Small asyncio helpers shared by the commands, portable to Windows.

Signals are looked up by name: ``signal.SIGHUP`` does not exist on Windows, and a bare
reference to it would end ``run`` there before it started. Windows event loops cannot
watch signals either (``add_signal_handler`` raises NotImplementedError), so Ctrl-C and
SIGTERM fall back to a plain ``signal.signal`` handler that hands over to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["on_signal", "run_until_signal"]

_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Ctrl-Break, Windows only


def on_signal(name: str, callback: Callable[[], object]) -> bool:
    """Run ``callback`` on the running loop whenever signal ``name`` arrives.

    Returns False, and changes nothing, where the platform has no such signal or the loop
    cannot watch signals (Windows, a loop outside the main thread).
    """
    number = getattr(signal, name, None)
    if number is None:
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(number, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGINT/SIGTERM (and Ctrl-Break) set ``stop`` so it can shut
    down in order, on every platform."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    restore: list[tuple[int, Any]] = []

    def from_signal_module(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for name in _STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is None or on_signal(name, stop.set):
            continue
        with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing to do
            restore.append((number, signal.signal(number, from_signal_module)))
    try:
        await main(stop)
    finally:
        for number, previous in restore:
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(number, previous)

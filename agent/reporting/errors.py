"""The report's own failure: a renderer it needs is missing or failed (exit 1)."""

from __future__ import annotations

from rules.errors import ServiceError

__all__ = ["RendererError"]


class RendererError(ServiceError):
    """A renderer the chosen format needs (headless Chromium, openpyxl) is not installed
    or did not produce the file; the message says what to install."""

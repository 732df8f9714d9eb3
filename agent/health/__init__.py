"""Health and metrics over HTTP on a local port: ``/healthz``, ``/readyz``, ``/metrics``.

``settings`` is the ``[health]`` config table, ``status`` what is reported (readiness
checks and metrics, read from the runtime and the ingest through small Protocols), and
``http`` the endpoint itself.

Only the settings are imported with the package: every config load needs them, while
the endpoint (and ``prometheus_client`` with it) is loaded when a name of ``status`` or
``http`` is first used, so commands that never serve it do not pay for its imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agent.health.settings import HealthSettings

if TYPE_CHECKING:
    from agent.health.http import HealthServer, serve_health
    from agent.health.status import (
        AgentStatus,
        AgentView,
        Check,
        HealthSnapshot,
        IngestStatus,
        IngestView,
        StatusProvider,
    )

__all__ = [
    "AgentStatus",
    "AgentView",
    "Check",
    "HealthServer",
    "HealthSettings",
    "HealthSnapshot",
    "IngestStatus",
    "IngestView",
    "StatusProvider",
    "serve_health",
]

_LAZY = {
    "AgentStatus": "status", "AgentView": "status", "Check": "status",
    "HealthSnapshot": "status", "IngestStatus": "status", "IngestView": "status",
    "StatusProvider": "status", "HealthServer": "http", "serve_health": "http",
}


def __getattr__(name: str) -> object:
    """Import the submodule holding ``name`` on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

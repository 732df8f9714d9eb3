"""Configuration: TOML files loaded into validated, immutable models.

Two layers: each item by its own model (``model.py``), then the whole file
(``validate.py``). ``load_agent_config`` is what ``run`` and ``check-config`` use;
``kpi_only=True`` is the offline ``kpi`` command's view, which needs only the KPI keys.
"""

from __future__ import annotations

from pathlib import Path

from agent.config.load import load_model
from agent.config.model import AgentConfig
from agent.config.validate import check_agent, check_kpi


def load_agent_config(path: Path, *, kpi_only: bool = False) -> AgentConfig:
    """Load and validate ``agent.toml``; raises ``ConfigError`` listing every problem."""
    return load_model(path, AgentConfig, check_kpi if kpi_only else check_agent)


__all__ = ["AgentConfig", "load_agent_config"]

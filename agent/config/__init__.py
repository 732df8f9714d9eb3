"""Configuration: TOML files loaded into validated, immutable models.

Three layers: each item by its own model (``model.py``), then the whole file
(``validate.py``), then what the file needs on the host and from the collectors
(``preflight.py``: environment variables, TLS and certificate files, the collectors'
validation of the specs built from it). ``load_run_config`` is what ``run`` starts from
and ``check-config`` checks, so the two cannot disagree; ``load_agent_config`` stops
after the file itself (``kpi_only=True`` is the offline ``kpi`` command's view, which
needs only the KPI keys).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.load import load_model
from agent.config.model import AgentConfig
from agent.config.validate import check_agent, check_kpi
from rules.errors import ConfigError

if TYPE_CHECKING:
    from agent.ingest.config import IngestConfig


def load_agent_config(path: Path, *, kpi_only: bool = False) -> AgentConfig:
    """Load and validate ``agent.toml`` as a file; raises ``ConfigError`` listing every
    problem."""
    return load_model(path, AgentConfig, check_kpi if kpi_only else check_agent)


def load_run_config(path: Path, *, host: bool = True) -> AgentConfig:
    """``agent.toml`` with every check ``run`` makes before it starts.

    ``host=False`` skips what depends on the machine (environment variables, files): for
    checking a file elsewhere than where it runs.
    """
    # Imported here: these checks build the collectors and read certificates (asyncua,
    # pymodbus, cryptography), which the offline commands must not pay for.
    from agent.config.preflight import check_runtime

    return load_model(path, AgentConfig, partial(check_runtime, host=host))


def load_ingest_run_config(path: Path, *, host: bool = True) -> IngestConfig:
    """``ingest.toml`` with every check ``ingest`` makes before it starts."""
    from agent.config.preflight import check_ingest_runtime
    from agent.ingest.config import load_ingest_config

    cfg = load_ingest_config(path)
    problems = check_ingest_runtime(cfg, host=host)
    if problems:
        raise ConfigError(problems, source=str(path))
    return cfg


__all__ = ["AgentConfig", "load_agent_config", "load_ingest_run_config", "load_run_config"]

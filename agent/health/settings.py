"""``[health]``: where the health and metrics endpoint listens."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HealthSettings"]


class HealthSettings(BaseModel):
    """``[health]`` of ``agent.toml`` and ``ingest.toml``: where the endpoint listens.

    Defined on plain pydantic (not ``agent.config``) so the config models can import it
    without an import cycle; it follows the same rules as every config model: unknown
    keys are errors and the value is immutable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True)
    """Serve the endpoint at all; off where nothing scrapes it or the port cannot be had."""
    host: str = Field(default="127.0.0.1", min_length=1)
    """Address to listen on; loopback by default, since the endpoint has no authentication
    (``0.0.0.0`` exposes it to the network)."""
    port: int = Field(default=9464, ge=0, le=65535)
    """0 picks a free port (tests); 9464 is the port commonly used for OpenTelemetry/
    Prometheus exporters."""

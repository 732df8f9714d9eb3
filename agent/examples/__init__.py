"""The commented example configs, shipped inside the package.

``edge-agent init`` writes one of them as a starter config wherever the agent is
installed (a wheel carries no ``deploy/`` folder); ``deploy/examples/`` in the source tree
links to these same files. Each passes ``check-config`` (the tests check it).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["EXAMPLES", "example_text"]

EXAMPLES: dict[str, str] = {
    "simulators": "the bundled simulators (edge-agent sim plant) and a local broker",
    "small-plant": "CNC machines over OPC UA, meters over Modbus TCP, shifts, tariff",
    "opcua-secure": "a CNC machine over signed and encrypted OPC UA with a password",
    "modbus-rtu": "meters on an RS-485 bus and behind an RTU-over-TCP device server",
}
"""Every example by name, with what it shows."""


def example_text(name: str) -> str:
    """The file of example ``name`` (a key of :data:`EXAMPLES`), as shipped."""
    if name not in EXAMPLES:
        raise KeyError(name)
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")

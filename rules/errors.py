"""The project's one exception hierarchy.

It lives beside the shared value types because every package may import ``rules``::

    EdgeAgentError
    ├── ConfigError          invalid configuration or scenario (exit code 2)
    ├── InputError           a bad sample line, payload or register value (names where)
    ├── DeviceError          a device could not be read (collectors; never fatal)
    │   └── DecodeError      registers that do not decode to the configured type
    ├── DeliveryError        broker or database refused or is unreachable
    ├── StorageError         local durable storage (outbox, journal) failed
    │   └── OutboxError      (agent.outbox) the outbox file could not be read or written
    └── ServiceError         a helper service (broker, database) failed to start

Library errors are wrapped at the boundary with ``raise ... from err``.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error the project raises on purpose."""


class ConfigError(EdgeAgentError):
    """Configuration (or scenario) that cannot be used; ``errors`` lists every problem found.

    Each entry is ``(place, message)`` where place reads like
    ``machines[2] "cnc-03": signals.energy_kwh``.
    """

    def __init__(self, errors: list[tuple[str, str]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        """All errors, one per line, each prefixed with the file when known."""
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(f"{prefix}{place}: {msg}" if place else f"{prefix}{msg}"
                         for place, msg in self.errors)


class InputError(EdgeAgentError):
    """A bad sample line, payload or value; the message names where it came from."""


class DeviceError(EdgeAgentError):
    """A device could not be reached or read; the collector marks it unavailable."""


class DecodeError(DeviceError):
    """Registers that do not decode to the configured data type."""


class DeliveryError(EdgeAgentError):
    """The broker or the database refused a message or could not be reached."""


class StorageError(EdgeAgentError):
    """Local durable storage failed (disk full, I/O error, corrupt file).

    Kept apart from :class:`DeliveryError`: a broker outage is expected and retried in the
    background, while a storage failure means data the agent already accepted is at risk.
    """


class ServiceError(EdgeAgentError):
    """A service the agent or a test starts (broker, database, simulator) did not come up."""

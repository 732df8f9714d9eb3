"""Data sources, one module per protocol: ``opcua.py``, ``modbus.py``.

Each module holds its source's config model and signal keys, the checks of both, the
construction of its collector (the one path ``check-config`` and ``run`` share) and the
keys a reload compares; :mod:`agent.sources.registry` maps a ``type`` to its module.
"""

# The config models are built from these modules: load agent.config first, so that
# whichever of the two is imported first, each finds the other's names defined.
import agent.config  # noqa: F401

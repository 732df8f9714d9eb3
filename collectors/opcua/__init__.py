"""OPC UA: subscriptions to CNC machines' servers, turned into samples.

- :mod:`~collectors.opcua.spec`: a source and its tags, parsing and validation (pure);
- :mod:`~collectors.opcua.session`: the collector (client, subscription, reconnect);
- :mod:`~collectors.opcua.convert`: DataValue -> Sample (pure);
- :mod:`~collectors.opcua.dedup`: dropping repeated and stale samples (pure);
- :mod:`~collectors.opcua.clock`: clock-skew episodes (pure);
- :mod:`~collectors.opcua.security`: the client certificate, server trust, refusals;
- :mod:`~collectors.opcua.endpoint`: the one endpoint, policy and trust set-up, shared
  by the collector and ``edge-agent browse``;
- :mod:`~collectors.opcua.logs`: keeping asyncua's per-retry records out of the log;
- :mod:`~collectors.opcua.opc40501`: the umati (OPC 40501-1) profile's browse names and
  state table (pure), :mod:`~collectors.opcua.profile`: a profile machine turned into
  tags at connect and its inputs into ``state``.

Clock skew: a SourceTimestamp more than ``max_clock_skew_s`` ahead of the receive time,
or behind it in a live notification, means the device clock is off. It is counted
(``CollectorStats.clock_skew`` and per device) and logged once per episode. By default
the sample keeps its quality and source timestamp (``clock_skew_action="flag"``): the
data is fine, only its time is doubtful, and a KPI engine that sees the count can flag
the window. With ``clock_skew_action="receive"`` such samples are stamped with the
receive time instead (``ts_source="receive"``).

A notification older than one already delivered for the same signal is dropped and
counted, since delivering it would move a cumulative counter backwards.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collectors.opcua.logs import quiet_asyncua_logs
    from collectors.opcua.session import OpcUaCollector
    from collectors.opcua.session import _ConnectionLost as _ConnectionLost
    from collectors.opcua.session import _Heard as _Heard
    from collectors.opcua.session import _SampleQueue as _SampleQueue
    from collectors.opcua.session import _Session as _Session
    from collectors.opcua.spec import Deadband, OpcUaSourceSpec, OpcUaTag, parse_browse_path

# Resolved on first use (PEP 562): the config models import the pure submodules of this
# package, and importing asyncua (seconds on a small industrial PC) only for them would
# make every command that reads a config as slow as one that connects.
_LAZY = {
    "quiet_asyncua_logs": "collectors.opcua.logs",
    "OpcUaCollector": "collectors.opcua.session",
    "_ConnectionLost": "collectors.opcua.session",
    "_Heard": "collectors.opcua.session",
    "_SampleQueue": "collectors.opcua.session",
    "_Session": "collectors.opcua.session",
    "Deadband": "collectors.opcua.spec",
    "OpcUaSourceSpec": "collectors.opcua.spec",
    "OpcUaTag": "collectors.opcua.spec",
    "parse_browse_path": "collectors.opcua.spec",
}


def __getattr__(name: str) -> Any:
    """The public names of the submodules, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Deadband", "OpcUaCollector", "OpcUaSourceSpec", "OpcUaTag", "parse_browse_path",
           "quiet_asyncua_logs"]

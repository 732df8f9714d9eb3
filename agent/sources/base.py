"""What every source type provides, and the helpers they share.

A source type is one protocol the agent reads devices over. Its module in
``agent/sources/`` holds everything the rest of the agent needs to know about it, so
loading, validation, the runtime and reload only loop over :mod:`agent.sources.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent.config.load import label
from agent.config.units import unit_factor
from rules.errors import ConfigError

if TYPE_CHECKING:
    from agent.config.common import StrictModel
    from agent.config.model import AgentConfig, SignalSection
    from collectors.base import Collector

Problems = list[tuple[str, str]]
"""``(place, message)`` pairs, the place as the config file names it."""

COMMON_MEANING_KEYS = ("source", "scale", "offset", "engineering_unit", "map")
"""Signal settings of every protocol that decide what a raw value means."""


class SourceType(Protocol):
    """One protocol: its config, its checks, its collector and its reload keys."""

    @property
    def name(self) -> str:
        """The ``type`` of ``[[sources]]`` that selects it (``"opcua"``)."""

    @property
    def title(self) -> str:
        """How messages name it (``"OPC UA"``)."""

    @property
    def section(self) -> type[StrictModel]:
        """The model of its ``[[sources]]`` item (a ``type: Literal[name]`` field)."""

    @property
    def address(self) -> type[StrictModel]:
        """The model of its signal keys (a mixin of ``SignalSection``)."""

    @property
    def address_keys(self) -> tuple[str, ...]:
        """Signal keys whose presence says a signal is addressed in this protocol."""

    @property
    def address_phrase(self) -> str:
        """What a signal of this protocol gives, for messages (``"node or browse_path"``)."""

    @property
    def endpoint_keys(self) -> tuple[str, ...]:
        """Source keys that point it at (possibly) another device: a change of one of
        them makes the counter baselines read through the source untrustworthy."""

    @property
    def meaning_keys(self) -> tuple[str, ...]:
        """Signal keys that decide which raw value is read (with ``COMMON_MEANING_KEYS``)."""

    @property
    def takes_presets(self) -> bool:
        """Whether a meter's ``preset`` (a register map) can be read through it."""

    def address_problem(self, sig: SignalSection) -> str | None:
        """Why a signal addressed in this protocol is malformed on its own (schema time)."""

    def endpoint(self, src: Any) -> str:
        """The device the source talks to; two sources on one endpoint are an error."""

    def check_file(self, cfg: AgentConfig, index: int, src: Any) -> Problems:
        """Whole-file checks of one source (timeouts against intervals, overrides)."""

    def check_signal(self, where: str, sig: SignalSection, src: Any) -> Problems:
        """Whole-file checks of one signal read through ``src``."""

    def check(self, cfg: AgentConfig, index: int, src: Any) -> Problems:
        """What the collector would refuse: :meth:`build`'s path without secrets."""

    def check_host(self, cfg: AgentConfig, index: int, src: Any) -> Problems:
        """What the files ``src`` points at on this host would refuse (certificates,
        trust lists), read as the collector reads them; only read, never created."""

    def build(self, cfg: AgentConfig, index: int, src: Any) -> Collector | None:
        """The collector of ``src`` (None when nothing reads through it); raises
        ConfigError naming config places."""


@dataclass(frozen=True, slots=True)
class SignalUse:
    """One signal read through a source, with its place in the config file."""

    place: str
    device: str
    role: str
    sig: SignalSection


def signal_uses(cfg: AgentConfig, source_id: str) -> list[SignalUse]:
    """Every configured signal of machines, then meters, that reads through a source."""
    out: list[SignalUse] = []
    items: list[tuple[str, list[Any]]] = [("machines", list(cfg.machines)),
                                          ("meters", list(cfg.meters))]
    for kind, entries in items:
        for i, item in enumerate(entries):
            for role in type(item.signals).model_fields:
                sig = getattr(item.signals, role)
                if sig is not None and sig.source == source_id:
                    out.append(SignalUse(f"{label(kind, i, item.id)}: signals.{role}",
                                         item.id, role, sig))
            for name, sig in getattr(item, "inputs", {}).items():  # a machine's state inputs
                if sig.source == source_id:
                    out.append(SignalUse(f"{label(kind, i, item.id)}: inputs.{name}",
                                         item.id, name, sig))
    return out


def scaling(role: str, sig: SignalSection) -> tuple[float, float]:
    """``(scale, offset)`` with the declared engineering unit folded in."""
    factor = unit_factor(role, sig.engineering_unit)
    return sig.scale * factor, sig.offset * factor


_S = TypeVar("_S")


def located(make: Callable[[], _S], rename: Mapping[str, str]) -> _S:
    """``make()``, with the places of the ConfigError it raises (a collector's, such as
    ``opcua source 'plc' tags[0] m.state``) renamed to config places where known."""
    try:
        return make()
    except ConfigError as err:
        raise ConfigError([(rename.get(where, where), msg) for where, msg in err.errors]
                          ) from err


def problems_of(make: Callable[[], object]) -> Problems:
    """The located problems ``make()`` raises, or none."""
    try:
        make()
    except ConfigError as err:
        return list(err.errors)
    return []

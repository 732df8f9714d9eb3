"""The source types the agent knows: the one place that maps a ``type`` to its module.

Adding a protocol is one module in ``agent/sources/`` (see :mod:`agent.sources.base`) and
one entry in each of the three names below; config loading, validation, the runtime
and reload only loop over :data:`SOURCE_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, get_args

from pydantic import Field

from agent.sources import modbus, opcua
from agent.sources.base import COMMON_MEANING_KEYS, SourceType

if TYPE_CHECKING:
    from agent.config.model import SignalSection

SOURCE_TYPES: Mapping[str, SourceType] = {t.name: t for t in (opcua.SOURCE, modbus.SOURCE)}
"""Every source type by its ``type`` key, in the order messages list them."""

SourceSection = Annotated[opcua.OpcUaSourceSection | modbus.ModbusSourceSection,
                          Field(discriminator="type")]
"""One ``[[sources]]`` item: the model its ``type`` selects (an unknown type is an error
naming the place and the known types)."""


class SignalAddress(modbus.ModbusAddress, opcua.OpcUaAddress):
    """The address keys of every source type, which a signal's keys are drawn from."""


_variants = get_args(get_args(SourceSection)[0])
if ({t.section for t in SOURCE_TYPES.values()} != set(_variants)
        or not all(issubclass(SignalAddress, t.address) for t in SOURCE_TYPES.values())):
    raise RuntimeError("SOURCE_TYPES, SourceSection and SignalAddress must list the same types")


def source_type(name: str) -> SourceType:
    """The source type of a ``type`` key (the models have refused any other)."""
    return SOURCE_TYPES[name]


def addressed_as(sig: SignalSection) -> list[SourceType]:
    """The source types whose address keys ``sig`` gives (one, for a sound signal)."""
    return [t for t in SOURCE_TYPES.values()
            if any(getattr(sig, key) is not None for key in t.address_keys)]


def address_problem(sig: SignalSection) -> str | None:
    """Why a signal's address is malformed on its own: it must use exactly one
    protocol's keys, well formed; checked when the file is read."""
    kinds = addressed_as(sig)
    if len(kinds) > 1:
        return "give either " + " or ".join(f"{t.title} {'/'.join(t.address_keys)}"
                                            for t in kinds)
    if not kinds:
        return "needs " + " or ".join(f"{'/'.join(t.address_keys)} ({t.title})"
                                      for t in SOURCE_TYPES.values())
    return kinds[0].address_problem(sig)


def meaning_keys() -> tuple[str, ...]:
    """Signal keys that decide which raw value is read and what it means, for every
    source type; the others only change how often it is reported."""
    return COMMON_MEANING_KEYS + tuple(
        key for t in SOURCE_TYPES.values() for key in t.meaning_keys)

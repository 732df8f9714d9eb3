"""Built-in register maps for common energy meters, selected by name in the config.

Every preset yields the roles the KPI engine reads (``energy_kwh``, cumulative import
energy in kWh, and ``power_kw``, total active power in kW, converted via ``scale``)
plus a few diagnostic signals. Addresses are 0-based protocol addresses taken from the
vendors' published Modbus protocol documents; check them against the manual of the
firmware you deploy, since vendors occasionally move registers between revisions.

The bundled simulator serves the same three layouts (``simulators/registers.py``), and
the tests read every preset from it. The ``em24`` addresses were also checked against
two independent open-source EM24 drivers.
"""

from __future__ import annotations

from collections.abc import Callable

from collectors.modbus import RegisterPoint
from rules.errors import ConfigError

__all__ = ["PRESETS", "preset_points"]


def _sdm630(device: str) -> tuple[RegisterPoint, ...]:
    """Eastron SDM630 (v2/MCT): input registers, IEEE float32, high word first."""

    def f32(signal: str, address: int, scale: float = 1.0) -> RegisterPoint:
        return RegisterPoint(device, signal, "input", address, "f32", "big", "big", scale)

    return (
        f32("voltage_l1", 0x0000),
        f32("voltage_l2", 0x0002),
        f32("voltage_l3", 0x0004),
        f32("current_l1", 0x0006),
        f32("current_l2", 0x0008),
        f32("current_l3", 0x000A),
        f32("power_kw", 0x0034, 0.001),  # total system power, W -> kW
        f32("power_factor", 0x003E),
        f32("frequency_hz", 0x0046),
        f32("energy_kwh", 0x0048),  # total import active energy, kWh
        f32("export_energy_kwh", 0x004A),
    )


def _em24(device: str) -> tuple[RegisterPoint, ...]:
    """Carlo Gavazzi EM24 (DIN and Ethernet): INT32 low word first and INT16, function 03.

    Weights per the vendor's protocol: V x10, A x1000, W x10, PF x1000, Hz x10, kWh x10.
    """

    def i32(signal: str, address: int, scale: float) -> RegisterPoint:
        return RegisterPoint(device, signal, "holding", address, "i32", "little", "big", scale)

    return (
        i32("voltage_l1", 0x0000, 0.1),
        i32("voltage_l2", 0x0002, 0.1),
        i32("voltage_l3", 0x0004, 0.1),
        i32("current_l1", 0x000C, 0.001),
        i32("current_l2", 0x000E, 0.001),
        i32("current_l3", 0x0010, 0.001),
        i32("power_kw", 0x0028, 0.1 * 0.001),  # W sys x10 -> kW
        RegisterPoint(device, "power_factor", "holding", 0x0031, "i16", scale=0.001),
        RegisterPoint(device, "frequency_hz", "holding", 0x0033, "i16", scale=0.1),
        i32("energy_kwh", 0x0034, 0.1),  # kWh (+) TOT x10
        i32("export_energy_kwh", 0x004E, 0.1),  # kWh (-) TOT x10
    )


def _scaled32(device: str, resolution_kwh: float = 0.01) -> tuple[RegisterPoint, ...]:
    """Generic scaled-integer meter: holding registers (function 03), 32-bit integers with
    the low word first, each word big-endian.

    The energy register counts resolution steps (``resolution_kwh`` per step, the meter's
    resolution from the config; the meter also reports it in mWh at 0x0014). Power is
    signed 0.1 W, voltages 0.1 V, currents mA, power factor 0.001, frequency 0.01 Hz.
    """

    def u32(signal: str, address: int, scale: float) -> RegisterPoint:
        return RegisterPoint(device, signal, "holding", address, "u32", "little", "big", scale)

    def i32(signal: str, address: int, scale: float) -> RegisterPoint:
        return RegisterPoint(device, signal, "holding", address, "i32", "little", "big", scale)

    return (
        u32("energy_kwh", 0x0000, resolution_kwh),
        i32("power_kw", 0x0002, 0.1 * 0.001),  # 0.1 W -> kW
        u32("voltage_l1", 0x0004, 0.1),
        u32("voltage_l2", 0x0006, 0.1),
        u32("voltage_l3", 0x0008, 0.1),
        u32("current_l1", 0x000A, 0.001),
        u32("current_l2", 0x000C, 0.001),
        u32("current_l3", 0x000E, 0.001),
        i32("power_factor", 0x0010, 0.001),
        u32("frequency_hz", 0x0012, 0.01),
    )


def _fixed(builder: Callable[[str], tuple[RegisterPoint, ...]]) -> _Builder:
    def build(device: str, resolution_kwh: float | None) -> tuple[RegisterPoint, ...]:
        return builder(device)

    return build


def _with_resolution(device: str, resolution_kwh: float | None) -> tuple[RegisterPoint, ...]:
    return _scaled32(device, resolution_kwh if resolution_kwh is not None else 0.01)


_Builder = Callable[[str, "float | None"], tuple[RegisterPoint, ...]]

PRESETS: dict[str, _Builder] = {
    "sdm630": _fixed(_sdm630),
    "em24": _fixed(_em24),
    "scaled32": _with_resolution,
}
"""Preset name -> builder of that meter's points for a device id and its resolution."""


def preset_points(
    preset: str, device: str, *, resolution_kwh: float | None = None
) -> tuple[RegisterPoint, ...]:
    """The register points of meter model ``preset`` for ``device``.

    ``resolution_kwh`` is the meter's energy resolution, needed by presets whose energy
    register counts steps (``scaled32``; default 0.01 kWh) and ignored by the others.
    Raises :class:`ConfigError` naming the known presets, so config validation can
    report it beside the other problems of the file.
    """
    try:
        builder = PRESETS[preset.lower()]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        msg = f"unknown meter preset {preset!r}; known: {known}"
        raise ConfigError([("preset", msg)]) from None
    return builder(device, resolution_kwh)

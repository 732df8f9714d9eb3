"""Built-in register maps for common energy meters, selected by name in the config.

Every preset yields the roles the KPI engine reads (``energy_kwh``, cumulative import
energy in kWh, and ``power_kw``, total active power in kW, converted via ``scale``)
plus a few diagnostic signals. Addresses are 0-based protocol addresses taken from the
vendors' published Modbus protocol documents; check them against the manual of the
firmware you deploy, since vendors occasionally move registers between revisions.

The bundled simulator serves the same layouts (``simulators/registers.py``), and the
tests read every preset from it. The ``em24`` addresses were also checked against two
independent open-source EM24 drivers; each of the other presets says in its docstring
which public documents and drivers its addresses come from and what is unverified.

Meters behind current or voltage transformers: ``dtsu666`` and ``adl400`` report
secondary-side values in the registers these presets read (multiply by the CT and PT
ratios, which both presets read as diagnostics; see each preset for its energy
register), so the presets are right as they are for directly connected meters (ratios
1). ``pm5xxx`` and ``pac3200`` report primary-side values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from collectors.modbus import RegisterPoint, Table
from rules.errors import ConfigError

__all__ = ["PRESETS", "preset_points"]

Order = Literal["big", "little"]


class _Maker(Protocol):
    def __call__(self, signal: str, number: int, scale: float = 1.0) -> RegisterPoint: ...


def _points(device: str, table: Table, dtype: str, word_order: Order = "big",
            base: int = 0) -> _Maker:
    """A maker of one register map's points: the table, type and word order a vendor uses
    for all of them, and ``base`` added to each documented number (-1 for 1-based maps)."""

    def point(signal: str, number: int, scale: float = 1.0) -> RegisterPoint:
        return RegisterPoint(device, signal, table, number + base, dtype, word_order, "big",
                             scale)

    return point


def _sdm630(device: str) -> tuple[RegisterPoint, ...]:
    """Eastron SDM630 (v2/MCT): input registers, IEEE float32, high word first."""

    f32 = _points(device, "input", "f32")

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

    i32 = _points(device, "holding", "i32", "little")

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

    u32 = _points(device, "holding", "u32", "little")
    i32 = _points(device, "holding", "i32", "little")

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


def _dtsu666(device: str) -> tuple[RegisterPoint, ...]:
    """CHINT DTSU666 (three-phase, four-wire): holding registers (function 03), IEEE
    float32 high word first, in the units of CHINT's Modbus table.

    The instantaneous floats count 0.1 V, 0.001 A, 0.1 W, 0.001 (power factor) and
    0.01 Hz, on the meter's secondary side: times IrAt (0x0006, current ratio) and
    UrAt (0x0007, voltage ratio in 0.1) for the primary side. The energy is ImpEp at
    0x401E, float32 kWh.

    Sources: CHINT's DTSU666 user manual (Modbus table, ZTY0.464.1448: the 0x0000 block
    with IrAt/UrAt and the 0.1 ratio unit); the aggsoft DTSU666 register map and an
    open-source pymodbus driver (0x2000 block, 0x401E ImpEp, and the 0.1/0.001/0.01
    scaling); nymea's CHINT plug-in (the same 0x2000 addresses and scaling, primary side
    = secondary x ratios). Unverified: nymea and two DTSU666 emulators read the import
    energy at 0x101E and multiply it by both ratios, the others read 0x401E unscaled;
    the public CHINT documents do not settle which of the two blocks is the primary side
    on which firmware. With ratios 1 (direct connection) both hold the same value.
    """

    f32 = _points(device, "holding", "f32")

    return (
        f32("voltage_l1", 0x2006, 0.1),
        f32("voltage_l2", 0x2008, 0.1),
        f32("voltage_l3", 0x200A, 0.1),
        f32("current_l1", 0x200C, 0.001),
        f32("current_l2", 0x200E, 0.001),
        f32("current_l3", 0x2010, 0.001),
        f32("power_kw", 0x2012, 0.1 * 0.001),  # Pt, 0.1 W -> kW
        f32("power_factor", 0x202A, 0.001),  # PFt
        f32("frequency_hz", 0x2044, 0.01),
        f32("energy_kwh", 0x401E),  # ImpEp, kWh
        f32("export_energy_kwh", 0x4028),  # ExpEp, kWh
        RegisterPoint(device, "ct_ratio", "holding", 0x0006, "i16"),  # IrAt
        RegisterPoint(device, "pt_ratio", "holding", 0x0007, "i16", scale=0.1),  # UrAt
    )


def _adl400(device: str) -> tuple[RegisterPoint, ...]:
    """Acrel ADL400 (three-phase DIN-rail meter): holding registers (function 03),
    integers high word first, secondary-side values.

    Energy is the forward (import) active total energy at 0x000A, u32 in 0.01 kWh, not
    the "combined" total at 0x0000 (forward and reverse combined by the meter's setting).
    Voltages u16 0.1 V, currents u16 0.01 A, frequency u16 0.01 Hz, powers i32 W,
    power factor i16 0.001. Primary side = value x PT (0x008D) x CT (0x008E).

    Sources: Acrel's ADL3000-E manual (same family: 0x0000 current total, 0x000A forward
    active total, "E = data x PT x CT x 0.01 kWh"), the aggsoft ADL3000 map (0x000A
    import, 0x0061/0x0064/0x0077), an open-source ADL400 driver written from the
    ADL400 manual (all addresses and scales here), and SmartEVSE's ADL400 profile (0x0064
    0.01 A, 0x016A i32 W, 32-bit 0.01 kWh energy). Unverified: the PT/CT and power-factor
    addresses come from that one driver only; newer ADL400 firmware also has a
    primary-side block (floats from 0x0800, energy u32 0.1 kWh from 0x0842) that this
    preset does not use.
    """

    u16 = _points(device, "holding", "u16")
    u32 = _points(device, "holding", "u32")

    return (
        u32("energy_kwh", 0x000A, 0.01),  # forward active total energy, 0.01 kWh
        u32("export_energy_kwh", 0x0014, 0.01),  # reverse active total energy
        u16("voltage_l1", 0x0061, 0.1),
        u16("voltage_l2", 0x0062, 0.1),
        u16("voltage_l3", 0x0063, 0.1),
        u16("current_l1", 0x0064, 0.01),
        u16("current_l2", 0x0065, 0.01),
        u16("current_l3", 0x0066, 0.01),
        u16("frequency_hz", 0x0077, 0.01),
        u16("pt_ratio", 0x008D),
        u16("ct_ratio", 0x008E),
        RegisterPoint(device, "power_kw", "holding", 0x016A, "i32", "big", "big", 0.001),
        RegisterPoint(device, "power_factor", "holding", 0x017F, "i16", scale=0.001),
    )


def _pm5xxx(device: str) -> tuple[RegisterPoint, ...]:
    """Schneider Electric PowerLogic PM5100/PM5300/PM5500: holding registers (function
    03), float32 and int64 high word first, primary-side values.

    Schneider's register list numbers registers from 1; the protocol address here is
    that number minus 1 (register 3060, Active Power Total, is address 3059). Energy is
    Active Energy Delivered (Into Load), register 3204, INT64 in Wh (exact; the float32
    kWh copy at register 2700 cannot carry 0.01 kWh steps above 65,536 kWh). Power is
    Active Power Total in kW. Power factor is register 3084, Power Factor Total in
    Schneider's four-quadrant encoding: a consuming inductive load (quadrant 1) reads
    its power factor directly, a leading one reads 2 - PF.

    Sources: Schneider's PM5100/PM5300 public register list (its numbering from 1), the
    PowerLogic profile of an open-source metering protocol library (3204 INT64 Wh, 3060
    float32 kW, 1-based), a PM2xxx/EM6400 profile of the same register family (3000
    current, 3028 voltage, 3110 frequency, 3078 power factor A, number - 1 on the wire)
    and a PM5110 template checked on hardware (3059, 3109, 2699 as 0-based addresses).
    Unverified: the metering addresses come from those implementations, not from
    Schneider's list itself; Power Factor Total at 3084 follows the 3078/3080/3082 phase
    pattern (the same template reads a plain float at register 3192 instead); whether
    every PM5100 firmware has the INT64 energy registers.
    """

    f32 = _points(device, "holding", "f32", base=-1)
    i64 = _points(device, "holding", "i64", base=-1)

    return (
        f32("current_l1", 3000),
        f32("current_l2", 3002),
        f32("current_l3", 3004),
        f32("voltage_l1", 3028),  # Voltage A-N
        f32("voltage_l2", 3030),
        f32("voltage_l3", 3032),
        f32("power_kw", 3060),  # Active Power Total, kW
        f32("power_factor", 3084),  # Power Factor Total, 4Q FP PF
        f32("frequency_hz", 3110),
        i64("energy_kwh", 3204, 0.001),  # Active Energy Delivered (Into Load), Wh -> kWh
        i64("export_energy_kwh", 3208, 0.001),  # Active Energy Received (Out of Load)
    )


def _pac3200(device: str) -> tuple[RegisterPoint, ...]:
    """Siemens SENTRON PAC3200: input registers (function 04), IEEE float32 and float64
    high word first, primary-side values.

    The manual's offsets are the protocol addresses themselves (voltage L1-N is offset
    1, read at address 1; there is no register 0). Measured values are float32 in V, A,
    W and Hz; the energy is Active energy import tariff 1 at 801, a float64 in Wh.

    Sources: Tinkerforge's WARP firmware PAC3200 table (offsets 1..69 float32, 801
    float64 Wh, function 04), nymea's SENTRON PAC plug-in (the same float32 offsets of
    the PAC family, read with function 03) and a meter-template library (the same
    offsets; it reads 801 as a 64-bit integer, against the float64 of the others).
    Unverified: not checked against Siemens's manual itself; with a second tariff
    configured the import splits over 801 (tariff 1) and 805 (tariff 2), and this preset
    reads tariff 1 only; the counters can be reset on the meter, which the agent sees
    as a counter reset.
    """

    f32 = _points(device, "input", "f32")
    f64 = _points(device, "input", "f64")

    return (
        f32("voltage_l1", 1),
        f32("voltage_l2", 3),
        f32("voltage_l3", 5),
        f32("current_l1", 13),
        f32("current_l2", 15),
        f32("current_l3", 17),
        f32("frequency_hz", 55),
        f32("power_kw", 65, 0.001),  # total active power, W -> kW
        f32("power_factor", 69),  # total power factor
        f64("energy_kwh", 801, 0.001),  # active energy import tariff 1, Wh -> kWh
        f64("export_energy_kwh", 809, 0.001),  # active energy export tariff 1
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
    "dtsu666": _fixed(_dtsu666),
    "adl400": _fixed(_adl400),
    "pm5xxx": _fixed(_pm5xxx),
    "pac3200": _fixed(_pac3200),
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

"""Small inline-SVG charts: trend lines, a scatter with its fit line, grouped bars.

Drawn as text so the report stays one file that opens anywhere without a network or a
plotting library. Every chart is an ``<svg role="img">`` labelled by its ``<title>`` and
``<desc>`` (a screen reader states what it shows), axes carry visible text labels, and
series differ by marker shape and dash as well as colour, so they survive a grey-scale
print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["BASELINE_COLOR", "CURRENT_COLOR", "Series", "bar_chart", "line_chart",
           "nice_ticks", "scatter_chart"]

BASELINE_COLOR = "#8a96a3"
CURRENT_COLOR = "#1f5fa8"
_SHADE = "#eef1f4"
_GRID = "#dde2e7"
_INK = "#1c2630"
_MUTED = "#5b6875"
_FONT = 11


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a trend chart; ``None`` values leave a gap."""

    name: str
    values: Sequence[float | None]
    color: str = CURRENT_COLOR
    dash: str = ""
    marker: str = "circle"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _t(x: float, y: float, text: str, *, anchor: str = "start", size: int = _FONT,
       color: str = _INK, weight: str = "normal", rotate: bool = False) -> str:
    transform = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" '
            f'text-anchor="{anchor}" font-weight="{weight}"{transform}>{escape(text)}</text>')


def _marker(kind: str, x: float, y: float, color: str, size: float = 3.2) -> str:
    if kind == "none":
        return ""
    if kind == "square":
        return (f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" '
                f'height="{2 * size:.1f}" fill="{color}"/>')
    if kind == "diamond":
        s = size * 1.3
        return (f'<path d="M{x:.1f} {y - s:.1f}L{x + s:.1f} {y:.1f}L{x:.1f} {y + s:.1f}'
                f'L{x - s:.1f} {y:.1f}Z" fill="{color}"/>')
    if kind == "triangle":
        s = size * 1.3
        return (f'<path d="M{x:.1f} {y - s:.1f}L{x + s:.1f} {y + s * 0.8:.1f}'
                f'L{x - s:.1f} {y + s * 0.8:.1f}Z" fill="{color}"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" fill="{color}"/>'


def _open(chart_id: str, title: str, desc: str, width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'viewBox="0 0 {width} {height}" width="100%" '
            f'aria-labelledby="{chart_id}-t {chart_id}-d" '
            f'style="max-width:{width}px" font-family="inherit">',
            f'<title id="{chart_id}-t">{escape(title)}</title>',
            f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
            _t(4, 16, title, size=13, weight="bold")]


def _text_width(text: str, size: float = 10) -> float:
    """A generous estimate of a label's width (CJK glyphs are square, Latin ~0.6 em)."""
    return sum(size if ord(c) > 0x2E80 else size * 0.6 for c in text)


def _legend(items: Sequence[tuple[str, str, str, str]], x: float, y: float) -> list[str]:
    """Legend entries (name, colour, dash, marker) in a row from ``x``: a line with its
    marker, or a marker alone (``dot``, ``box``), or the baseline period's grey ``band``."""
    out: list[str] = []
    for name, color, dash, marker in items:
        if marker == "band":
            out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="22" height="10" '
                       f'fill="{_SHADE}" stroke="{_GRID}"/>')
        else:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            alone = {"dot": "circle", "box": "square"}
            if marker not in alone:
                out.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 22:.1f}" '
                           f'y2="{y - 4:.1f}" stroke="{color}" stroke-width="2"{dash_attr}/>')
            out.append(_marker(alone.get(marker, marker), x + 11, y - 4, color,
                               4.0 if marker == "box" else 3.2))
        out.append(_t(x + 26, y, name, size=10, color=_INK))
        x += 26 + _text_width(name) + 14
    return out


def _y_axis(ticks: Sequence[float], left: float, right: float, y_of: Callable[[float], float],
            fmt: Callable[[float], str]) -> list[str]:
    out: list[str] = []
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" '
                   f'stroke="{_GRID}" stroke-width="1"/>')
        out.append(_t(left - 6, y + 3.5, fmt(tick), anchor="end", size=10, color=_MUTED))
    return out


def line_chart(*, chart_id: str, title: str, desc: str, labels: Sequence[str],
               series: Sequence[Series], y_fmt: Callable[[float], str], y_label: str,
               shaded: tuple[int, int] | None, shaded_label: str, gap_after: int | None,
               no_data: str, right_axis: tuple[float, str, Callable[[float], str]] | None = None,
               width: int = 720, height: int = 250) -> str:
    """A trend: one point per label, the baseline's points (``shaded``, an inclusive index
    range) on a grey band, a wider step between the periods after index ``gap_after``.
    ``right_axis`` = (factor, label, format) adds a second scale (the same line in another
    unit, e.g. kgce = 0.1229 x kWh)."""
    left, right = 64.0, width - (64.0 if right_axis else 16.0)
    top, bottom = 46.0, height - 30.0
    out = _open(chart_id, title, desc, width, height)
    known = [v for s in series for v in s.values if v is not None]
    n = len(labels)
    if not known or n == 0:
        out.append(_t(width / 2, height / 2, no_data, anchor="middle", color=_MUTED))
        out.append("</svg>")
        return "\n".join(out)
    lo, hi = min(0.0, min(known)), max(known)
    ticks = nice_ticks(lo, hi)
    y_lo, y_hi = ticks[0], ticks[-1]

    def y_of(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    slots = n + (1 if gap_after is not None and gap_after < n - 1 else 0)
    step = (right - left) / max(1, slots)

    def x_of(i: int) -> float:
        extra = 1 if gap_after is not None and i > gap_after else 0
        return left + (i + extra + 0.5) * step

    legend = ([(s.name, s.color, s.dash, s.marker) for s in series] if len(series) > 1
              else [])
    if shaded is not None:
        x0, x1 = x_of(shaded[0]) - step / 2, x_of(shaded[1]) + step / 2
        out.append(f'<rect x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                   f'height="{bottom - top:.1f}" fill="{_SHADE}"/>')
        legend.append((shaded_label, _SHADE, "", "band"))
    out += _legend(legend, left, 34)
    out += _y_axis(ticks, left, right, y_of, y_fmt)
    out.append(_t(14, (top + bottom) / 2, y_label, anchor="middle", size=10, color=_MUTED,
                  rotate=True))
    if right_axis is not None:
        factor, label, fmt = right_axis
        for tick in nice_ticks(y_lo * factor, y_hi * factor):
            if tick <= y_hi * factor * (1 + 1e-9):
                out.append(_t(right + 6, y_of(tick / factor) + 3.5, fmt(tick), size=10,
                              color=_MUTED))
        out.append(_t(width - 8, (top + bottom) / 2, label, anchor="middle", size=10,
                      color=_MUTED, rotate=True))
    out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" '
               f'stroke="{_MUTED}" stroke-width="1"/>')
    every = max(1, math.ceil(n / 8))
    first = [0] if gap_after is None or gap_after >= n - 1 else [0, gap_after + 1]
    placed: list[float] = []
    label_w = max(_text_width(label) for label in labels) + 8
    for i in [*first, *range(0, n, every), n - 1]:
        x = min(x_of(i), right - label_w / 2)
        if any(abs(x - p) < label_w for p in placed):
            continue
        placed.append(x)
        out.append(_t(x, bottom + 14, labels[i], anchor="middle", size=10, color=_MUTED))
    if gap_after is not None and gap_after < n - 1:
        gx = (x_of(gap_after) + x_of(gap_after + 1)) / 2
        out.append(f'<line x1="{gx:.1f}" y1="{top:.1f}" x2="{gx:.1f}" y2="{bottom:.1f}" '
                   f'stroke="{_MUTED}" stroke-width="1" stroke-dasharray="2 3"/>')
    for s in series:
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None or (gap_after is not None and i == gap_after + 1):
                runs.append([])
            if v is not None:
                runs[-1].append((x_of(i), y_of(v)))
        for run in runs:
            if len(run) > 1:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                out.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" '
                           f'stroke-width="1.8"{dash}/>')
            if len(run) <= 40:
                out += [_marker(s.marker, x, y, s.color, 2.6) for x, y in run]
    out.append("</svg>")
    return "\n".join(out)


def scatter_chart(*, chart_id: str, title: str, desc: str,
                  baseline: Sequence[tuple[float, float]], current: Sequence[tuple[float, float]],
                  fit: tuple[float, float, float, float] | None, x_label: str, y_label: str,
                  names: tuple[str, str, str], no_data: str,
                  x_fmt: Callable[[float], str] = lambda v: f"{v:g}",
                  y_fmt: Callable[[float], str] = lambda v: f"{v:g}",
                  width: int = 720, height: int = 300) -> str:
    """Energy (y) against a driver (x): baseline windows as circles, reported windows as
    squares, and the baseline fit (slope, intercept, x_min, x_max) as a line over the
    range it was fitted on. ``names`` = (baseline, current, fit) for the legend."""
    left, right, top, bottom = 64.0, width - 16.0, 46.0, height - 44.0
    out = _open(chart_id, title, desc, width, height)
    points = [*baseline, *current]
    if not points:
        out.append(_t(width / 2, height / 2, no_data, anchor="middle", color=_MUTED))
        out.append("</svg>")
        return "\n".join(out)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))

    def x_of(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def y_of(v: float) -> float:
        return bottom - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    out += _y_axis(y_ticks, left, right, y_of, y_fmt)
    for tick in x_ticks:
        out.append(_t(x_of(tick), bottom + 14, x_fmt(tick), anchor="middle", size=10,
                      color=_MUTED))
    out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" '
               f'stroke="{_MUTED}" stroke-width="1"/>')
    out.append(_t((left + right) / 2, height - 8, x_label, anchor="middle", size=10,
                  color=_MUTED))
    out.append(_t(14, (top + bottom) / 2, y_label, anchor="middle", size=10, color=_MUTED,
                  rotate=True))
    out += [_marker("circle", x_of(x), y_of(y), BASELINE_COLOR, 3.0) for x, y in baseline]
    out += [_marker("square", x_of(x), y_of(y), CURRENT_COLOR, 2.8) for x, y in current]
    legend = [(names[0], BASELINE_COLOR, "", "dot"), (names[1], CURRENT_COLOR, "", "box")]
    if fit is not None:
        slope, intercept, x_min, x_max = fit
        out.append(f'<line x1="{x_of(x_min):.1f}" y1="{y_of(intercept + slope * x_min):.1f}" '
                   f'x2="{x_of(x_max):.1f}" y2="{y_of(intercept + slope * x_max):.1f}" '
                   f'stroke="{_INK}" stroke-width="1.6" stroke-dasharray="6 3"/>')
        legend.append((names[2], _INK, "6 3", "none"))
    out += _legend(legend, left, 34)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(*, chart_id: str, title: str, desc: str, categories: Sequence[str],
              baseline: Sequence[float | None], current: Sequence[float | None],
              fmt: Callable[[float], str], names: tuple[str, str], no_data: str,
              width: int = 720) -> str:
    """Horizontal grouped bars: per category a baseline bar (grey) above a current bar
    (blue), each with its value written at its end."""
    row = 30.0
    top = 50.0
    height = int(top + row * max(1, len(categories)) + 28)
    label_w = min(220.0, 16.0 + 7.0 * max((len(c) for c in categories), default=4))
    left, right = label_w, width - 80.0
    out = _open(chart_id, title, desc, width, height)
    known = [v for v in (*baseline, *current) if v is not None]
    if not known or not categories:
        out.append(_t(width / 2, height / 2, no_data, anchor="middle", color=_MUTED))
        out.append("</svg>")
        return "\n".join(out)
    ticks = nice_ticks(min(0.0, min(known)), max(known))

    def x_of(v: float) -> float:
        return left + (v - ticks[0]) / (ticks[-1] - ticks[0]) * (right - left)

    bottom = top + row * len(categories)
    for tick in ticks:
        x = x_of(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" '
                   f'stroke="{_GRID}" stroke-width="1"/>')
        out.append(_t(x, bottom + 14, fmt(tick), anchor="middle", size=10, color=_MUTED))
    for i, name in enumerate(categories):
        y = top + i * row
        out.append(_t(left - 8, y + row / 2 + 3, name, anchor="end", size=10))
        for j, (values, color) in enumerate(((baseline, BASELINE_COLOR),
                                              (current, CURRENT_COLOR))):
            v = values[i]
            by = y + 4 + j * 11
            if v is None:
                out.append(_t(left + 4, by + 9, "–", size=10, color=_MUTED))
                continue
            x0 = x_of(0.0 if ticks[0] <= 0 else ticks[0])
            x1 = x_of(v)
            out.append(f'<rect x="{min(x0, x1):.1f}" y="{by:.1f}" '
                       f'width="{max(0.5, abs(x1 - x0)):.1f}" height="10" fill="{color}"/>')
            out.append(_t(max(x0, x1) + 4, by + 9, fmt(v), size=9, color=_INK))
    out += _legend([(names[0], BASELINE_COLOR, "", "box"),
                    (names[1], CURRENT_COLOR, "", "box")], left, 34)
    out.append("</svg>")
    return "\n".join(out)

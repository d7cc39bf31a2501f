"""Small static SVG line charts for Markdown reports (no dependency beyond the standard library).

`line_chart` draws one or more series on shared axes, with "nice" ticks, axis labels, a title,
a legend on the right and, per series, an optional shaded band (a confidence interval, say).
Missing values (`None` or NaN) break a line into segments. The output is a standalone SVG
document (well-formed XML), readable on GitHub and in any browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

#: Colour-blind-friendly palette (Okabe and Ito), then a few more; cycled per series.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
    "#7F7F7F",
    "#8C564B",
)

Value = float | None
#: Series with at most this many points get a marker at each point.
MARKERS_UP_TO = 25


@dataclass(frozen=True)
class Series:
    """One line of a chart.

    Attributes:
        label: its name in the legend.
        x: x values, in increasing order.
        y: y values (None or NaN for a gap), as many as `x`.
        low: optional lower edge of a shaded band around the line.
        high: optional upper edge of the band (both or neither).
        dashed: draw the line dashed (a reference such as a true value).
    """

    label: str
    x: Sequence[float]
    y: Sequence[Value]
    low: Sequence[Value] | None = None
    high: Sequence[Value] | None = None
    dashed: bool = False

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"series {self.label!r}: {len(self.x)} x values, {len(self.y)} y")
        if (self.low is None) != (self.high is None):
            raise ValueError(f"series {self.label!r}: a band needs both `low` and `high`")
        for edge in (self.low, self.high):
            if edge is not None and len(edge) != len(self.x):
                raise ValueError(f"series {self.label!r}: band length differs from x")


def _finite(value: Value) -> bool:
    return value is not None and math.isfinite(value)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 x 10^k) covering `[low, high]`."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("tick range must be finite")
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def format_tick(value: float) -> str:
    """A short tick label: 25k, 1.5M, 0.02, -3."""
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:g}M"
    if size >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.4g}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    subtitle: str = "",
    width: int = 760,
    height: int = 400,
) -> str:
    """An SVG document with the series drawn as lines on shared axes (`subtitle`: a short
    note under the title, such as what a shaded band means).

    Raises:
        ValueError: with no finite point to draw.
    """
    xs = [x for s in series for x in s.x if _finite(x)]
    ys = [
        y
        for s in series
        for column in (s.y, s.low or (), s.high or ())
        for y in column
        if y is not None and math.isfinite(y)
    ]
    if not xs or not ys:
        raise ValueError("line_chart needs at least one finite point")
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    legend_width = 190
    left, right, top, bottom = 72, legend_width + 16, 56 if subtitle else 40, 56
    plot_w = width - left - right
    plot_h = height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, DejaVu Sans, sans-serif" '
        'font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    if subtitle:
        parts.append(
            f'<text x="{width / 2:.1f}" y="40" text-anchor="middle" fill="#555555">'
            f"{escape(subtitle)}</text>"
        )
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(format_tick(tick))}</text>"
        )
    for tick in x_ticks:
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#f0f0f0"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{escape(format_tick(tick))}</text>"
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#555555"/>'
    )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        if one.low is not None and one.high is not None:
            for segment in _segments(one.x, one.low, one.high):
                if len(segment) < 2:
                    continue
                upper = " ".join(f"{px(x):.1f},{py(h):.1f}" for x, _, h in segment)
                lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(segment))
                parts.append(
                    f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15" '
                    'stroke="none"/>'
                )
        dash = ' stroke-dasharray="6 4"' if one.dashed else ""
        for segment in _segments(one.x, one.y, one.y):
            points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in segment)
            if len(segment) == 1:
                x, y, _ = segment[0]
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
            else:
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" '
                    f'stroke-width="2"{dash}/>'
                )
                if len(one.x) <= MARKERS_UP_TO:
                    parts += [
                        f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>'
                        for x, y, _ in segment
                    ]
        legend_y = top + 8 + index * 20
        legend_x = left + plot_w + 14
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 22}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="3"{dash}/>'
        )
        label = one.label if len(one.label) <= 26 else one.label[:25] + "…"
        parts.append(
            f'<text x="{legend_x + 28}" y="{legend_y + 4}">{escape(label)}'
            f"<title>{escape(one.label)}</title></text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _segments(
    x: Sequence[float], a: Sequence[Value], b: Sequence[Value]
) -> list[list[tuple[float, float, float]]]:
    """Runs of consecutive points where `x`, `a` and `b` are all finite."""
    runs: list[list[tuple[float, float, float]]] = []
    current: list[tuple[float, float, float]] = []
    for xi, ai, bi in zip(x, a, b, strict=True):
        if _finite(xi) and ai is not None and bi is not None and _finite(ai) and _finite(bi):
            current.append((xi, ai, bi))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def write_line_chart(
    path: Path,
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    subtitle: str = "",
    width: int = 760,
    height: int = 400,
) -> Path:
    """Write `line_chart(...)` to `path` and return the path."""
    path.write_text(
        line_chart(
            series,
            title=title,
            x_label=x_label,
            y_label=y_label,
            subtitle=subtitle,
            width=width,
            height=height,
        )
    )
    return path

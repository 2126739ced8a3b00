"""A bar chart drawn server-side as SVG: axes, gridlines, labels and values, no JavaScript.

Geometry uses floats; the numbers printed are the exact values, formatted for reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from core.money import format_quantity

WIDTH, HEIGHT = 960, 340
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 28, 56
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_X_LABELS = 12
MIN_SLOT_FOR_VALUES = 36  # px per bar needed to print its value over it


@dataclass(frozen=True)
class Bar:
    label: str  # short axis label, e.g. "Nov 3" or "14:00"
    title: str  # full description for the tooltip, e.g. "2026-11-03 (Europe/Berlin)"
    value: Decimal | None  # None: no value in the window (no bar is drawn)


def value_text(value: Decimal | None) -> str:
    """A value for people: thousands separated, at most four decimals (rounded half up)."""
    return "—" if value is None else format_quantity(value, max_places=4)


def _compact(value: float) -> str:
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.4g}"


def nice_ticks(top: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2, 2.5 or 5 times a power
    of 10 (whole steps only when ``whole``, for counts)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if whole:
        step = max(1.0, float(math.ceil(step)))
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    return ticks


@dataclass(frozen=True)
class _Scale:
    """The value axis: ``ticks`` from ``low`` to ``top``, mapped onto the plot's height."""

    ticks: list[float]
    low: float
    top: float

    def y(self, value: float) -> float:
        return TOP + PLOT_H * (self.top - value) / ((self.top - self.low) or 1.0)


def _scale(bars: Sequence[Bar]) -> _Scale:
    """Round ticks from 0 to the largest value, and below 0 to the lowest when a value is
    negative (a refund meter); whole steps when every value is whole."""
    values = [float(b.value) for b in bars if b.value is not None]
    low = min([0.0, *values])
    whole = all(b.value == b.value.to_integral_value() for b in bars if b.value is not None)
    ticks = nice_ticks(max([0.0, *values]), whole=whole)
    top = ticks[-1]
    if low < 0:
        neg = nice_ticks(-low, whole=whole)
        ticks = [-t for t in reversed(neg[1:])] + ticks
        low = ticks[0]
    return _Scale(ticks=ticks, low=low, top=top)


def _n(v: float) -> str:
    """A coordinate as text (format_html escapes its arguments: numbers are formatted
    first)."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def bar_chart_svg(*, bars: Sequence[Bar], y_label: str = "", empty_text: str = "") -> SafeString:
    """An SVG bar chart with one slot per item of ``bars``; one ``rect.bar`` per bar that
    has a value (a value of 0 draws a bar of no height, so it still has a tooltip)."""
    scale = _scale(bars)
    parts = [*_gridlines(scale), *_bars(bars, scale)]
    values = [float(b.value) for b in bars if b.value is not None]
    if not values or not any(values):
        parts.append(
            format_html(
                '<text class="empty" x="{}" y="{}" text-anchor="middle">{}</text>',
                _n(LEFT + PLOT_W / 2),
                _n(TOP + PLOT_H / 2),
                empty_text or "No usage in this range.",
            )
        )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" viewBox="0 0 {w} {h}" '
        'width="{w}" height="{h}" role="img" aria-label="{aria}">'
        "<style>{style}</style>"
        '<text class="ylabel" x="{lx}" y="{ly}">{ylabel}</text>'
        "{body}"
        '<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/>'
        '<line class="axis" x1="{left}" x2="{right}" y1="{zero}" y2="{zero}"/>'
        "</svg>",
        w=WIDTH,
        h=HEIGHT,
        aria=f"Bar chart of {y_label or 'usage'}, {len(bars)} windows",
        style=mark_safe(_STYLE),
        lx=8,
        ly=TOP - 12,
        ylabel=y_label,
        body=format_html_join("", "{}", ((p,) for p in parts)),
        left=LEFT,
        right=LEFT + PLOT_W,
        top=TOP,
        bottom=TOP + PLOT_H,
        zero=_n(scale.y(0)),
    )


def _gridlines(scale: _Scale) -> list[SafeString]:
    """A horizontal gridline per tick, with its value at the left."""
    return [
        format_html(
            '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
            '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>',
            LEFT,
            LEFT + PLOT_W,
            _n(scale.y(t)),
            _n(scale.y(t)),
            LEFT - 6,
            _n(scale.y(t) + 4),
            _compact(t),
        )
        for t in scale.ticks
    ]


def _bars(bars: Sequence[Bar], scale: _Scale) -> list[SafeString]:
    """Each bar with its tooltip, its value over it when there is room, and an axis label
    under every few slots (at most ``MAX_X_LABELS``)."""
    slot = PLOT_W / max(len(bars), 1)
    bar_w = max(slot * 0.78, 1.0)
    every = max(1, math.ceil(len(bars) / MAX_X_LABELS))
    show_values = slot >= MIN_SLOT_FOR_VALUES
    parts: list[SafeString] = []
    for i, bar in enumerate(bars):
        x = LEFT + i * slot + (slot - bar_w) / 2
        center = LEFT + i * slot + slot / 2
        if bar.value is not None:
            v = float(bar.value)
            y0, y1 = sorted((scale.y(0), scale.y(v)))
            parts.append(
                format_html(
                    '<rect class="bar" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{}: {}</title></rect>",
                    _n(x),
                    _n(y0),
                    _n(bar_w),
                    _n(y1 - y0),
                    bar.title,
                    value_text(bar.value),
                )
            )
            if show_values and v:
                parts.append(
                    format_html(
                        '<text class="value" x="{}" y="{}" text-anchor="middle">{}</text>',
                        _n(center),
                        _n(scale.y(v) - 4 if v >= 0 else scale.y(v) + 12),
                        _compact(v),
                    )
                )
        if i % every == 0:
            parts.append(
                format_html(
                    '<line class="axis" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                    '<text class="label" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(center),
                    _n(center),
                    TOP + PLOT_H,
                    TOP + PLOT_H + 4,
                    _n(center),
                    TOP + PLOT_H + 18,
                    bar.label,
                )
            )
    return parts


_STYLE = (
    "text{font:11px system-ui,-apple-system,sans-serif;fill:#444}"
    ".ylabel{font-weight:600}.empty{font-size:14px;fill:#888}"
    ".value{font-size:10px;fill:#222}"
    ".grid{stroke:#e4e4e4;stroke-width:1}.axis{stroke:#888;stroke-width:1}"
    ".bar{fill:#417690}.bar:hover{fill:#205067}"
)

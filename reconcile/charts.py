"""Inline SVG charts for the report: plain markup, no script, no external asset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

#: One colour per series, readable in print and by most colour-blind readers.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
WIDTH, HEIGHT, MARGIN = 640, 220, 40


def _axis(top: int) -> list[str]:
    bottom = HEIGHT - MARGIN
    return [
        f'<line x1="{MARGIN}" y1="{bottom}" x2="{WIDTH - 10}" y2="{bottom}" stroke="#444"/>',
        f'<line x1="{MARGIN}" y1="10" x2="{MARGIN}" y2="{bottom}" stroke="#444"/>',
        f'<text x="{MARGIN - 6}" y="16" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{MARGIN - 6}" y="{bottom}" font-size="11" text-anchor="end">0</text>',
    ]


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    for index, name in enumerate(names):
        x = MARGIN + 10 + index * 130
        parts.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{COLOURS[index % len(COLOURS)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="11">{escape(name)}</text>')
    return parts


def _svg(title: str, parts: list[str], chart: str) -> str:
    return (f'<svg class="chart" data-chart="{escape(chart)}" role="img" aria-label="{escape(title)}" '
            f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
            f"<title>{escape(title)}</title>" + "".join(parts) + "</svg>")


def grouped_bars(title: str, chart: str, groups: Sequence[str], series: Mapping[str, Mapping[str, int]],
                 label: Callable[[str], str] = lambda group: group[5:]) -> str:
    """One group of bars per entry of ``groups`` (days), one bar per series (layers); each group
    is labelled ``label(group)`` (by default a day without its year)."""
    names = list(series)
    top = max([1] + [value for values in series.values() for value in values.values()])
    parts = _axis(top)
    plot_width = WIDTH - MARGIN - 20
    group_width = plot_width / max(1, len(groups))
    bar = max(2.0, group_width * 0.8 / max(1, len(names)))
    bottom = HEIGHT - MARGIN
    for g, group in enumerate(groups):
        x0 = MARGIN + 4 + g * group_width
        for s, name in enumerate(names):
            value = series[name].get(group, 0)
            height = (bottom - 12) * value / top
            parts.append(f'<rect x="{x0 + s * bar:.1f}" y="{bottom - height:.1f}" width="{bar - 1:.1f}" '
                         f'height="{height:.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                         f"<title>{escape(group)} {escape(name)}: {value}</title></rect>")
        if len(groups) <= 16 or g % max(1, len(groups) // 8) == 0:
            parts.append(f'<text x="{x0:.1f}" y="{bottom + 14}" font-size="10">{escape(label(group))}</text>')
    return _svg(title, parts + _legend(names), chart)


def lines(title: str, chart: str, points: Sequence[Mapping[str, Any]], label: str,
          series: Sequence[str]) -> str:
    """One polyline per ``series`` key over ``points`` (runs, oldest first)."""
    top = max([1] + [int(p[name]) for p in points for name in series])
    parts = _axis(top)
    bottom = HEIGHT - MARGIN
    step = (WIDTH - MARGIN - 30) / max(1, len(points) - 1)
    for s, name in enumerate(series):
        coordinates = [(MARGIN + 6 + i * step, bottom - (bottom - 12) * int(p[name]) / top)
                       for i, p in enumerate(points)]
        colour = COLOURS[s % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates) + '"/>')
        for (x, y), point in zip(coordinates, points, strict=True):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                         f"<title>{escape(str(point[label]))} {escape(name)}: {point[name]}</title></circle>")
    if points:
        parts.append(f'<text x="{MARGIN + 6}" y="{bottom + 14}" font-size="10">{escape(str(points[0][label]))}</text>')
        parts.append(f'<text x="{WIDTH - 24}" y="{bottom + 14}" font-size="10" text-anchor="end">'
                     f"{escape(str(points[-1][label]))}</text>")
    return _svg(title, parts + _legend(series), chart)

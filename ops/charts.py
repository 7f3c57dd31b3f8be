"""Line charts over days as inline SVG, drawn on the server like the evals chart (no JavaScript).

Counts, milliseconds and dollars need a scaled y axis; rates (0..1) use evals.charts as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from evals import charts as evals_charts

COLOURS = evals_charts.COLOURS
WIDTH, HEIGHT = evals_charts.WIDTH, evals_charts.HEIGHT
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 10, 30

Series = Mapping[str, Mapping[date, float]]


def _n(value: float) -> str:
    return f"{value:.1f}"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (an axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def plain(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:,.2g}"


def dollars(value: float) -> str:
    return "$0" if value == 0 else f"${value:,.2f}" if value >= 1 else f"${value:.2g}"


def _labels(days: Sequence[date]) -> list[str]:
    return [day.strftime("%m-%d") for day in days]


def rate_chart(days: Sequence[date], series: Series, *, title: str, empty: str) -> SafeString:
    """Rates 0..1 per day, with a gap on days without a value: the evals chart."""
    if not any(series.values()):
        return format_html('<p class="muted">{}</p>', empty)
    values = {name: [by_day.get(day) for day in days] for name, by_day in series.items()}
    return evals_charts.line_chart(_labels(days), values, title=title)


def line_chart(
    days: Sequence[date],
    series: Series,
    *,
    title: str,
    empty: str = "Nothing in this range.",
    fill_zero: bool = True,
    fmt: Callable[[float], str] = plain,
) -> SafeString:
    """One line per series over `days`; a day without a value is 0 (`fill_zero`) or a gap.

    Every text that comes from data (series names, the title) is escaped by format_html.
    """
    if not days or not any(series.values()):
        return format_html('<p class="muted">{}</p>', empty)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    labels = _labels(days)
    top = nice_ceiling(max((v for by_day in series.values() for v in by_day.values()), default=0.0))

    def x(i: int) -> str:
        return _n(LEFT + (plot_w * i / (len(days) - 1) if len(days) > 1 else plot_w / 2))

    def y(value: float) -> str:
        return _n(TOP + plot_h * (1 - value / top))

    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e2e2de"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#6b6f73">{}</text>',
        (
            (LEFT, WIDTH - RIGHT, y(v), y(v), LEFT - 4, _n(float(y(v)) + 3), fmt(v))
            for v in (0, top / 4, top / 2, 3 * top / 4, top)
        ),
    )
    step = max(1, len(days) // 8)
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#6b6f73">{}</text>',
        ((x(i), HEIGHT - 12, label) for i, label in enumerate(labels) if i % step == 0),
    )
    marks: list[SafeString] = []
    legend: list[SafeString] = []
    for n, name in enumerate(sorted(series)):
        colour = COLOURS[n % len(COLOURS)]
        by_day = series[name]
        segments: list[list[tuple[str, str, str]]] = [[]]
        for i, day in enumerate(days):
            value = by_day.get(day, 0.0 if fill_zero else None)
            if value is None:
                segments.append([])
            else:
                segments[-1].append((x(i), y(value), f"{name}: {fmt(value)} on {day.isoformat()}"))
        for segment in segments:
            if len(segment) > 1:
                points = " ".join(f"{px},{py}" for px, py, _ in segment)
                marks.append(
                    format_html(
                        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', points, colour
                    )
                )
            marks.extend(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}</title></circle>', px, py, colour, tip
                )
                for px, py, tip in segment
            )
        legend.append(
            format_html('<li><span class="swatch" style="background:{}"></span>{}</li>', colour, name)
        )
    return format_html(
        '<figure class="chart"><svg viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">'
        "<title>{}</title>{}{}{}</svg>"
        '<figcaption><ul class="legend">{}</ul></figcaption></figure>',
        WIDTH,
        HEIGHT,
        title,
        title,
        grid,
        ticks,
        mark_safe("".join(marks)),  # noqa: S308 (each piece built by format_html)
        mark_safe("".join(legend)),  # noqa: S308 (each piece built by format_html)
    )

"""Line charts as inline SVG, drawn on the server (no JavaScript, no CDN).

Shared by evals (pass rates over runs) and ops (counts, latencies and dollars per day, through
ops.charts, which gives `line_chart` a scaled axis).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Distinguishable on white and for the common colour-vision deficiencies (Okabe & Ito).
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 30


def _n(value: float) -> str:
    return f"{value:.1f}"


def percent(value: float) -> str:
    return f"{value:.0%}"


def line_chart(
    labels: Sequence[str],
    series: dict[str, list[float | None]],
    *,
    title: str,
    top: float = 1.0,
    fmt: Callable[[float], str] = percent,
    left: int = LEFT,
    tip_labels: Sequence[str] | None = None,
    empty: str = "No completed runs yet.",
) -> SafeString:
    """One line per series over `labels` (x), the y axis from 0 to `top` written with `fmt`; a gap
    where a value is None. By default values are rates (0..1) drawn as percentages.

    Every text that comes from data (labels, series names, the title) is escaped by format_html.
    """
    if not labels or not series:
        return format_html('<p class="muted">{}</p>', empty)
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> str:
        return _n(left + (plot_w * i / (len(labels) - 1) if len(labels) > 1 else plot_w / 2))

    def y(value: float) -> str:
        return _n(TOP + plot_h * (1 - value / top))

    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e2e2de"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#6b6f73">{}</text>',
        (
            (left, WIDTH - RIGHT, y(v), y(v), left - 4, _n(float(y(v)) + 3), fmt(v))
            for v in (0, top / 4, top / 2, 3 * top / 4, top)
        ),
    )
    step = max(1, len(labels) // 8)
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#6b6f73">{}</text>',
        ((x(i), HEIGHT - 12, label) for i, label in enumerate(labels) if i % step == 0),
    )
    tips = tip_labels or labels
    marks: list[SafeString] = []
    legend: list[SafeString] = []
    for n, (name, values) in enumerate(sorted(series.items())):
        colour = COLOURS[n % len(COLOURS)]
        points = [
            None if value is None else (x(i), y(value), f"{name}: {fmt(value)} at {tips[i]}")
            for i, value in enumerate(values)
        ]
        marks.extend(_series_marks(points, colour))
        # A class, not a style attribute: the Content-Security-Policy refuses inline styles
        # (app.css gives series-N the colour COLOURS[N]). SVG presentation attributes are not styles.
        legend.append(
            format_html('<li><span class="swatch series-{}"></span>{}</li>', n % len(COLOURS), name)
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


def _series_marks(points: Sequence[tuple[str, str, str] | None], colour: str) -> list[SafeString]:
    """One series' polylines and dots: (x, y, tooltip) per value, None for a gap in the line."""
    segments: list[list[tuple[str, str, str]]] = [[]]
    for point in points:
        if point is None:
            segments.append([])
        else:
            segments[-1].append(point)
    marks: list[SafeString] = []
    for segment in segments:
        if len(segment) > 1:
            line = " ".join(f"{px},{py}" for px, py, _ in segment)
            marks.append(
                format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', line, colour)
            )
        marks.extend(
            format_html(
                '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}</title></circle>', px, py, colour, tip
            )
            for px, py, tip in segment
        )
    return marks

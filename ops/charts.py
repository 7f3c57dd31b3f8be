"""Line charts over days for the operations dashboard, drawn by common.charts.line_chart.

Counts, milliseconds and dollars get an axis scaled to the largest value; rates (0..1) keep the
evals chart's percentages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from django.utils.html import format_html
from django.utils.safestring import SafeString

from common import charts as common_charts

LEFT = 56  # room for "$1,000" and "12,000" on the y axis

Series = Mapping[str, Mapping[date, float]]


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
    return common_charts.line_chart(_labels(days), values, title=title)


def line_chart(
    days: Sequence[date],
    series: Series,
    *,
    title: str,
    empty: str = "Nothing in this range.",
    fill_zero: bool = True,
    fmt: Callable[[float], str] = plain,
) -> SafeString:
    """One line per series over `days`, on an axis scaled to the largest value; a day without a
    value is 0 (`fill_zero`) or a gap."""
    if not days or not any(series.values()):
        return format_html('<p class="muted">{}</p>', empty)
    values = {
        name: [by_day.get(day, 0.0 if fill_zero else None) for day in days] for name, by_day in series.items()
    }
    top = nice_ceiling(max((v for by_day in series.values() for v in by_day.values()), default=0.0))
    return common_charts.line_chart(
        _labels(days),
        values,
        title=title,
        top=top,
        fmt=fmt,
        left=LEFT,
        tip_labels=[day.isoformat() for day in days],
    )

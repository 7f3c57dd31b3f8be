"""Number formatting for the evals pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | str | None) -> str:
    """0.875 -> "88%"; None -> "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.0f}%"


@register.filter
def points(value: float | str | None) -> str:
    """A change in pass rate in percentage points, signed: 0.05 -> "+5 pts"; None -> ""."""
    if value is None or value == "":
        return ""
    number = float(value) * 100
    if abs(number) < 0.5:
        return "±0 pts"
    return f"{number:+.0f} pts"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


@register.filter
def usd(value: float | None) -> str:
    return "—" if value is None else f"${float(value):.4f}"


@register.filter
def get(mapping: dict[str, object], key: str) -> object:
    return mapping.get(key) if isinstance(mapping, dict) else None

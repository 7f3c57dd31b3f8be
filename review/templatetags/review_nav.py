"""The open count for the staff navigation link."""

from __future__ import annotations

from django import template

from review import selectors

register = template.Library()


@register.simple_tag
def review_open_count() -> int:
    return selectors.open_count()

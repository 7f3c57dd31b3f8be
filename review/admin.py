from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from review.models import Review, ReviewEvent


class ReviewEventInline(admin.TabularInline[ReviewEvent, Review]):
    model = ReviewEvent
    fields = ["created_at", "actor", "action", "note"]
    readonly_fields = ["created_at", "actor", "action", "note"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin[Review]):
    """Read-only: decisions are made on the review pages, which keep the audit log."""

    list_display = ["answer", "status", "assignee", "decided_by", "decided_at"]
    list_filter = ["status"]
    raw_id_fields = ["answer", "assignee", "decided_by"]
    inlines = [ReviewEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

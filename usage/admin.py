from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from usage.models import Budget, ModelCall, ModelPrice, UsageDaily


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    list_display = [
        "model",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "note",
        "updated_at",
    ]
    search_fields = ["model", "note"]


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin[Budget]):
    list_display = ["__str__", "user", "group", "period", "unit", "limit", "active", "updated_at"]
    list_filter = ["active", "period", "unit", "group"]
    list_editable = ["limit", "active"]
    raw_id_fields = ["user"]
    search_fields = ["user__username", "group__name", "note"]


class RecordAdmin(admin.ModelAdmin[Any]):
    """Written by the application: staff look, and may delete, but never edit or add."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelCall)
class ModelCallAdmin(RecordAdmin):
    list_display = [
        "created_at",
        "user",
        "model",
        "purpose",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "price_missing",
        "latency_ms",
        "ok",
    ]
    list_filter = ["purpose", "ok", "price_missing", "estimated", "model"]
    list_select_related = ["user"]
    raw_id_fields = ["user", "answer"]
    date_hierarchy = "created_at"
    search_fields = ["model", "user__username", "error"]


@admin.register(UsageDaily)
class UsageDailyAdmin(RecordAdmin):
    list_display = ["day", "user", "model", "purpose", "calls", "prompt_tokens", "completion_tokens", "cost"]
    list_filter = ["purpose", "model"]
    list_select_related = ["user"]
    date_hierarchy = "day"

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from routing.models import FineTuneJob


@admin.register(FineTuneJob)
class FineTuneJobAdmin(admin.ModelAdmin[FineTuneJob]):
    """Jobs are started by `manage.py export_finetune --start` and followed by Celery: read-only here."""

    list_display = [
        "provider_job_id",
        "assistant",
        "base_model",
        "status",
        "fine_tuned_model",
        "gate",
        "created_at",
    ]
    list_filter = ["status", "gate"]
    search_fields = ["provider_job_id", "fine_tuned_model"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

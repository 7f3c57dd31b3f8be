from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from evals.models import Case, Grade, JudgeCalibration, Result, Run, Suite


class CaseInline(admin.TabularInline[Case, Suite]):
    model = Case
    fields = ["question", "expected_behaviour", "expected", "must_cite", "tags"]
    extra = 0
    show_change_link = True


@admin.register(Suite)
class SuiteAdmin(admin.ModelAdmin[Suite]):
    list_display = ["name", "nightly", "assistant", "run_as", "collection"]
    search_fields = ["name", "description"]
    inlines = [CaseInline]


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin[Case]):
    list_display = ["question", "suite", "expected_behaviour", "source"]
    list_filter = ["suite", "expected_behaviour", "source"]
    search_fields = ["question", "external_id"]
    raw_id_fields = ["source_answer"]


class ReadOnly(admin.ModelAdmin[Any]):
    """Written by runs; staff look and may delete, never edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnly):
    list_display = ["pk", "suite", "status", "trigger", "model", "prompt", "created_at"]
    list_filter = ["suite", "status", "trigger"]


class GradeInline(admin.TabularInline[Grade, Result]):
    model = Grade
    extra = 0
    can_delete = False
    readonly_fields = [
        "grader",
        "kind",
        "score",
        "passed",
        "counted",
        "reason",
        "judge_model",
        "judge_reasoning",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Result)
class ResultAdmin(ReadOnly):
    list_display = ["pk", "run", "case", "status", "attempts"]
    list_filter = ["status"]
    raw_id_fields = ["answer"]
    inlines = [GradeInline]


@admin.register(JudgeCalibration)
class JudgeCalibrationAdmin(ReadOnly):
    list_display = ["judge_model", "grader", "agreement", "n", "dataset", "measured_at"]

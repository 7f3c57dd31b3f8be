from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from assistant import services
from assistant.models import Answer, ApiToken, Assistant, Feedback, Flag, PromptTemplate
from guardrails.checks import GuardConfig
from routing.policy import EXAMPLE as ROUTING_EXAMPLE
from routing.policy import RoutingPolicy, routing_config_errors


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Records written by the application: staff look, and may delete, but never edit or add."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def pretty_json(value: object) -> SafeString:
    # Styled by css/admin.css (AnswerAdmin.Media): the Content-Security-Policy refuses inline styles.
    return format_html('<pre class="json">{}</pre>', json.dumps(value, indent=2))


class AssistantForm(ModelForm[Assistant]):
    class Meta:
        model = Assistant
        fields = [
            *("name", "scope", "collections", "is_default", "prompt", "model", "temperature", "top_p"),
            *("seed", "max_tokens", "top_k", "min_similarity", "tools_enabled", "evidence_answers"),
            *("guardrails", "routing"),
        ]

    def clean_guardrails(self) -> dict[str, Any]:
        """Settings the pipeline can read, or a form error saying which one is wrong (never a 500)."""
        value = self.cleaned_data.get("guardrails") or {}
        try:
            config = GuardConfig.from_dict(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return config.as_dict()  # only what differs from the defaults, so a new default applies

    def clean_routing(self) -> dict[str, Any]:
        """A routing policy routing.policy can read, or every problem with it as form errors."""
        value = self.cleaned_data.get("routing") or {}
        errors = routing_config_errors(value)
        if errors:
            raise ValidationError(errors)
        policy = RoutingPolicy.from_dict(value)
        return policy.as_dict() if policy else {}  # only what differs from the defaults


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin[Assistant]):
    form = AssistantForm
    list_display = ["name", "is_default", "prompt", "chat_model", "temperature", "top_p", "seed", "top_k"]
    list_select_related = ["prompt"]
    search_fields = ["name", "scope"]
    filter_horizontal = ["collections"]
    fieldsets = [
        (None, {"fields": ["name", "scope", "collections", "is_default"]}),
        (
            "Reproducibility",
            {
                "description": "Pinned on every answer, so that an answer can be replayed as it was made.",
                "fields": ["prompt", "model", "temperature", "top_p", "seed", "max_tokens"],
            },
        ),
        ("Retrieval", {"fields": ["top_k", "min_similarity", "tools_enabled", "evidence_answers"]}),
        (
            "Guardrails",
            {
                "description": "A JSON object of guardrails.checks.GuardConfig settings; {} is the defaults. "
                'For example {"topic": false, "pii_action": "redact"}. Defaults: '
                + ", ".join(f"{k}={json.dumps(v)}" for k, v in GuardConfig.defaults().items()),
                "fields": ["guardrails"],
            },
        ),
        (
            "Model routing",
            {
                "description": "A JSON object; {} answers every question with the model above. Example: "
                + json.dumps(ROUTING_EXAMPLE),
                "fields": ["routing"],
            },
        ),
    ]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and form.changed_data:
            services.assistant_settings_changed(assistant=form.instance)

    @admin.display(description="Model")
    def chat_model(self, obj: Assistant) -> str:
        return obj.chat_model


class PromptTemplateForm(ModelForm[PromptTemplate]):
    class Meta:
        model = PromptTemplate
        fields = ["name", "system", "instructions", "notes"]


# What save_model did with an edit, kept on the edited object for response_change (same request):
# the new version, or None when nothing changed.
NEW_VERSION = "_saved_as_version"


def _saved_as(obj: PromptTemplate) -> tuple[bool, PromptTemplate | None]:
    """Whether save_model handled an edit of `obj`, and the version it created (None: no change)."""
    if not hasattr(obj, NEW_VERSION):
        return False, None
    created = getattr(obj, NEW_VERSION)
    return True, created if isinstance(created, PromptTemplate) else None


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin[PromptTemplate]):
    """Prompts are versioned: saving a change to a prompt creates the next version.

    Old answers keep pointing at the version they were made with. Assistants move to a new
    version only when someone runs "Use this version for all assistants" on it.
    """

    form = PromptTemplateForm
    list_display = ["name", "version", "notes", "created_at", "created_by", "assistant_count"]
    list_filter = ["name"]
    search_fields = ["name", "notes", "system", "instructions"]
    actions = ["use_for_all_assistants"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromptTemplate]:
        return super().get_queryset(request).select_related("created_by")

    def get_fieldsets(self, request: HttpRequest, obj: PromptTemplate | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["name", "system", "instructions", "notes"]})]
        return [
            (
                None,
                {
                    "description": "Saving a change creates a new version; this one stays as it is, "
                    "and so do the answers made with it.",
                    "fields": ["name", "version", "system", "instructions", "notes"],
                },
            ),
            ("History", {"fields": ["created_by", "created_at", "used_by"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: PromptTemplate | None = None) -> Any:
        if obj is None:
            return []
        return ["name", "version", "created_by", "created_at", "used_by"]

    @admin.display(description="Assistants using it")
    def assistant_count(self, obj: PromptTemplate) -> int:
        return Assistant.objects.filter(prompt=obj).count()

    @admin.display(description="Used by")
    def used_by(self, obj: PromptTemplate) -> str:
        return ", ".join(a.name for a in Assistant.objects.filter(prompt=obj)) or "no assistant"

    def save_model(self, request: HttpRequest, obj: PromptTemplate, form: Any, change: bool) -> None:
        user = request.user if isinstance(request.user, User) else None
        if not change:
            latest = PromptTemplate.objects.filter(name=obj.name).order_by("-version").first()
            if latest is not None:
                # A known name: this is that prompt's next version, numbered by the service.
                created = services.prompt_new_version(
                    prompt=latest,
                    system=obj.system,
                    instructions=obj.instructions,
                    notes=obj.notes,
                    user=user,
                )
                obj.pk, obj.version, obj.created_at = created.pk, created.version, created.created_at
                return
            obj.version, obj.created_by = 1, user
            super().save_model(request, obj, form, change)
            return
        if not form.has_changed():
            setattr(obj, NEW_VERSION, None)
            return
        original = PromptTemplate.objects.get(pk=obj.pk)
        notes = obj.notes if "notes" in form.changed_data else f"Edited from version {original.version}."
        created = services.prompt_new_version(
            prompt=original, system=obj.system, instructions=obj.instructions, notes=notes, user=user
        )
        setattr(obj, NEW_VERSION, created)

    def log_change(self, request: HttpRequest, obj: PromptTemplate, message: Any) -> Any:
        handled, created = _saved_as(obj)
        if not handled:
            return super().log_change(request, obj, message)
        if created is None:
            return None  # nothing was saved
        return self.log_addition(request, created, message)

    def response_change(self, request: HttpRequest, obj: PromptTemplate) -> HttpResponse:
        handled, created = _saved_as(obj)
        if not handled:
            return super().response_change(request, obj)
        changelist = HttpResponseRedirect(reverse("admin:assistant_prompttemplate_changelist"))
        if created is None:
            self.message_user(request, f"No changes: still version {obj.version}.", messages.INFO)
            return changelist
        self.message_user(
            request,
            f"Saved as version {created.version}. Version {obj.version} is unchanged; assistants keep "
            "their version until you run “Use this version for all assistants” on the new one.",
            messages.SUCCESS,
        )
        if "_continue" in request.POST:
            return HttpResponseRedirect(reverse("admin:assistant_prompttemplate_change", args=[created.pk]))
        return changelist

    @admin.action(description="Use this version for all assistants")
    def use_for_all_assistants(self, request: HttpRequest, queryset: QuerySet[PromptTemplate]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one prompt version.", messages.ERROR)
            return
        prompt = queryset.get()
        moved = services.assistants_use_prompt(prompt=prompt)
        self.message_user(
            request,
            f"All assistants now use {prompt} ({moved} changed). Earlier answers keep their version.",
            messages.SUCCESS,
        )


class FlagInline(admin.TabularInline[Flag, Answer]):
    model = Flag
    extra = 0
    fields = readonly_fields = ("category", "source", "user", "note", "created_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FeedbackInline(admin.TabularInline[Feedback, Answer]):
    model = Feedback
    extra = 0
    fields = readonly_fields = ("rating", "reason", "user", "created_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


TRACE_JSON = ["citations", "grounding", "retrieved", "tool_calls", "latency_ms", "guardrails"]


@admin.register(Answer)
class AnswerAdmin(ReadOnlyAdmin):
    """The full trace of each answer, to check or correct it; answers are never edited."""

    list_display = [
        "pk",
        "short_question",
        "state",
        "confidence",
        "flagged",
        "assistant",
        "user",
        "model",
        "prompt",
        "created_at",
    ]
    list_display_links = ["pk", "short_question"]
    list_filter = ["flagged", "abstained", "grounded", "fallback", "model", "assistant", "created_at"]
    list_select_related = ["assistant", "user", "prompt"]
    search_fields = ["question", "text"]
    date_hierarchy = "created_at"
    inlines = [FlagInline, FeedbackInline]

    class Media:
        css = {"all": ["css/admin.css"]}

    fieldsets = [
        (None, {"fields": ["question", "text", "state", "user", "assistant", "message", "created_at"]}),
        (
            "Trust",
            {
                "fields": [
                    "abstained",
                    "abstain_reason",
                    "confidence",
                    "grounded",
                    "flagged",
                    "fallback",
                    "repaired",
                    "rewrite",
                    "suggestions",
                    "citations_json",
                    "grounding_json",
                    "guardrails_json",
                ]
            },
        ),
        (
            "Reproducibility",
            {
                "fields": [
                    "prompt",
                    "model",
                    "seed",
                    "temperature",
                    "top_p",
                    "max_tokens",
                    "system_fingerprint",
                    "replay_of",
                ]
            },
        ),
        (
            "Trace",
            {
                "fields": [
                    "retrieved_json",
                    "tool_calls_json",
                    "raw_output",
                    "prompt_tokens",
                    "completion_tokens",
                    "latency_ms_json",
                    "cost_usd",
                    "cache_hit",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Answer | None = None) -> Any:
        return [name for _title, options in self.fieldsets for name in options["fields"]]

    @admin.display(description="Question", ordering="question")
    def short_question(self, obj: Answer) -> str:
        return obj.question if len(obj.question) <= 80 else obj.question[:79] + "…"

    @admin.display(description="State")
    def state(self, obj: Answer) -> str:
        return obj.state

    @admin.display(description="Citations")
    def citations_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.citations)

    @admin.display(description="Grounding check")
    def grounding_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.grounding)

    @admin.display(description="Guardrails")
    def guardrails_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.guardrails)

    @admin.display(description="Retrieved chunks")
    def retrieved_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.retrieved)

    @admin.display(description="Tool calls")
    def tool_calls_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.tool_calls)

    @admin.display(description="Latency (ms)")
    def latency_ms_json(self, obj: Answer) -> SafeString:
        return pretty_json(obj.latency_ms)


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ["answer", "category", "source", "user", "created_at"]
    list_filter = ["category", "source", "created_at"]
    list_select_related = ["answer", "user"]
    search_fields = ["note", "answer__question"]
    fields = readonly_fields = ("answer", "category", "source", "user", "note", "created_at")


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = ["answer", "rating", "reason", "user", "created_at"]
    list_filter = ["rating", "created_at"]
    list_select_related = ["answer", "user"]
    search_fields = ["reason", "answer__question"]
    fields = readonly_fields = ("answer", "rating", "reason", "user", "created_at")


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are created by their owners on the API tokens page; here staff can revoke (delete)."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    fields = readonly_fields = ("name", "user", "prefix", "created_at", "last_used_at")  # not the digest

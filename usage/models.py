"""Prices, one row per model call, daily rollups, and budgets."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

MILLION = Decimal(1_000_000)


class Purpose(models.TextChoices):
    ANSWER = "answer", "Answer"
    REPAIR = "repair", "Repair"
    GUARDRAIL = "guardrail", "Guardrail"
    JUDGE = "judge", "Judge"
    EVAL = "eval", "Eval"
    EMBEDDING = "embedding", "Embedding"
    ROUTING = "routing", "Routing"
    OTHER = "other", "Other"


class ModelPrice(models.Model):
    """What one model costs, in US dollars per million tokens. Edited by staff in the admin."""

    model = models.CharField(
        max_length=100,
        unique=True,
        help_text="As the provider names it. A dated snapshot (gpt-4o-mini-2024-07-18) without a row of "
        "its own takes the price of the longest name it starts with.",
    )
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Empty: the input price."
    )
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    note = models.CharField(max_length=300, blank=True, help_text="Where the price comes from, and when.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0)
                & Q(output_per_million__gte=0)
                & (Q(cached_input_per_million__isnull=True) | Q(cached_input_per_million__gte=0)),
                name="model_price_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.model

    def cost(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
        """Dollars for one call. Cached prompt tokens are part of prompt_tokens, priced apart."""
        cached = min(cached_tokens, prompt_tokens)
        cached_price = (
            self.input_per_million if self.cached_input_per_million is None else self.cached_input_per_million
        )
        return (
            Decimal(prompt_tokens - cached) * self.input_per_million
            + Decimal(cached) * cached_price
            + Decimal(completion_tokens) * self.output_per_million
        ) / MILLION


class ModelCall(models.Model):
    """One call to a model, as gateway.provider reported it."""

    created_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, help_text="chat, chat_stream, embed or moderate.")
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.OTHER)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False, help_text="The server sent no usage: tokens estimated.")
    cost = models.DecimalField(
        max_digits=16, decimal_places=10, null=True, blank=True, help_text="US dollars; empty: no price."
    )
    price_missing = models.BooleanField(default=False)
    latency_ms = models.FloatField(default=0.0)
    ok = models.BooleanField(default=True)
    error = models.CharField(max_length=500, blank=True)
    answer = models.ForeignKey(
        "assistant.Answer", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_calls"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"]),
            models.Index(fields=["user", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.purpose} at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageDaily(models.Model):
    """Model calls summed per day, user, model and purpose; rebuilt by `usage_rollup`."""

    day = models.DateField()
    # Deleting a user deletes their rollups; their calls stay, without a user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    model = models.CharField(max_length=100)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(
        max_digits=18, decimal_places=10, default=Decimal(0), help_text="Of the calls with a price."
    )
    price_missing_calls = models.PositiveIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "model", "purpose"]
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user", "model", "purpose"],
                nulls_distinct=False,
                name="usage_daily_one_row_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.purpose}"


class Budget(models.Model):
    """A limit on what one user, or a group's members together, may spend per day or month."""

    class Period(models.TextChoices):
        DAY = "day", "Daily"
        MONTH = "month", "Monthly"

    class Unit(models.TextChoices):
        TOKENS = "tokens", "Tokens (prompt + completion)"
        USD = "usd", "US dollars"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.USD)
    limit = models.DecimalField(max_digits=16, decimal_places=6)
    active = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group__name", "user__username", "period"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(group__isnull=True))
                | (Q(user__isnull=True) & Q(group__isnull=False)),
                name="budget_user_or_group",
            ),
            models.CheckConstraint(condition=Q(limit__gte=0), name="budget_limit_not_negative"),
        ]

    def __str__(self) -> str:
        who = f"group {self.group}" if self.group_id else f"user {self.user}"
        return f"{self.get_period_display()} {self.get_unit_display()} budget of {who}"

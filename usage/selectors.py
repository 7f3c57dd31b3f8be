"""Reads for usage: prices, budget status, cost per day, models without a price."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from common.users import AnyUser
from usage.models import Budget, ModelCall, ModelPrice, UsageDaily


def price_for(model: str) -> ModelPrice | None:
    """The model's price: its own row, or the longest priced name it starts with (a dated snapshot).

    Read on every call (one indexed query), so an edit in the admin applies at once. Calls made
    under a usage Tracker (one answer) read the whole table once instead (`Tracker.price`).
    """
    exact = ModelPrice.objects.filter(model=model).first()
    if exact is not None:
        return exact
    prefixes = [p for p in ModelPrice.objects.values_list("model", flat=True) if model.startswith(p)]
    if not prefixes:
        return None
    return ModelPrice.objects.get(model=max(prefixes, key=len))


def price_table() -> dict[str, ModelPrice]:
    """Every price by model name, in one query (a unit of work reads it once; see price_in)."""
    return {price.model: price for price in ModelPrice.objects.all()}


def price_in(table: dict[str, ModelPrice], model: str) -> ModelPrice | None:
    """`price_for` against a table read with `price_table`: the same rule, no query."""
    exact = table.get(model)
    if exact is not None:
        return exact
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else None


def configured_models(also: Iterable[str] = ()) -> list[str]:
    """Models this installation is set up to call: the settings' models and `also`.

    `also` is for the assistants' own models (assistant.selectors.models_in_use): the caller reads
    them, so that usage, which every app records into, depends on none of them.
    """
    names = [settings.CHAT_MODEL, settings.EMBEDDING_MODEL, str(getattr(settings, "JUDGE_MODEL", "") or "")]
    return sorted({n for n in [*names, *also] if n})


def models_without_price(*, since: datetime | None = None, also: Iterable[str] = ()) -> list[str]:
    """Configured models (and `also`) with no price, and models whose calls were recorded without one."""
    since = since or timezone.now() - timedelta(days=30)
    called = ModelCall.objects.filter(price_missing=True, created_at__gte=since).values_list(
        "model", flat=True
    )
    names = set(configured_models(also)) | set(called.distinct())
    return sorted(name for name in names if price_for(name) is None)


# --- budgets -------------------------------------------------------------------------------


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The start and end of the day or month `now` is in, in the site's time zone."""
    local = timezone.localtime(now)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Budget.Period.MONTH:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        end = start + timedelta(days=1)
    # Re-localise: a DST change between start and end moves the offset.
    return start, timezone.make_aware(end.replace(tzinfo=None))


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    spent: Decimal
    resets_at: datetime

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.limit

    @property
    def share(self) -> float | None:
        return float(self.spent / self.budget.limit) if self.budget.limit else None


def _spent_expression(unit: str) -> Any:
    if unit == Budget.Unit.TOKENS:
        return Coalesce(Sum(F("prompt_tokens") + F("completion_tokens")), 0)
    return Coalesce(Sum("cost"), Decimal(0))


def budget_spent(budget: Budget, *, now: datetime | None = None) -> tuple[Decimal, datetime]:
    """What the budget's user (or group's members together) used this period, and when it resets."""
    start, end = period_bounds(budget.period, now or timezone.now())
    calls = ModelCall.objects.filter(created_at__gte=start, created_at__lt=end)
    calls = (
        calls.filter(user_id=budget.user_id) if budget.user_id else calls.filter(user__groups=budget.group_id)
    )
    spent = calls.aggregate(spent=_spent_expression(budget.unit))["spent"]
    return Decimal(spent), end


def budgets_of(user: AnyUser | None) -> QuerySet[Budget]:
    return (
        Budget.objects.filter(active=True)
        .filter(Q(user=user) | Q(group__user=user))
        .select_related("group", "user")
    )


def budget_statuses(*, user: AnyUser | None, now: datetime | None = None) -> list[BudgetStatus]:
    """Every active budget that applies to `user`, with what was spent against it."""
    now = now or timezone.now()
    statuses = []
    for budget in budgets_of(user).distinct():
        spent, resets_at = budget_spent(budget, now=now)
        statuses.append(BudgetStatus(budget=budget, spent=spent, resets_at=resets_at))
    return statuses


def budgets_overview(*, now: datetime | None = None) -> list[BudgetStatus]:
    """Every active budget with its spending, for the dashboard."""
    now = now or timezone.now()
    out = []
    for budget in Budget.objects.filter(active=True).select_related("group", "user"):
        spent, resets_at = budget_spent(budget, now=now)
        out.append(BudgetStatus(budget=budget, spent=spent, resets_at=resets_at))
    return out


# --- rolled-up usage -----------------------------------------------------------------------


def cost_per_day(start: date, end: date, *, by: str) -> dict[str, dict[date, float]]:
    """Dollars per day (of priced calls) for each model or purpose (`by`), from the rollups."""
    rows = (
        UsageDaily.objects.filter(day__gte=start, day__lte=end)
        .values("day", by)
        .annotate(dollars=Sum("cost"))
        .order_by()
    )
    out: dict[str, dict[date, float]] = defaultdict(dict)
    for row in rows:
        out[str(row[by])][row["day"]] = float(row["dollars"] or 0)
    return dict(out)


def usage_totals(start: date, end: date) -> list[dict[str, Any]]:
    """Calls, tokens and cost per model and purpose over the range, from the rollups."""
    rows = (
        UsageDaily.objects.filter(day__gte=start, day__lte=end)
        .values("model", "purpose")
        .annotate(
            calls=Sum("calls"),
            errors=Sum("errors"),
            prompt_tokens=Sum("prompt_tokens"),
            cached_tokens=Sum("cached_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
            price_missing_calls=Sum("price_missing_calls"),
        )
        .order_by("model", "purpose")
    )
    return [dict(row) for row in rows]


def last_rollup_at() -> datetime | None:
    return UsageDaily.objects.aggregate(at=Max("updated_at"))["at"]

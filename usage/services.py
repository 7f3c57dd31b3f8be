"""Writes for usage: record each model call with its cost, track a unit of work, roll usage up
per day, and enforce budgets before a model is called."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from common.users import AnyUser
from gateway import provider
from usage import selectors
from usage.models import Budget, ModelCall, ModelPrice, UsageDaily
from usage.models import Purpose as Purpose  # re-exported: callers tag work with it

logger = logging.getLogger(__name__)

T = TypeVar("T")
ANSWER_COST_PLACES = Decimal("0.000001")  # Answer.cost_usd has six decimal places

_warned_missing: set[str] = set()


# --- tracking a unit of work ---------------------------------------------------------------


@dataclass
class Tracker:
    """The model calls of one unit of work (an answer, an eval case): who pays, and the totals."""

    user: AnyUser | None = None
    purpose: str = Purpose.ANSWER
    call_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    price_missing: bool = False
    # The price table, read at the first call of this unit of work and reused by the next ones
    # (an answer calls an embedding model and a chat model, maybe a repair or a tool round).
    prices: dict[str, ModelPrice] | None = field(default=None, repr=False, compare=False)

    def price(self, model: str) -> ModelPrice | None:
        if self.prices is None:
            self.prices = selectors.price_table()
        return selectors.price_in(self.prices, model)

    def add(self, call: ModelCall) -> None:
        self.call_ids.append(call.pk)
        self.prompt_tokens += call.prompt_tokens
        self.cached_tokens += call.cached_tokens
        self.completion_tokens += call.completion_tokens
        if call.cost is None:
            self.price_missing = True
        else:
            self.cost += call.cost

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> Decimal | None:
        """What the work cost, or None when a call's model has no price (unknown is not zero)."""
        if self.price_missing:
            return None
        return self.cost.quantize(ANSWER_COST_PLACES)


_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("usage_tracker", default=None)


def _user_id(user: AnyUser | None) -> int | None:
    pk = getattr(user, "pk", None)
    return pk if isinstance(pk, int) else None


@contextmanager
def tracking(*, user: AnyUser | None, purpose: str = Purpose.ANSWER) -> Iterator[Tracker]:
    """Tag the model calls made inside this block with `user` and `purpose`, and total them.

        with usage.tracking(user=request.user) as tracker:
            answer = pipeline.run_to_answer(...)
        answer_save(answer=answer, tracker=tracker)

    A context variable: use it around plain calls. For a generator (a streamed answer) wrap the
    iteration with `tracked` instead, so that nothing stays tagged while it is suspended.
    """
    tracker = Tracker(user=user if _user_id(user) else None, purpose=purpose)
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)


def tracked(tracker: Tracker, events: Iterator[T]) -> Generator[T, None, None]:
    """Iterate `events` with `tracker` in force during each step, and only then.

    Closing this generator closes `events` (a stopped stream still records what it spent).
    """
    iterator = iter(events)
    try:
        while True:
            token = _current.set(tracker)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                _current.reset(token)
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            token = _current.set(tracker)
            try:
                close()
            finally:
                _current.reset(token)


def current_tracker() -> Tracker | None:
    return _current.get()


# --- recording calls -----------------------------------------------------------------------


def _purpose_of(record: provider.CallRecord, tracker: Tracker | None) -> str:
    if record.purpose:
        return record.purpose if record.purpose in Purpose.values else Purpose.OTHER
    if record.kind == "embed":
        return Purpose.EMBEDDING
    if record.kind == "moderate":
        return Purpose.GUARDRAIL
    return tracker.purpose if tracker is not None else Purpose.OTHER


def _report_missing(model: str) -> None:
    if model not in _warned_missing:
        _warned_missing.add(model)
        logger.warning(
            "No price for model %r: its calls are recorded with an unknown cost. Add it under "
            "Usage and cost > Model prices in the admin (0 for a model that runs locally).",
            model,
        )


def call_record(record: provider.CallRecord) -> ModelCall | None:
    """The provider listener: one ModelCall per model call, priced from the price table.

    A model without a price gets cost NULL and price_missing, and a warning once per process:
    it is never counted as free. Recording failures are logged and swallowed; accounting must
    not break an answer.
    """
    if record.purpose == "health":
        return None  # /healthz probes every few seconds behind a load balancer; that is not usage
    tracker = _current.get()
    price = tracker.price(record.model) if tracker is not None else selectors.price_for(record.model)
    usage = record.usage
    if price is None:
        _report_missing(record.model)
        cost = None
    else:
        cost = price.cost(
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens,
        )
    try:
        own_transaction = not connection.in_atomic_block
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's transaction usable
            if own_transaction:
                _commit_without_waiting()
            call = ModelCall.objects.create(
                user_id=_user_id(tracker.user) if tracker else None,
                model=record.model[:100],
                kind=record.kind,
                purpose=_purpose_of(record, tracker),
                prompt_tokens=max(usage.prompt_tokens, 0),
                cached_tokens=max(usage.cached_tokens, 0),
                completion_tokens=max(usage.completion_tokens, 0),
                estimated=usage.estimated,
                cost=cost,
                price_missing=price is None,
                latency_ms=round(record.latency_ms, 1),
                ok=record.ok,
                error=record.error[:500],
            )
    except Exception as exc:  # the database may be unavailable, or the caller has none (a script)
        logger.warning("could not record a %s call to %s: %s", record.kind, record.model, exc)
        return None
    if tracker is not None:
        tracker.add(call)
    return call


def _commit_without_waiting() -> None:
    """Let the current transaction (a call record's own) commit without waiting for the WAL flush.

    A call record is written in the middle of an answer, and waiting for the disk there costs
    the user milliseconds (more on a busy disk). The record is still written in order and
    atomically; only a PostgreSQL crash within a fraction of a second of it could lose it
    (synchronous_commit off: no corruption, the last commits are simply not there). Used only
    when the record has a transaction of its own; inside a caller's, the caller's commit decides.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


def answer_account(*, answer: Any, tracker: Tracker) -> None:
    """After `answer` is saved: its cost (None when a price is missing) and its calls attached."""
    answer.cost_usd = tracker.cost_usd
    answer.save(update_fields=["cost_usd"])
    calls_attach(answer=answer, tracker=tracker)


def calls_attach(*, answer: Any, tracker: Tracker) -> int:
    """Attach the tracker's calls to `answer` without adding them to its cost (an eval judging
    it); returns how many. Calls already attached elsewhere stay where they are."""
    return calls_attach_ids(answer=answer, call_ids=tracker.call_ids)


def calls_attach_ids(*, answer: Any, call_ids: list[int]) -> int:
    """`calls_attach` for calls known by id (a task that runs after the answer is saved)."""
    if not call_ids:
        return 0
    return ModelCall.objects.filter(pk__in=call_ids, answer__isnull=True).update(answer=answer)


# --- rollups -------------------------------------------------------------------------------


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    return start, timezone.make_aware(datetime.combine(day + timedelta(days=1), datetime.min.time()))


@transaction.atomic
def usage_rollup(*, day: date) -> int:
    """Rebuild the UsageDaily rows of `day` from its calls; returns how many rows it holds.

    Idempotent: rows are upserted on (day, user, model, purpose), and a key with no calls left
    is deleted, so running it twice, or concurrently, gives the same rows.
    """
    start, end = _day_bounds(day)
    groups = (
        ModelCall.objects.filter(created_at__gte=start, created_at__lt=end)
        .values("user_id", "model", "purpose")
        .annotate(
            n=Count("pk"),
            failed=Count("pk", filter=Q(ok=False)),
            prompt=Sum("prompt_tokens"),
            cached=Sum("cached_tokens"),
            completion=Sum("completion_tokens"),
            dollars=Sum("cost"),
            missing=Count("pk", filter=Q(price_missing=True)),
            latency=Sum("latency_ms"),
        )
        .order_by()
    )
    rows = [
        UsageDaily(
            day=day,
            user_id=g["user_id"],
            model=g["model"],
            purpose=g["purpose"],
            calls=g["n"],
            errors=g["failed"],
            prompt_tokens=g["prompt"] or 0,
            cached_tokens=g["cached"] or 0,
            completion_tokens=g["completion"] or 0,
            cost=g["dollars"] or Decimal(0),
            price_missing_calls=g["missing"],
            latency_ms_sum=g["latency"] or 0.0,
        )
        for g in groups
    ]
    if rows:
        UsageDaily.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["day", "user", "model", "purpose"],
            update_fields=[
                "calls",
                "errors",
                "prompt_tokens",
                "cached_tokens",
                "completion_tokens",
                "cost",
                "price_missing_calls",
                "latency_ms_sum",
                "updated_at",
            ],
        )
    kept = [row.pk for row in rows]
    UsageDaily.objects.filter(day=day).exclude(pk__in=kept).delete()
    return len(rows)


def usage_rollup_recent(*, days: int = 2) -> int:
    """Roll up today and the days before it (yesterday's last calls land after midnight)."""
    today = timezone.localdate()
    return sum(usage_rollup(day=today - timedelta(days=n)) for n in range(days))


# --- budgets -------------------------------------------------------------------------------


class BudgetExceeded(Exception):
    """A budget is used up; the message is for the person who asked."""

    def __init__(self, message: str, *, budget: Budget, spent: Decimal) -> None:
        super().__init__(message)
        self.message = message
        self.budget = budget
        self.spent = spent


def _amount(value: Decimal, unit: str) -> str:
    if unit == Budget.Unit.TOKENS:
        return f"{int(value):,} tokens"
    return f"${value:,.4f}".rstrip("0").rstrip(".") if value else "$0"


def budget_check(*, user: AnyUser | None) -> None:
    """Raise BudgetExceeded when any active budget of `user` or of one of their groups is used up.

    Read from the database on every call, so a budget changed in the admin applies to the next
    request. Calls without a price do not count toward a money budget (their cost is unknown;
    the dashboard reports them).
    """
    if _user_id(user) is None:
        return
    now = timezone.now()
    for status in selectors.budget_statuses(user=user, now=now):
        if not status.exceeded:
            continue
        budget = status.budget
        period = "today" if budget.period == Budget.Period.DAY else "this month"
        if budget.group_id:
            who = f"Your group “{budget.group}” has used {_amount(status.spent, budget.unit)}"
        else:
            who = f"You have used {_amount(status.spent, budget.unit)}"
        message = (
            f"{who} {period}, and its budget is {_amount(budget.limit, budget.unit)}. "
            f"It starts again on {timezone.localtime(status.resets_at):%Y-%m-%d %H:%M %Z}; "
            "ask staff to raise it if you need more before then."
        )
        raise BudgetExceeded(message, budget=budget, spent=status.spent)

"""Reads for the operations dashboard: answers, latency, cost, cache, routing, flags, evals.

Dates are days in the site's time zone, both ends included.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from assistant import selectors as assistant_selectors
from assistant.models import Answer, Flag
from evals.models import Run
from evals.services import RUNNER_USERNAME
from usage import selectors as usage

KNOWN_STAGES = ("total", "retrieval", "model", "repair", "tools")


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont(p) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date

    @classmethod
    def last(cls, days: int) -> DateRange:
        today = timezone.localdate()
        return cls(today - timedelta(days=days - 1), today)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        start = timezone.make_aware(datetime.combine(self.start, datetime.min.time()))
        end = timezone.make_aware(datetime.combine(self.end + timedelta(days=1), datetime.min.time()))
        return start, end


def people_answers(period: DateRange) -> QuerySet[Answer]:
    """Answers people asked for in the range: replays and eval runs left out."""
    start, end = period.bounds
    return Answer.objects.filter(created_at__gte=start, created_at__lt=end, replay_of__isnull=True).exclude(
        user__username=RUNNER_USERNAME
    )


def _day() -> TruncDate:
    return TruncDate("created_at", tzinfo=timezone.get_current_timezone())


def answers_per_day(period: DateRange) -> dict[str, dict[date, float]]:
    rows = (
        people_answers(period)
        .annotate(day=_day())
        .values("day")
        .annotate(total=Count("pk"), hits=Count("pk", filter=Q(cache_hit=True)))
    )
    out: dict[str, dict[date, float]] = {"answers": {}, "cache hits": {}}
    for row in rows.order_by():
        out["answers"][row["day"]] = row["total"]
        out["cache hits"][row["day"]] = row["hits"]
    return out


SHOWN_LABELS = {"model": "the model's answer", "evidence": "evidence quoted", "none": "no answer"}


def answer_sources_per_day(period: DateRange) -> dict[str, dict[date, float]]:
    """Answers per day by whose text was shown: the model's, evidence quoted from the documents, none."""
    rows = people_answers(period).annotate(day=_day()).values("day", "answer_source").annotate(n=Count("pk"))
    out: dict[str, dict[date, float]] = defaultdict(dict)
    for row in rows.order_by():
        out[SHOWN_LABELS.get(row["answer_source"], row["answer_source"])][row["day"]] = row["n"]
    return dict(out)


def latency_stages(period: DateRange) -> list[str]:
    start, end = period.bounds
    seen: Counter[str] = Counter()
    for latency in people_answers(period).values_list("latency_ms", flat=True).order_by()[:5000]:
        if isinstance(latency, dict):
            seen.update(k for k, v in latency.items() if isinstance(v, int | float))
    known = [s for s in KNOWN_STAGES if s in seen]
    return known + sorted(s for s in seen if s not in KNOWN_STAGES)


def _stage_value(stage: str) -> Any:
    return Cast(KT(f"latency_ms__{stage}"), FloatField())


def latency_table(period: DateRange) -> list[dict[str, Any]]:
    """p50 and p95 of each stage of answer latency (ms) over the range."""
    rows = []
    answers = people_answers(period)
    for stage in latency_stages(period):
        numeric = answers.filter(**{f"latency_ms__{stage}__isnull": False}).annotate(v=_stage_value(stage))
        figures = numeric.aggregate(
            n=Count("pk"), p50=Percentile("v", fraction=0.5), p95=Percentile("v", fraction=0.95)
        )
        if figures["n"]:
            rows.append({"stage": stage, **figures})
    return rows


def latency_per_day(period: DateRange, stage: str = "total") -> dict[str, dict[date, float]]:
    rows = (
        people_answers(period)
        .filter(**{f"latency_ms__{stage}__isnull": False})
        .annotate(v=_stage_value(stage), day=_day())
        .values("day")
        .annotate(p50=Percentile("v", fraction=0.5), p95=Percentile("v", fraction=0.95))
        .order_by()
    )
    out: dict[str, dict[date, float]] = {"p50": {}, "p95": {}}
    for row in rows:
        out["p50"][row["day"]] = row["p50"]
        out["p95"][row["day"]] = row["p95"]
    return out


@dataclass(frozen=True)
class CacheFigures:
    answers: int
    hits: int
    saved_usd: Decimal
    saved_ms: float

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.answers if self.answers else None


def cache_figures(period: DateRange) -> CacheFigures:
    """Hits, and what they saved: the cost and time of the answers they served."""
    answers = people_answers(period)
    hits = answers.filter(cache_hit=True)
    saved = hits.filter(cached_from__isnull=False).aggregate(
        usd=Sum("cached_from__cost_usd"),
        ms=Sum(Cast(KeyTextTransform("total", "cached_from__latency_ms"), FloatField())),
    )
    served = hits.aggregate(ms=Sum(_stage_value("total")))
    saved_ms = max(0.0, float(saved["ms"] or 0) - float(served["ms"] or 0))
    return CacheFigures(
        answers=answers.count(),
        hits=hits.count(),
        saved_usd=saved["usd"] or Decimal(0),
        saved_ms=saved_ms,
    )


def cache_rate_per_day(period: DateRange) -> dict[str, dict[date, float]]:
    counts = answers_per_day(period)
    rates = {
        day: counts["cache hits"].get(day, 0) / total for day, total in counts["answers"].items() if total
    }
    return {"hit rate": rates}


def routing_mix(period: DateRange) -> dict[str, Any]:
    """Answers per model, and per routing decision where one was recorded (Answer.route)."""
    answers = people_answers(period)
    by_model = list(answers.values("model").annotate(n=Count("pk")).order_by("-n", "model"))
    routes: Counter[str] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    for route in answers.exclude(route={}).values_list("route", flat=True).order_by()[:20000]:
        if isinstance(route, dict):
            name = str(route.get("route") or route.get("model") or "?")
            routes[name] += 1
            reasons[(name, str(route.get("reason") or ""))] += 1
    per_day: dict[str, dict[date, float]] = defaultdict(dict)
    for row in answers.annotate(day=_day()).values("day", "model").annotate(n=Count("pk")).order_by():
        per_day[row["model"]][row["day"]] = row["n"]
    return {
        "by_model": by_model,
        "routes": routes.most_common(),
        "reasons": [(name, reason, n) for (name, reason), n in reasons.most_common(10)],
        "per_day": dict(per_day),
    }


def flags_per_day(period: DateRange) -> dict[str, dict[date, float]]:
    start, end = period.bounds
    rows = (
        Flag.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=_day())
        .values("day", "source")
        .annotate(n=Count("pk"))
        .order_by()
    )
    out: dict[str, dict[date, float]] = defaultdict(dict)
    labels = dict(Flag.Source.choices)
    for row in rows:
        out[str(labels.get(row["source"], row["source"]))][row["day"]] = row["n"]
    return dict(out)


def eval_pass_rate_per_day(period: DateRange) -> dict[str, dict[date, float]]:
    """The pass rate of each suite's completed runs, averaged per day they finished."""
    start, end = period.bounds
    runs = Run.objects.filter(
        status=Run.Status.COMPLETED, finished_at__gte=start, finished_at__lt=end
    ).select_related("suite")
    sums: dict[str, dict[date, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        rate = run.summary.get("pass_rate") if isinstance(run.summary, dict) else None
        if isinstance(rate, int | float) and run.finished_at is not None:
            sums[run.suite.name][timezone.localtime(run.finished_at).date()].append(float(rate))
    return {
        suite: {day: sum(rates) / len(rates) for day, rates in days.items()} for suite, days in sums.items()
    }


def usage_figures(period: DateRange) -> dict[str, Any]:
    totals = usage.usage_totals(period.start, period.end)
    return {
        "rows": totals,
        "cost": sum((row["cost"] or Decimal(0) for row in totals), Decimal(0)),
        "tokens": sum((row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0) for row in totals),
        "price_missing_calls": sum(row["price_missing_calls"] or 0 for row in totals),
        "by_model": usage.cost_per_day(period.start, period.end, by="model"),
        "by_purpose": usage.cost_per_day(period.start, period.end, by="purpose"),
        "rolled_up_at": usage.last_rollup_at(),
    }


def answers_cost(period: DateRange) -> Decimal:
    """What people's answers cost (answers with a known cost)."""
    return people_answers(period).aggregate(c=Sum(F("cost_usd")))["c"] or Decimal(0)


def models_without_price() -> list[str]:
    """Models with no price: the site's, the assistants', and those recorded without one."""
    return usage.models_without_price(also=assistant_selectors.models_in_use())

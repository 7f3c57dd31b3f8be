"""Reads for routing: each assistant's policy, the route mix, and quality and cost per route in evals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from assistant.models import Answer, Assistant
from evals.models import Result
from routing.models import FineTuneJob
from routing.policy import RoutingPolicy, routing_config_errors

GRADED = (Result.Status.PASSED, Result.Status.FAILED, Result.Status.ERRORED)


@dataclass(frozen=True)
class PolicyRow:
    assistant: Assistant
    policy: dict[str, Any] | None  # None: no routing, the assistant's own model
    errors: list[str]


def policies() -> list[PolicyRow]:
    rows = []
    for assistant in Assistant.objects.order_by("name"):
        errors = routing_config_errors(assistant.routing)
        policy = None if errors else RoutingPolicy.from_dict(assistant.routing)
        rows.append(PolicyRow(assistant, policy.as_json() if policy else None, errors))
    return rows


def route_mix(*, days: int = 30) -> list[dict[str, Any]]:
    """Answers per assistant, route and model in the last `days` days ("unrouted": no decision)."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        Answer.objects.filter(created_at__gte=since)
        .annotate(route_name=KeyTextTransform("route", "route"))
        .values("assistant__name", "route_name", "model")
        .annotate(answers=Count("pk"))
        .order_by("assistant__name", "route_name", "model")
    )
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["assistant__name"]] = totals.get(row["assistant__name"], 0) + row["answers"]
    return [
        {
            "assistant": row["assistant__name"],
            "route": row["route_name"] or "unrouted",
            "model": row["model"],
            "answers": row["answers"],
            "share": round(row["answers"] / totals[row["assistant__name"]], 4),
        }
        for row in rows
    ]


def route_comparison(*, run_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Eval results grouped by the route and model of their answers: pass rate, tokens and cost.

    Errored results count as not passed. `cost_usd` is None when none of a group's answers was
    priced, and `priced` says how many were, so a partial sum is not read as a total.
    """
    results = Result.objects.filter(status__in=GRADED, answer__isnull=False)
    if run_ids is not None:
        results = results.filter(run_id__in=run_ids)
    rows = (
        results.annotate(route_name=KeyTextTransform("route", "answer__route"))
        .values("route_name", "answer__model")
        .annotate(
            results=Count("pk"),
            passes=Count("pk", filter=Q(status=Result.Status.PASSED)),
            prompt_tokens=Coalesce(Sum("answer__prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("answer__completion_tokens"), 0),
            cost=Sum("answer__cost_usd"),
            priced=Count("pk", filter=Q(answer__cost_usd__isnull=False)),
            runs=Count("run_id", distinct=True),
        )
        .order_by("route_name", "answer__model")
    )
    return [
        {
            "route": row["route_name"] or "unrouted",
            "model": row["answer__model"],
            "runs": row["runs"],
            "results": row["results"],
            "passed": row["passes"],
            "pass_rate": round(row["passes"] / row["results"], 4) if row["results"] else None,
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "tokens_per_result": round((row["prompt_tokens"] + row["completion_tokens"]) / row["results"], 1),
            "cost_usd": None if not row["priced"] else float(row["cost"]),
            "priced": row["priced"],
        }
        for row in rows
    ]


def finetune_jobs(*, limit: int = 20) -> list[FineTuneJob]:
    return list(
        FineTuneJob.objects.select_related("assistant", "suite", "candidate_run", "baseline_run")[:limit]
    )

"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Read from the database at scrape time, so web processes and Celery workers count as one: the
counters are totals since the install began (deleted rows leave them, which Prometheus reads as
a counter reset).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Count, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from assistant.models import Answer, Flag
from usage.models import ModelCall

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ANSWER_STAGES = ("total", "retrieval", "model")


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | int, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self,
        name: str,
        values: QuerySet[Any],
        field: str,
        *,
        scale: float,
        groups: Iterable[dict[str, object]],
        filters: Sequence[Q],
    ) -> None:
        """One histogram per label set: bucket counts by SQL, with `field` in ms scaled to seconds."""
        for labels, where in zip(groups, filters, strict=True):
            aggregates: dict[str, Any] = {
                f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": bound / scale}))
                for i, bound in enumerate(LATENCY_BUCKETS_S)
            }
            figures = values.filter(where).aggregate(n=Count("pk"), total=Sum(field), **aggregates)
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                self.sample(f"{name}_bucket", figures[f"le{i}"], **labels, le=bound)
            self.sample(f"{name}_bucket", figures["n"], **labels, le="+Inf")
            self.sample(f"{name}_sum", float(figures["total"] or 0) * scale, **labels)
            self.sample(f"{name}_count", figures["n"], **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _answers(out: Exposition) -> None:
    out.family(
        "groundwork_answers_total", "counter", "Answers made, by model and whether the cache served it."
    )
    rows = (
        Answer.objects.values("model", "cache_hit", "abstained")
        .annotate(n=Count("pk"))
        .order_by("model", "cache_hit", "abstained")
    )
    for row in rows:
        out.sample(
            "groundwork_answers_total",
            row["n"],
            model=row["model"],
            cache_hit="true" if row["cache_hit"] else "false",
            abstained="true" if row["abstained"] else "false",
        )
    out.family("groundwork_cache_hits_total", "counter", "Answers served from the semantic cache.")
    out.sample("groundwork_cache_hits_total", Answer.objects.filter(cache_hit=True).count())
    out.family("groundwork_answer_latency_seconds", "histogram", "Time to make an answer, by pipeline stage.")
    annotated = Answer.objects.annotate(
        **{f"stage_{stage}": Cast(KT(f"latency_ms__{stage}"), FloatField()) for stage in ANSWER_STAGES}
    )
    for stage in ANSWER_STAGES:
        out.histogram(
            "groundwork_answer_latency_seconds",
            annotated,
            f"stage_{stage}",
            scale=0.001,
            groups=[{"stage": stage}],
            filters=[Q(**{f"latency_ms__{stage}__isnull": False})],
        )


def _flags(out: Exposition) -> None:
    out.family("groundwork_flags_total", "counter", "Answers flagged for review, by source and category.")
    for row in (
        Flag.objects.values("source", "category").annotate(n=Count("pk")).order_by("source", "category")
    ):
        out.sample("groundwork_flags_total", row["n"], source=row["source"], category=row["category"])


def _model_calls(out: Exposition) -> None:
    rows = list(
        ModelCall.objects.values("model", "purpose", "ok")
        .annotate(
            n=Count("pk"),
            prompt=Sum("prompt_tokens"),
            cached=Sum("cached_tokens"),
            completion=Sum("completion_tokens"),
            dollars=Sum("cost"),
            missing=Count("pk", filter=Q(price_missing=True)),
        )
        .order_by("model", "purpose", "ok")
    )
    out.family("groundwork_model_calls_total", "counter", "Calls to a model, by model, purpose and outcome.")
    for row in rows:
        out.sample(
            "groundwork_model_calls_total",
            row["n"],
            model=row["model"],
            purpose=row["purpose"],
            status="ok" if row["ok"] else "error",
        )
    tokens: dict[tuple[str, str], dict[str, int]] = {}
    dollars: dict[tuple[str, str], float] = {}
    missing: dict[str, int] = {}
    for row in rows:
        key = (row["model"], row["purpose"])
        kinds = tokens.setdefault(key, {"prompt": 0, "cached": 0, "completion": 0})
        kinds["prompt"] += int(row["prompt"] or 0)
        kinds["cached"] += int(row["cached"] or 0)
        kinds["completion"] += int(row["completion"] or 0)
        dollars[key] = dollars.get(key, 0.0) + float(row["dollars"] or 0)
        missing[row["model"]] = missing.get(row["model"], 0) + row["missing"]
    out.family(
        "groundwork_model_tokens_total",
        "counter",
        "Tokens, by model, purpose and type (cached tokens are part of prompt tokens).",
    )
    for (model, purpose), kinds in tokens.items():
        for kind, value in kinds.items():
            out.sample("groundwork_model_tokens_total", value, model=model, purpose=purpose, type=kind)
    out.family(
        "groundwork_model_cost_usd_total",
        "counter",
        "US dollars spent, of the calls whose model has a price.",
    )
    for (model, purpose), spent in dollars.items():
        out.sample("groundwork_model_cost_usd_total", spent, model=model, purpose=purpose)
    out.family(
        "groundwork_model_calls_price_missing_total",
        "counter",
        "Calls recorded without a price (their cost is unknown, not zero).",
    )
    for model, value in missing.items():
        out.sample("groundwork_model_calls_price_missing_total", value, model=model)
    out.family("groundwork_model_call_latency_seconds", "histogram", "Time a model call took, by purpose.")
    purposes = sorted({row["purpose"] for row in rows})
    out.histogram(
        "groundwork_model_call_latency_seconds",
        ModelCall.objects.all(),
        "latency_ms",
        scale=0.001,
        groups=[{"purpose": p} for p in purposes],
        filters=[Q(purpose=p) for p in purposes],
    )


def exposition() -> str:
    out = Exposition()
    _answers(out)
    _flags(out)
    _model_calls(out)
    return out.text()

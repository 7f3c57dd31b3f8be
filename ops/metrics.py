"""Prometheus metrics, exposed by `prometheus_client` from a collector that reads the database.

Read from the database at scrape time, so web processes and Celery workers count as one: the
counters are totals since the install began (deleted rows leave them, which Prometheus reads as
a counter reset). That is why there are no in-process `Counter` objects here: a custom collector
builds the metric families on every scrape, and a registry of our own keeps the library's
process and platform collectors out of the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db.models import Count, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from assistant.models import Answer, Flag
from usage.models import ModelCall

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ANSWER_STAGES = ("total", "retrieval", "model")


def _bool(value: object) -> str:
    return "true" if value else "false"


def _histogram(
    family: HistogramMetricFamily,
    values: QuerySet[Any],
    field: str,
    *,
    scale: float,
    groups: Iterable[Sequence[str]],
    filters: Sequence[Q],
) -> None:
    """One histogram per label set: bucket counts by SQL, with `field` in ms scaled to seconds."""
    for labels, where in zip(groups, filters, strict=True):
        aggregates: dict[str, Any] = {
            f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": bound / scale}))
            for i, bound in enumerate(LATENCY_BUCKETS_S)
        }
        figures = values.filter(where).aggregate(n=Count("pk"), total=Sum(field), **aggregates)
        buckets = [(str(bound), figures[f"le{i}"]) for i, bound in enumerate(LATENCY_BUCKETS_S)]
        buckets.append(("+Inf", figures["n"]))
        family.add_metric(list(labels), buckets, float(figures["total"] or 0) * scale)


def _answers() -> Iterator[Metric]:
    answers = CounterMetricFamily(
        "groundwork_answers_total",
        "Answers made, by model and whether the cache served it.",
        labels=["model", "cache_hit", "abstained"],
    )
    rows = (
        Answer.objects.values("model", "cache_hit", "abstained")
        .annotate(n=Count("pk"))
        .order_by("model", "cache_hit", "abstained")
    )
    for row in rows:
        answers.add_metric([row["model"], _bool(row["cache_hit"]), _bool(row["abstained"])], row["n"])
    yield answers
    yield CounterMetricFamily(
        "groundwork_cache_hits_total",
        "Answers served from the semantic cache.",
        value=Answer.objects.filter(cache_hit=True).count(),
    )
    latency = HistogramMetricFamily(
        "groundwork_answer_latency_seconds", "Time to make an answer, by pipeline stage.", labels=["stage"]
    )
    annotated = Answer.objects.annotate(
        **{f"stage_{stage}": Cast(KT(f"latency_ms__{stage}"), FloatField()) for stage in ANSWER_STAGES}
    )
    for stage in ANSWER_STAGES:
        _histogram(
            latency,
            annotated,
            f"stage_{stage}",
            scale=0.001,
            groups=[[stage]],
            filters=[Q(**{f"latency_ms__{stage}__isnull": False})],
        )
    yield latency


def _flags() -> Iterator[Metric]:
    flags = CounterMetricFamily(
        "groundwork_flags_total",
        "Answers flagged for review, by source and category.",
        labels=["source", "category"],
    )
    for row in (
        Flag.objects.values("source", "category").annotate(n=Count("pk")).order_by("source", "category")
    ):
        flags.add_metric([row["source"], row["category"]], row["n"])
    yield flags


def _model_calls() -> Iterator[Metric]:
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
    calls = CounterMetricFamily(
        "groundwork_model_calls_total",
        "Calls to a model, by model, purpose and outcome.",
        labels=["model", "purpose", "status"],
    )
    tokens: dict[tuple[str, str], dict[str, int]] = {}
    dollars: dict[tuple[str, str], float] = {}
    missing: dict[str, int] = {}
    for row in rows:
        calls.add_metric([row["model"], row["purpose"], "ok" if row["ok"] else "error"], row["n"])
        key = (row["model"], row["purpose"])
        kinds = tokens.setdefault(key, {"prompt": 0, "cached": 0, "completion": 0})
        kinds["prompt"] += int(row["prompt"] or 0)
        kinds["cached"] += int(row["cached"] or 0)
        kinds["completion"] += int(row["completion"] or 0)
        dollars[key] = dollars.get(key, 0.0) + float(row["dollars"] or 0)
        missing[row["model"]] = missing.get(row["model"], 0) + row["missing"]
    yield calls
    by_type = CounterMetricFamily(
        "groundwork_model_tokens_total",
        "Tokens, by model, purpose and type (cached tokens are part of prompt tokens).",
        labels=["model", "purpose", "type"],
    )
    for (model, purpose), kinds in tokens.items():
        for kind, value in kinds.items():
            by_type.add_metric([model, purpose, kind], value)
    yield by_type
    cost = CounterMetricFamily(
        "groundwork_model_cost_usd_total",
        "US dollars spent, of the calls whose model has a price.",
        labels=["model", "purpose"],
    )
    for (model, purpose), spent in dollars.items():
        cost.add_metric([model, purpose], spent)
    yield cost
    unpriced = CounterMetricFamily(
        "groundwork_model_calls_price_missing_total",
        "Calls recorded without a price (their cost is unknown, not zero).",
        labels=["model"],
    )
    for model, value in missing.items():
        unpriced.add_metric([model], value)
    yield unpriced
    latency = HistogramMetricFamily(
        "groundwork_model_call_latency_seconds", "Time a model call took, by purpose.", labels=["purpose"]
    )
    purposes = sorted({row["purpose"] for row in rows})
    _histogram(
        latency,
        ModelCall.objects.all(),
        "latency_ms",
        scale=0.001,
        groups=[[p] for p in purposes],
        filters=[Q(purpose=p) for p in purposes],
    )
    yield latency


class DatabaseCollector(Collector):
    """Every Groundwork metric, read from the database when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        yield from _answers()
        yield from _flags()
        yield from _model_calls()


# Not the library's default REGISTRY: that one also carries process and garbage-collector metrics
# of whichever worker answers the scrape, which mean nothing for a multi-process install.
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def exposition() -> str:
    return generate_latest(REGISTRY).decode()

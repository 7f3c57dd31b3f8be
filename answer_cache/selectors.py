"""Reads for the answer cache: hit rate and what the hits saved."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import F, FloatField, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from answer_cache.models import CacheCounter, CachedAnswer
from assistant.models import Answer


@dataclass(frozen=True)
class CacheStats:
    lookups: int  # questions looked up in the cache (hits and misses)
    hits: int  # answers served from the cache (Answer.cache_hit)
    exact_hits: int
    semantic_hits: int
    hit_rate: float | None  # hits / lookups; None before any lookup
    saved_prompt_tokens: int
    saved_completion_tokens: int
    saved_cost_usd: Decimal
    saved_ms: float  # the source answers' time less the hits' own time
    entries: int  # entries that can still be served (unexpired)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_cost_usd": str(self.saved_cost_usd)}


def _total_ms(field: str) -> Any:
    """The sum of `field`'s "total" key (a latency_ms JSON), 0 where missing."""
    return Coalesce(Sum(Cast(KeyTextTransform("total", field), FloatField())), 0.0)


def cache_stats(*, since: datetime | None = None) -> CacheStats:
    """Hits and savings from Answer rows (a hit records cached_from), lookups from the counters.

    A hit saves what its source answer cost: its tokens, its price, and its time less the
    time the hit itself took.
    """
    hits = Answer.objects.filter(cache_hit=True)
    counters = CacheCounter.objects.all()
    if since is not None:
        hits = hits.filter(created_at__gte=since)
        counters = counters.filter(day__gte=timezone.localdate(since))
    saved = hits.filter(cached_from__isnull=False).aggregate(
        prompt=Coalesce(Sum("cached_from__prompt_tokens"), 0),
        completion=Coalesce(Sum("cached_from__completion_tokens"), 0),
        cost=Sum(F("cached_from__cost_usd")),
        source_ms=_total_ms("cached_from__latency_ms"),
        hit_ms=_total_ms("latency_ms"),
    )
    counted = counters.aggregate(
        lookups=Coalesce(Sum("lookups"), 0),
        exact=Coalesce(Sum("exact_hits"), 0),
        semantic=Coalesce(Sum("semantic_hits"), 0),
    )
    n_hits = hits.count()
    lookups = max(int(counted["lookups"]), n_hits)
    return CacheStats(
        lookups=lookups,
        hits=n_hits,
        exact_hits=int(counted["exact"]),
        semantic_hits=int(counted["semantic"]),
        hit_rate=round(n_hits / lookups, 4) if lookups else None,
        saved_prompt_tokens=int(saved["prompt"]),
        saved_completion_tokens=int(saved["completion"]),
        saved_cost_usd=Decimal(saved["cost"] or 0),
        saved_ms=round(max(float(saved["source_ms"]) - float(saved["hit_ms"]), 0.0), 1),
        entries=CachedAnswer.objects.filter(expires_at__gt=timezone.now()).count(),
    )

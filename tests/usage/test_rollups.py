"""Daily rollups: per user, day, model and purpose, rebuilt idempotently."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from usage import services, tasks
from usage.models import ModelCall, UsageDaily

pytestmark = pytest.mark.django_db


def call(user: Any, model: str = "m", purpose: str = "answer", days_ago: int = 0, **extra: Any) -> ModelCall:
    fields: dict[str, Any] = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cost": Decimal("0.001"),
        "latency_ms": 50.0,
        **extra,
    }
    return ModelCall.objects.create(
        created_at=timezone.now() - timedelta(days=days_ago),
        user=user,
        model=model,
        kind="chat",
        purpose=purpose,
        **fields,
    )


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        UsageDaily.objects.order_by("day", "user_id", "model", "purpose").values_list(
            "day", "user_id", "model", "purpose", "calls", "prompt_tokens", "completion_tokens", "cost"
        )
    )


def test_calls_are_summed_per_user_day_model_and_purpose(member: Any, outsider: Any) -> None:
    call(member)
    call(member)
    call(member, purpose="repair")
    call(outsider, model="other")
    call(None, purpose="embedding", cost=None, price_missing=True)
    today = timezone.localdate()

    assert services.usage_rollup(day=today) == 4

    rows = {(r.user_id, r.model, r.purpose): r for r in UsageDaily.objects.filter(day=today)}
    mine = rows[(member.pk, "m", "answer")]
    assert (mine.calls, mine.prompt_tokens, mine.completion_tokens) == (2, 200, 20)
    assert mine.cost == Decimal("0.002")
    assert rows[(None, "m", "embedding")].price_missing_calls == 1


def test_rolling_up_twice_gives_the_same_rows(member: Any) -> None:
    call(member)
    call(None)  # a key with no user must not be duplicated either
    call(member, days_ago=1)

    services.usage_rollup_recent(days=2)
    first = snapshot()
    services.usage_rollup_recent(days=2)

    assert snapshot() == first
    assert len(first) == 3


def test_a_rollup_updates_its_rows_in_place_and_drops_keys_without_calls(member: Any) -> None:
    kept = call(member)
    gone = call(member, model="retired")
    services.usage_rollup(day=timezone.localdate())
    row_pk = UsageDaily.objects.get(model="m").pk

    call(member)
    gone.delete()
    services.usage_rollup(day=timezone.localdate())

    row = UsageDaily.objects.get(model="m")
    assert (row.pk, row.calls) == (row_pk, 2)
    assert not UsageDaily.objects.filter(model="retired").exists()
    assert kept.pk


def test_the_beat_task_rolls_up_today_and_yesterday(member: Any) -> None:
    call(member)
    call(member, days_ago=1)
    call(member, days_ago=5)

    tasks.rollup_recent.delay()

    assert UsageDaily.objects.count() == 2

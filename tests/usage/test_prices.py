"""The price table: cost per call, snapshots priced by prefix, missing prices reported."""

from __future__ import annotations

import logging
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from config.runtime import LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL
from gateway import provider
from tests.usage.conftest import set_price
from usage import selectors, services
from usage.models import ModelCall, ModelPrice

pytestmark = pytest.mark.django_db


def record(model: str, *, prompt: int = 1000, completion: int = 500, cached: int = 0) -> provider.CallRecord:
    return provider.CallRecord(
        kind="chat",
        model=model,
        purpose=None,
        usage=provider.Usage(prompt, completion, cached),
        latency_ms=12.0,
    )


def test_cost_prices_input_cached_input_and_output_apart() -> None:
    price = ModelPrice(
        model="m",
        input_per_million=Decimal("0.15"),
        cached_input_per_million=Decimal("0.075"),
        output_per_million=Decimal("0.60"),
    )

    cost = price.cost(prompt_tokens=1_000_000, cached_tokens=400_000, completion_tokens=100_000)

    assert cost == Decimal("0.15") * Decimal("0.6") + Decimal("0.075") * Decimal("0.4") + Decimal("0.06")


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_set() -> None:
    price = ModelPrice(model="m", input_per_million=Decimal(2), output_per_million=Decimal(0))

    assert price.cost(prompt_tokens=500_000, cached_tokens=500_000, completion_tokens=0) == Decimal(1)


def test_the_local_models_are_seeded_free_and_openais_at_list_price() -> None:
    for local in (LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL):
        price = ModelPrice.objects.get(model=local)
        assert price.input_per_million == price.output_per_million == 0
    mini = ModelPrice.objects.get(model="gpt-4o-mini")
    assert (mini.input_per_million, mini.output_per_million) == (Decimal("0.15"), Decimal("0.6"))


def test_a_dated_snapshot_takes_the_longest_priced_prefix() -> None:
    set_price("gpt-4o", input="2.5", output="10")

    assert selectors.price_for("gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"  # type: ignore[union-attr]
    assert selectors.price_for("gpt-4o-2024-08-06").model == "gpt-4o"  # type: ignore[union-attr]
    assert selectors.price_for("o3-mini") is None


def test_the_price_table_read_once_applies_the_same_prefix_rule() -> None:
    set_price("gpt-4o", input="2.5", output="10")
    table = selectors.price_table()

    for model in ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4o", "o3-mini"):
        assert selectors.price_in(table, model) == selectors.price_for(model)
    assert selectors.price_in(table, "gpt-4o-2024-08-06").model == "gpt-4o"  # type: ignore[union-attr]


def test_a_tracked_unit_of_work_reads_the_prices_once_and_the_next_one_sees_an_edit(
    django_assert_num_queries: Any,
) -> None:
    set_price("paid-model", input="1", output="2")
    with services.tracking(user=None) as tracker:
        services.call_record(record("paid-model"))
        with django_assert_num_queries(3):  # savepoint, insert, release: no price query
            services.call_record(record("paid-model"))
    assert tracker.cost == Decimal("0.004")

    set_price("paid-model", input="2", output="4")
    with services.tracking(user=None):
        assert services.call_record(record("paid-model")).cost == Decimal("0.004")  # type: ignore[union-attr]


def test_a_priced_call_records_its_cost() -> None:
    set_price("paid-model", input="1", output="2")

    call = services.call_record(record("paid-model"))

    assert call is not None
    assert call.cost == Decimal("0.002")  # 1000 x $1/M + 500 x $2/M
    assert call.price_missing is False
    assert (call.prompt_tokens, call.completion_tokens) == (1000, 500)


def test_a_call_to_an_unpriced_model_is_reported_not_counted_as_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    services._warned_missing.discard("mystery-model")
    with caplog.at_level(logging.WARNING, logger="usage.services"):
        first = services.call_record(record("mystery-model"))
        second = services.call_record(record("mystery-model"))

    assert first is not None and second is not None
    assert first.cost is None and first.price_missing is True
    warnings = [r for r in caplog.records if "mystery-model" in r.getMessage()]
    assert len(warnings) == 1  # once per model, not once per call
    assert "mystery-model" in selectors.models_without_price()


def test_adding_the_price_takes_the_model_off_the_missing_list() -> None:
    services.call_record(record("mystery-model"))
    set_price("mystery-model", input="0", output="0")

    assert "mystery-model" not in selectors.models_without_price()
    assert services.call_record(record("mystery-model")).cost == 0  # type: ignore[union-attr]


def test_check_runtime_reports_a_configured_model_without_a_price() -> None:
    out = StringIO()
    call_command("check_runtime", stdout=out)
    assert "prices ok" in out.getvalue()

    ModelPrice.objects.filter(model=settings.CHAT_MODEL).delete()
    out = StringIO()
    call_command("check_runtime", stdout=out)

    assert f"prices missing for: {settings.CHAT_MODEL}" in out.getvalue()


def test_recording_never_breaks_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(ModelCall.objects, "create", broken)

    assert services.call_record(record(settings.CHAT_MODEL)) is None

"""The staff routing page and its selectors: policies, route mix, quality and cost per route."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from assistant.models import Assistant
from evals import services as evals_services
from evals.models import Result, Suite
from knowledge.models import Chunk
from routing import selectors
from tests.routing.conftest import make_answer

pytestmark = pytest.mark.django_db


def graded(suite: Suite, assistant: Assistant, member: Any, chunk: Chunk) -> None:
    run = evals_services.run_start(suite=suite, enqueue=False)
    case = suite.cases.get()
    Result.objects.filter(run=run).delete()
    for route, model, status, cost in [
        ("cheap", "small", Result.Status.PASSED, Decimal("0.001")),
        ("cheap", "small", Result.Status.FAILED, None),
        ("strong", "large", Result.Status.PASSED, Decimal("0.01")),
    ]:
        answer = make_answer(assistant, member, chunk, route={"route": route}, model=model, cost_usd=cost)
        other = (
            evals_services.case_from_answer(answer, "x", suite=suite)
            if Result.objects.filter(run=run, case=case).exists()
            else case
        )
        Result.objects.create(run=run, case=other, status=status, answer=answer)


def test_route_comparison_groups_eval_results_by_route_and_model(
    suite: Suite, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    graded(suite, assistant, member, chunk)

    rows = {(r["route"], r["model"]): r for r in selectors.route_comparison()}

    cheap, strong = rows[("cheap", "small")], rows[("strong", "large")]
    assert (cheap["results"], cheap["passed"], cheap["pass_rate"]) == (2, 1, 0.5)
    assert cheap["cost_usd"] == 0.001 and cheap["priced"] == 1
    assert (strong["pass_rate"], strong["cost_usd"]) == (1.0, 0.01)
    assert cheap["prompt_tokens"] == 0 and cheap["tokens_per_result"] == 0.0
    assert selectors.route_comparison(run_ids=[0]) == []


def test_route_mix_counts_answers_per_route(assistant: Assistant, member: Any, chunk: Chunk) -> None:
    make_answer(assistant, member, chunk, route={"route": "cheap"}, model="small")
    make_answer(assistant, member, chunk, route={"route": "cheap"}, model="small")
    make_answer(assistant, member, chunk, route={}, model="own")

    mix = {(r["route"], r["model"]): (r["answers"], r["share"]) for r in selectors.route_mix()}

    assert mix == {("cheap", "small"): (2, 0.6667), ("unrouted", "own"): (1, 0.3333)}


def test_the_page_shows_policies_errors_and_comparison_to_staff_only(
    client: Client, owner: Any, member: Any, suite: Suite, assistant: Assistant, chunk: Chunk
) -> None:
    assistant.routing = {"cheap_model": "small", "strong_model": "large"}
    assistant.save(update_fields=["routing"])
    Assistant.objects.create(
        name="Broken",
        scope="x",
        prompt=assistant.prompt,
        routing={"cheap_model": "small", "strong_threshold": 3},
    )
    graded(suite, assistant, member, chunk)

    client.force_login(member)
    assert client.get(reverse("routing:overview")).status_code == 403
    client.force_login(owner)
    page = client.get(reverse("routing:overview")).content.decode()

    assert "<code>small</code>" in page and "<code>large</code>" in page
    assert "strong_model must be a model name (text) and is required." in page
    assert "strong_threshold must be a number from 0 to 1, not 3." in page
    assert 'id="route-comparison"' in page and "50%" in page and "not priced" not in page
    assert client.get(reverse("routing:overview"), {"run": "abc", "days": "x"}).status_code == 200

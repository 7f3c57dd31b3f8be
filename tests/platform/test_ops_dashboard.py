"""The operations dashboard: staff only, every section drawn from real rows, a date range."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from assistant import services
from assistant.models import Answer, Flag
from tests import factories
from tests.fakes import FakeProvider
from usage import services as usage
from usage.models import ModelCall

pytestmark = pytest.mark.django_db

POLICY = "# Expense policy\n\nExpense reports are due on the 5th of each month.\n"
GOOD = json.dumps({"answer": "They are due on the 5th [1].", "citations": [1], "confidence": 0.9})


@pytest.fixture
def activity(member: Any, fake_provider: FakeProvider) -> dict[str, Answer]:
    """Two answers, one served from the cache, a routing decision, a flag and an unpriced call."""
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0
    assistant.save()
    factories.document(collection=factories.collection(public=True), text=POLICY)
    fake_provider.replies = [GOOD]
    with factories.committed():  # the cache entry is stored once the answer is committed
        first = services.answer_for(user=member, question="When are expense reports due?")
    Answer.objects.filter(pk=first.pk).update(
        cost_usd=Decimal("0.002"), route={"route": "strong", "model": first.model, "reason": "long question"}
    )
    hit = services.answer_for(user=member, question="When are expense reports due?")
    Answer.objects.filter(pk=hit.pk).update(cache_hit=True, cached_from=first)
    services.flag_create(answer=hit, user=member, category=Flag.Category.WRONG)
    ModelCall.objects.create(model="mystery-model", kind="chat", purpose="other", price_missing=True)
    usage.usage_rollup_recent(days=1)
    return {"first": first, "hit": hit}


def test_staff_see_every_section(client: Client, owner: Any, activity: dict[str, Answer]) -> None:
    client.force_login(owner)

    response = client.get("/ops/")

    assert response.status_code == 200
    html = response.content.decode()
    for title in (
        "Answers per day",
        "Answer latency per day",
        "Cost per day by model",
        "Cost per day by purpose",
        "Cache hit rate per day",
        "Answers per day by model",
        "Flags per day by source",
    ):
        assert title in html
    assert "<svg" in html and "cdn" not in html.lower()
    assert "No eval run finished in this range." in html
    assert response.context["answers_total"] == 2
    cache = response.context["cache"]
    assert (cache.hits, cache.answers, cache.saved_usd) == (1, 2, Decimal("0.002"))
    assert response.context["routing"]["routes"] == [("strong", 1)]
    assert response.context["flags_total"] == Flag.objects.count() >= 1
    assert "No price for:</strong> mystery-model" in html
    stages = {row["stage"] for row in response.context["latency"]}
    assert {"total", "retrieval", "model"} <= stages
    assert any(row["model"] == settings.CHAT_MODEL for row in response.context["spend"]["rows"])


def test_the_date_range_limits_what_is_shown(client: Client, owner: Any, activity: dict[str, Answer]) -> None:
    client.force_login(owner)

    response = client.get("/ops/", {"start": "2001-01-01", "end": "2001-01-31"})

    assert response.status_code == 200
    assert response.context["answers_total"] == 0
    assert response.context["period"].days[0].isoformat() == "2001-01-01"


def test_a_reversed_range_is_an_error_on_the_page_not_a_500(client: Client, owner: Any) -> None:
    client.force_login(owner)

    response = client.get("/ops/", {"start": "2025-02-01", "end": "2025-01-01"})

    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()


def test_people_who_are_not_staff_are_refused(client: Client, member: Any) -> None:
    assert client.get("/ops/").status_code == 302  # to the login page
    client.force_login(member)
    assert client.get("/ops/").status_code == 403


def test_the_staff_nav_links_to_the_dashboard(client: Client, owner: Any, member: Any) -> None:
    client.force_login(owner)
    assert 'href="/ops/"' in client.get("/evals/").content.decode()
    client.force_login(member)
    assert 'href="/ops/"' not in client.get("/").content.decode()

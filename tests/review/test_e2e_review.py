"""A real answer from the local models, flagged, reviewed and corrected by staff into an eval case.

The tiny local model's answer is not judged; the test checks that the item page shows the trace
the real pipeline recorded, and that the correction lands in the evals suite.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from assistant import services as assistant_services
from assistant.models import Assistant, Flag
from evals.models import Case
from knowledge.models import Document
from review import selectors

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def e2e_assistant(db: None) -> Assistant:
    assistant = assistant_services.assistant_default()
    assistant.min_similarity = 0.0  # always ask the model: this test is about what review shows of it
    assistant.max_tokens = 120
    assistant.save(update_fields=["min_similarity", "max_tokens"])
    return assistant


def test_a_real_answer_is_reviewed_and_corrected(
    policy: Document, e2e_assistant: Assistant, member: Any, owner: Any
) -> None:
    answer = assistant_services.answer_for(user=member, question="When are expense reports due?")
    assistant_services.flag_create(answer=answer, user=member, category=Flag.Category.WRONG, note="Check it.")
    assert answer.retrieved and answer.model

    client = Client()
    client.force_login(owner)
    page = client.get(reverse("review:item", args=[answer.pk])).content.decode()
    assert "Submit them in the finance portal" in page  # the real retrieved chunk's text
    assert answer.model in page and "Check it." in page

    response = client.post(
        reverse("review:correct", args=[answer.pk]),
        {"text": "Expense reports are due on the 5th of each month.", "note": ""},
    )
    assert response.status_code == 302
    case = Case.objects.get(source_answer=answer)
    assert case.expected == ["Expense reports are due on the 5th of each month."]
    assert selectors.answer_is_approved(answer)
    assert [c.answer.pk for c in selectors.corrections()] == [answer.pk]

"""The cache with the real embedding server: a paraphrase hits at the calibrated threshold."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from answer_cache import services
from assistant import services as assistant_services
from assistant.models import Answer, Assistant
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

POLICY = """# Team expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the receipts
attached.
"""


def test_real_embeddings_serve_a_paraphrase_and_refuse_other_questions(
    owner: Any, member: Any, outsider: Any
) -> None:
    collection = factories.collection(name="Finance", readers=[owner, member])
    policy = factories.document(collection=collection, text=POLICY, filename="expenses.md")
    chunk = policy.chunks.first()
    assert chunk is not None
    assistant: Assistant = assistant_services.assistant_default()
    answer = Answer.objects.create(
        assistant=assistant,
        user=owner,
        question="When are expense reports due?",
        text="Expense reports are due on the 5th of each month [1].",
        citations=[{"n": 1, "chunk_id": chunk.pk, "document_id": policy.pk}],
        retrieved=[{"n": 1, "chunk_id": chunk.pk, "document_id": policy.pk}],
        grounded=True,
        model="m",
        temperature=0.0,
        top_p=1.0,
        max_tokens=400,
        prompt=assistant.prompt,
    )
    assert services.cache_store(answer=answer) is not None

    def ask(user: Any, question: str) -> Any:
        return services.cache_lookup(user=user, assistant=assistant, question=question, history=[])

    hit = ask(member, "When are the expense reports due?")
    print("paraphrase similarity", hit and hit.similarity, "threshold", settings.ANSWER_CACHE_SIMILARITY)
    assert hit is not None and hit.kind == "semantic" and hit.answer == answer
    assert ask(member, "Who wrote Hamlet?") is None
    assert ask(member, "How much can I spend on meals when travelling?") is None
    assert ask(outsider, "When are the expense reports due?") is None

"""Fixtures for usage tests: an assistant that answers from one policy, and prices."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from assistant import services
from assistant.models import Assistant, Conversation
from knowledge.models import Document
from tests import factories
from usage.models import ModelPrice

POLICY = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""
QUESTION = "When are expense reports due?"
GOOD = json.dumps(
    {
        "answer": "Expense reports are due on the 5th of each month [1].",
        "citations": [1],
        "confidence": 0.9,
        "not_found": False,
        "follow_ups": [],
    }
)


@pytest.fixture
def assistant(db: None) -> Assistant:
    assistant = services.assistant_default()
    assistant.min_similarity = 0.2  # suits the fake bag-of-words embeddings
    assistant.save(update_fields=["min_similarity"])
    return assistant


@pytest.fixture
def policy(db: None) -> Document:
    collection = factories.collection(name="Policies", public=True)
    return factories.document(collection=collection, text=POLICY, filename="expense-policy.md")


@pytest.fixture
def conversation(assistant: Assistant, policy: Document, member: Any) -> Conversation:
    return services.conversation_create(user=member)


def set_price(model: str, *, input: str, output: str, cached: str | None = None) -> ModelPrice:
    price, _ = ModelPrice.objects.update_or_create(
        model=model,
        defaults={
            "input_per_million": Decimal(input),
            "output_per_million": Decimal(output),
            "cached_input_per_million": None if cached is None else Decimal(cached),
        },
    )
    return price


@pytest.fixture
def priced(db: None) -> None:
    """The chat model at $1 in and $2 out per million tokens; embeddings at $0.5 per million."""
    set_price(settings.CHAT_MODEL, input="1", output="2")
    set_price(settings.EMBEDDING_MODEL, input="0.5", output="0")

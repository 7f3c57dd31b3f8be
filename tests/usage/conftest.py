"""Fixtures for usage tests: a conversation with the shared expense-policy assistant, and prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from assistant import services
from assistant.models import Assistant, Conversation
from knowledge.models import Document
from usage.models import ModelPrice


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

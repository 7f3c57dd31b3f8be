"""The expense policy most answer tests ask about: its text, model replies, and two fixtures.

A pytest plugin (tests/conftest.py): `assistant` and `policy` answer from one public "Policies"
collection with the fake model, in any test that does not define its own.
"""

from __future__ import annotations

import json

import pytest

from assistant import services
from assistant.models import Assistant
from knowledge.models import Document
from tests import factories

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
UNGROUNDED = json.dumps(
    {"answer": "Expense claims are paid in bitcoin within 90 days [1].", "citations": [1]}
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

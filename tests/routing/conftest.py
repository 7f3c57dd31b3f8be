"""Data for the routing tests: a public policy document, an assistant that always asks the (fake)
model, answers as the pipeline records them, and a one-case eval suite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from assistant import services as assistant_services
from assistant.models import Answer, Assistant
from evals.models import Case, Suite
from knowledge.models import Chunk, Document
from tests import factories

POLICY = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the
receipts attached.
"""
QUESTION = "When are expense reports due?"
GOOD = "Expense reports are due on the 5th of each month [1]."


def reply(answer: str = GOOD, citations: list[int] | None = None, *, not_found: bool = False) -> str:
    return json.dumps(
        {
            "answer": answer,
            "citations": [1] if citations is None else citations,
            "confidence": 0.9,
            "not_found": not_found,
            "follow_ups": [],
        }
    )


@pytest.fixture
def policy(db: None) -> Document:
    collection = factories.collection(name="Policies", public=True)
    return factories.document(collection=collection, text=POLICY, filename="expenses.md")


@pytest.fixture
def chunk(policy: Document) -> Chunk:
    return Chunk.objects.filter(document=policy).order_by("pk").first()  # type: ignore[return-value]


@pytest.fixture
def assistant(db: None) -> Assistant:
    """Fake embeddings score low, so the assistant always asks the model rather than abstaining;
    and the model's own answer is what these tests grade, so evidence never stands in for it
    (tests/assistant and tests/evals/test_graders.py cover evidence answers)."""
    assistant = assistant_services.assistant_default()
    assistant.min_similarity = 0.0
    assistant.evidence_answers = False
    assistant.save(update_fields=["min_similarity", "evidence_answers"])
    return assistant


@pytest.fixture
def suite(policy: Document, assistant: Assistant) -> Suite:
    suite = Suite.objects.create(name="Policies", assistant=assistant)
    Case.objects.create(
        suite=suite,
        question=QUESTION,
        expected=["5th of each month"],
        must_cite=["expenses.md"],
        external_id="due",
    )
    return suite


def make_answer(assistant: Assistant, user: Any, chunk: Chunk, **fields: Any) -> Answer:
    """A saved answer as the pipeline records a grounded strong-model answer, unless told otherwise."""
    values: dict[str, Any] = {
        "assistant": assistant,
        "user": user,
        "question": QUESTION,
        "text": GOOD,
        "citations": [{"n": 1, "chunk_id": chunk.pk, "document_id": chunk.document_id}],
        "retrieved": [{"n": 1, "chunk_id": chunk.pk, "document_id": chunk.document_id, "score": 0.9}],
        "grounded": True,
        "confidence": 0.9,
        "model": "strong-model",
        "route": {"route": "strong", "model": "strong-model", "reason": "test"},
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 400,
        "prompt": assistant.prompt,
    }
    values.update(fields)
    return Answer.objects.create(**values)

"""Data for the evals tests: a small public knowledge base, an assistant that always asks the
(fake) model, and a suite about it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from assistant import services as assistant_services
from assistant.models import Answer, Assistant
from evals.models import Case, Suite
from knowledge.models import Document
from tests import factories
from tests.browser.conftest import browser, page  # noqa: F401 (Chromium fixtures for the browser tests)

POLICY = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the
receipts attached.
"""
GOOD = "Expense reports are due on the 5th of each month [1]."
QUESTION = "When are expense reports due?"


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


NOT_FOUND = reply("The knowledge base does not say.", [], not_found=True)


@pytest.fixture
def policy(db: None) -> Document:
    collection = factories.collection(name="Policies", public=True)
    return factories.document(collection=collection, text=POLICY, filename="expenses.md")


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
    suite = Suite.objects.create(name="Policies")
    Case.objects.create(
        suite=suite,
        question=QUESTION,
        expected=["5th of each month"],
        must_cite=["expenses.md"],
        external_id="due",
    )
    Case.objects.create(
        suite=suite,
        question="Who is the chief executive of the finance portal?",
        expected_behaviour=Case.Behaviour.ABSTAIN,
        external_id="unanswerable",
    )
    return suite


def make_answer(**fields: Any) -> Answer:
    """An unsaved answer with sensible defaults, for grading."""
    assistant = assistant_services.assistant_default()
    defaults: dict[str, Any] = {
        "assistant": assistant,
        "question": QUESTION,
        "text": GOOD,
        "model": "fake",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 400,
        "prompt": assistant.prompt,
        "raw_output": reply(),
    }
    defaults.update(fields)
    return Answer(**defaults)

"""Flagged answers for the review tests, made through the real assistant services and the fake model."""

from __future__ import annotations

from typing import Any

import pytest

from assistant import services as assistant_services
from assistant.models import Answer, Assistant, Flag
from knowledge.models import Document
from tests.browser.conftest import browser, page  # noqa: F401 (Chromium fixtures for the browser test)
from tests.expense_policy import GOOD, QUESTION, UNGROUNDED
from tests.fakes import FakeProvider


def ask(user: Any, reply: str, fake: FakeProvider, question: str = QUESTION) -> Answer:
    """One question in a new conversation, answered by the fake model with `reply`."""
    conversation = assistant_services.conversation_create(user=user)
    fake.replies.append(reply)
    _, pending = assistant_services.message_send(conversation=conversation, text=question)
    message = assistant_services.answer_complete(message=pending)
    return Answer.objects.get(message=message)


@pytest.fixture
def flagged(assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider) -> Answer:
    """An answer the member flagged as wrong."""
    answer = ask(member, GOOD, fake_provider)
    assistant_services.flag_create(
        answer=answer, user=member, category=Flag.Category.WRONG, note="It is the 10th now."
    )
    return answer


@pytest.fixture
def auto_flagged(assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider) -> Answer:
    """An answer the grounding check flagged by itself: shown unchecked, with evidence answers off."""
    Assistant.objects.filter(pk=assistant.pk).update(evidence_answers=False)
    answer = ask(member, UNGROUNDED, fake_provider, "How are expense claims paid?")
    Assistant.objects.filter(pk=assistant.pk).update(evidence_answers=True)
    assert answer.flags.get().source == Flag.Source.GROUNDING
    return answer


@pytest.fixture
def unflagged(assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider) -> Answer:
    answer = ask(member, GOOD, fake_provider, "Where do I submit expense reports?")
    assert not answer.flags.exists()
    return answer

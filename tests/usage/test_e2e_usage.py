"""Cost accounting through the real local chat and embedding servers."""

from __future__ import annotations

import time
from decimal import Decimal
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings

from assistant import services
from tests import factories
from usage.models import ModelCall

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POLICY = """# Team expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the receipts
attached.
"""


def _attached(answer: Any, kind: str, seconds: float = 60) -> ModelCall:
    """The answer's call of `kind`, once the worker has run the answer's bookkeeping task."""
    deadline = time.monotonic() + seconds
    while True:
        call = ModelCall.objects.filter(answer=answer, kind=kind).first()
        if call is not None or time.monotonic() > deadline:
            assert call is not None, f"no {kind} call attached to answer {answer.pk} within {seconds} s"
            return call
        time.sleep(0.2)


def test_a_real_local_answer_records_its_prompt_and_completion_tokens(
    member: Any, celery_worker_process: Any
) -> None:
    # The shipped prices come from a data migration, which a transactional test run before this
    # one has flushed: seed them again (the point is that the local models are priced at zero).
    import_module("usage.migrations.0002_seed_prices").seed(apps, None)
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0  # always reach the model: this test is about its usage
    assistant.max_tokens = 60
    assistant.save(update_fields=["min_similarity", "max_tokens"])
    factories.document(collection=factories.collection(public=True), text=POLICY)
    conversation = services.conversation_create(user=member)

    _asked, pending = services.message_send(conversation=conversation, text="When are expense reports due?")
    message = services.answer_complete(message=pending)

    assert message.status == "complete", message.error
    answer = message.answer
    assert answer.cost_usd == Decimal(0)  # set with the answer, before any bookkeeping
    # The calls are linked to the answer by a real worker, after the answer was committed.
    stream = _attached(answer, "chat_stream")
    # llama.cpp's server sends no usage with a stream: the prompt is estimated from its characters.
    assert stream.prompt_tokens > 100 and stream.completion_tokens > 0
    assert stream.estimated is True and stream.ok
    assert (stream.user_id, stream.purpose, stream.model) == (member.pk, "answer", settings.CHAT_MODEL)
    assert answer.prompt_tokens >= stream.prompt_tokens
    embedding = _attached(answer, "embed")
    assert embedding.prompt_tokens > 0 and embedding.purpose == "embedding"
    assert answer.cost_usd == Decimal(0)  # local models: counted, free

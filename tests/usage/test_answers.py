"""An answer's cost and its model calls: chat, API/CLI, replays and evals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from assistant import services
from assistant.models import Answer, Conversation
from gateway import provider
from tests import factories
from tests.expense_policy import GOOD, QUESTION
from tests.fakes import FakeProvider
from usage import services as usage
from usage.models import ModelCall, ModelPrice

pytestmark = pytest.mark.django_db


def expected_cost(answer: Answer) -> Decimal:
    calls = ModelCall.objects.filter(answer=answer)
    dollars = Decimal(0)
    for call in calls:
        per_million = (
            {"in": Decimal(1), "out": Decimal(2)}
            if call.model == settings.CHAT_MODEL
            else {"in": Decimal("0.5"), "out": Decimal(0)}
        )
        dollars += (call.prompt_tokens * per_million["in"] + call.completion_tokens * per_million["out"]) / (
            Decimal(1_000_000)
        )
    return dollars.quantize(Decimal("0.000001"))


def test_a_chat_answer_gets_its_cost_and_its_calls(
    conversation: Conversation, fake_provider: FakeProvider, priced: None, member: Any
) -> None:
    fake_provider.replies = [GOOD]

    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    with factories.committed():  # the calls are attached once the answer is committed
        message = services.answer_complete(message=pending)

    answer = message.answer
    calls = list(ModelCall.objects.filter(answer=answer).order_by("pk"))
    # The question's embedding, the evidence sentences', then the answer.
    assert [(c.kind, c.purpose) for c in calls] == [
        ("embed", "embedding"),
        ("embed", "embedding"),
        ("chat_stream", "answer"),
    ]
    assert all(c.user_id == member.pk for c in calls)
    assert calls[2].prompt_tokens == answer.prompt_tokens and calls[2].completion_tokens > 0
    assert answer.cost_usd == expected_cost(answer) > 0


def test_an_answer_with_an_unpriced_model_has_no_cost_rather_than_zero(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    ModelPrice.objects.filter(model=settings.CHAT_MODEL).delete()
    fake_provider.replies = [GOOD]

    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    with factories.committed():
        answer = services.answer_complete(message=pending).answer

    assert answer.cost_usd is None
    assert ModelCall.objects.filter(answer=answer, price_missing=True).count() == 1


def test_an_api_or_cli_answer_gets_its_cost(
    assistant: Any, policy: Any, fake_provider: FakeProvider, priced: None, member: Any
) -> None:
    fake_provider.replies = [GOOD]

    with factories.committed():
        answer = services.answer_for(user=member, question=QUESTION)

    assert answer.cost_usd == expected_cost(answer) > 0
    assert ModelCall.objects.filter(answer=answer, user=member).count() == 3


def test_a_replay_is_paid_by_the_staff_member_who_ran_it(
    assistant: Any, policy: Any, fake_provider: FakeProvider, priced: None, member: Any, owner: Any
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    original = services.answer_for(user=member, question=QUESTION)

    replay = services.answer_replay(answer=original, user=owner)

    assert replay.cost_usd is not None and replay.cost_usd > 0
    assert set(ModelCall.objects.filter(answer=replay).values_list("user_id", flat=True)) == {owner.pk}


def test_a_stopped_answer_still_records_what_it_spent(
    conversation: Conversation, fake_provider: FakeProvider, member: Any
) -> None:
    fake_provider.replies = [GOOD]
    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)

    events = services.answer_stream(message=pending)
    for event in events:
        if type(event).__name__ == "Delta":
            break
    events.close()  # type: ignore[attr-defined]

    assert ModelCall.objects.filter(kind="chat_stream", user=member, answer__isnull=True).exists()


def test_calls_attached_to_an_answer_are_not_added_to_its_cost(
    conversation: Conversation, fake_provider: FakeProvider, priced: None, member: Any
) -> None:
    fake_provider.replies = [GOOD, "a verdict", "another"]
    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    answer = services.answer_complete(message=pending).answer
    assert answer is not None
    cost_before = answer.cost_usd
    with usage.tracking(user=member, purpose="judge") as grading:
        provider.chat([{"role": "user", "content": "grade it"}])
    with usage.tracking(user=member, purpose="judge") as elsewhere:
        provider.chat([{"role": "user", "content": "grade another"}])
    other = ModelCall.objects.get(pk=elsewhere.call_ids[0])
    other.answer = Answer.objects.create(
        assistant=answer.assistant, question="q", model="m", temperature=0, top_p=1, max_tokens=1,
        prompt=answer.prompt,
    )  # fmt: skip
    other.save(update_fields=["answer"])

    attached = usage.calls_attach(answer=answer, tracker=grading)
    kept = usage.calls_attach(answer=answer, tracker=elsewhere)

    assert attached == 1 and kept == 0
    judged = ModelCall.objects.get(pk=grading.call_ids[0])
    assert judged.answer == answer and judged.purpose == "judge"
    answer.refresh_from_db()
    assert answer.cost_usd == cost_before  # attached, not added
    assert usage.calls_attach(answer=answer, tracker=usage.Tracker()) == 0

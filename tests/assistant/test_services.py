"""Assistant services: streamed answers into messages, failures, stops, claims, flags, replays, tokens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from assistant import pipeline, services
from assistant.models import Answer, ApiToken, Assistant, Conversation, Feedback, Flag, Message
from gateway import provider
from knowledge.models import Document
from tests import factories
from tests.expense_policy import GOOD, QUESTION, UNGROUNDED
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

# Three sentences: the stream is released a sentence (or a checked stretch) at a time, so that
# personal data split across pieces is still redacted.
LONG_TEXT = (
    "Expense reports are due on the 5th of each month. Submit them in the finance portal. "
    "Attach the receipts to each report [1]."
)
LONG = json.dumps({"answer": LONG_TEXT, "citations": [1], "confidence": 0.9})


@pytest.fixture
def conversation(assistant: Assistant, policy: Document, member: Any) -> Conversation:
    return services.conversation_create(user=member)


def test_the_default_assistant_and_prompt_are_created_once(db: None) -> None:
    first = services.assistant_default()
    assert services.assistant_default() == first and first.is_default
    assert first.prompt.version == 1 and "{question}" in first.prompt.instructions


def test_a_sent_message_is_answered_and_saved(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]

    asked, pending = services.message_send(conversation=conversation, text=f"  {QUESTION} ")

    assert (asked.role, asked.content, asked.status) == ("user", QUESTION, "complete")
    assert (pending.role, pending.status, pending.reply_to) == ("assistant", "pending", asked)
    conversation.refresh_from_db()
    assert conversation.title == QUESTION

    events = list(services.answer_stream(message=pending))

    assert isinstance(events[-1], pipeline.Done)
    pending.refresh_from_db()
    assert pending.status == "complete" and pending.content == events[-1].answer.text
    answer = Answer.objects.get(message=pending)
    assert answer.pk == events[-1].answer.pk and answer.grounded and not answer.flags.exists()
    assert answer.user == conversation.user and answer.question == QUESTION


def test_an_empty_message_is_rejected(conversation: Conversation) -> None:
    with pytest.raises(pipeline.QuestionRejected):
        services.message_send(conversation=conversation, text="  ")
    assert not Message.objects.exists()


def test_earlier_turns_are_sent_as_history(conversation: Conversation, fake_provider: FakeProvider) -> None:
    fake_provider.replies = [GOOD, GOOD]
    _, first = services.message_send(conversation=conversation, text=QUESTION)
    services.answer_complete(message=first)
    _, second = services.message_send(conversation=conversation, text="and the receipts?")
    services.answer_complete(message=second)

    prompt = fake_provider.calls[-1]["messages"][-1]["content"]
    assert "Earlier question: When are expense reports due?" in prompt
    assert "Earlier answer: Expense reports are due on the 5th" in prompt
    assert "When are expense reports due? and the receipts?" in fake_provider.embedded


def test_an_ungrounded_answer_shown_unchecked_gets_an_automatic_flag(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    Assistant.objects.update(evidence_answers=False)
    fake_provider.replies = [UNGROUNDED]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)
    message = services.answer_complete(message=pending)
    flag = Flag.objects.get(answer__message=message)
    assert flag.source == "grounding" and flag.category == "unsupported" and flag.user is None


def test_a_provider_error_keeps_the_conversation_and_can_be_retried(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        provider.ProviderError(
            "The chat model server cannot be reached.", kind=provider.ErrorKind.UNAVAILABLE
        )
    ]
    asked, pending = services.message_send(conversation=conversation, text=QUESTION)

    events = list(services.answer_stream(message=pending))

    assert events[-1] == services.Failed("The chat model server cannot be reached.")
    pending.refresh_from_db()
    assert pending.status == "error"
    assert pending.error == "The chat model server cannot be reached. Your question is kept; press retry."
    assert Message.objects.get(pk=asked.pk).content == QUESTION
    assert not Answer.objects.exists()

    assert services.message_retry(message=pending) is True
    pending.refresh_from_db()
    assert (pending.status, pending.error, pending.content) == ("pending", "", "")

    fake_provider.replies = [GOOD]
    events = list(services.answer_stream(message=pending))
    pending.refresh_from_db()
    assert isinstance(events[-1], pipeline.Done) and pending.status == "complete"
    assert pending.content == "Expense reports are due on the 5th of each month [1]."
    assert list(conversation.messages.values_list("role", "status")) == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]


def test_only_failed_or_stopped_messages_are_retried(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)
    assert services.message_retry(message=pending) is False
    services.answer_complete(message=pending)
    assert services.message_retry(message=pending) is False


def test_closing_the_stream_early_keeps_the_partial_text(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [LONG]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)

    stream = services.answer_stream(message=pending)
    written = []
    for event in stream:
        if isinstance(event, pipeline.Delta):
            written.append(event.text)
            if len(written) == 2:
                break
    stream.close()  # the browser went away

    pending.refresh_from_db()
    assert pending.status == "stopped"
    assert pending.content == "".join(written)
    assert (
        pending.content
        == "Expense reports are due on the 5th of each month. Submit them in the finance portal. "
    )
    assert not Answer.objects.exists()
    assert services.message_retry(message=pending) is True


def test_a_stop_request_ends_generation(
    conversation: Conversation, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "STOP_CHECK_SECONDS", 0.0)  # check on every piece of text
    fake_provider.replies = [LONG]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)

    events = []
    for event in services.answer_stream(message=pending):
        events.append(event)
        if isinstance(event, pipeline.Delta):
            assert services.message_stop(message=pending) is True

    deltas = [e.text for e in events if isinstance(e, pipeline.Delta)]
    first = "Expense reports are due on the 5th of each month. "
    assert deltas == [first] and not any(isinstance(e, pipeline.Done) for e in events)
    pending.refresh_from_db()
    # The piece that arrived with the stop check is kept too, though it was never sent.
    assert pending.status == "stopped"
    assert pending.content == first + "Submit them in the finance portal. "
    assert services.message_stop(message=pending) is False  # already stopped


def test_a_pending_message_is_answered_once(conversation: Conversation, fake_provider: FakeProvider) -> None:
    fake_provider.replies = [GOOD, GOOD]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)

    first = services.answer_stream(message=pending)
    assert next(first) == pipeline.Stage("retrieving")  # claimed
    assert list(services.answer_stream(message=pending)) == []  # a second tab gets nothing

    assert isinstance(list(first)[-1], pipeline.Done)
    assert len(fake_provider.calls) == 1 and Answer.objects.count() == 1


def test_regenerate_adds_a_new_pending_answer(
    conversation: Conversation, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    services.answer_complete(message=pending)
    again = services.answer_regenerate(message=pending)
    assert again.status == "pending" and again.reply_to == asked
    assert services.answer_complete(message=again).status == "complete"
    assert Answer.objects.count() == 2


def test_flags_and_feedback(
    policy: Document, assistant: Assistant, member: Any, owner: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    answer = services.answer_for(user=member, question=QUESTION)
    assert not answer.flagged

    flag = services.flag_create(
        answer=answer, user=member, category=Flag.Category.WRONG, note="It is the 6th."
    )
    answer.refresh_from_db()
    assert answer.flagged is True
    assert (flag.user, flag.category, flag.source, flag.note) == (member, "wrong", "user", "It is the 6th.")

    services.feedback_give(answer=answer, user=member, rating=1)
    services.feedback_give(answer=answer, user=member, rating=-5, reason="Wrong date")
    services.feedback_give(answer=answer, user=owner, rating=1)
    assert Feedback.objects.get(answer=answer, user=member).rating == -1  # changed, not duplicated
    assert Feedback.objects.get(answer=answer, user=member).reason == "Wrong date"
    assert answer.feedback.count() == 2


def test_an_ungrounded_answer_that_is_not_shown_is_not_flagged(
    conversation: Conversation, fake_provider: FakeProvider, evidence_strength: Callable[[float], None]
) -> None:
    """The person saw the evidence quoted, or an abstention; the model's text is only in the trace."""
    evidence_strength(0.9)
    fake_provider.replies = [UNGROUNDED]
    _, pending = services.message_send(conversation=conversation, text=QUESTION)
    message = services.answer_complete(message=pending)
    assert message.answer.answer_source == "evidence" and not message.answer.flagged
    assert not Flag.objects.filter(answer__message=message).exists()


def test_answer_for_saves_and_flags(
    policy: Document, assistant: Assistant, member: Any, fake_provider: FakeProvider
) -> None:
    assistant.evidence_answers = False
    assistant.save(update_fields=["evidence_answers"])
    fake_provider.replies = [UNGROUNDED]
    answer = services.answer_for(user=member, question=QUESTION)
    assert answer.pk and answer.message is None and answer.flagged
    assert answer.flags.get().source == "grounding"


def test_a_replay_reuses_the_chunks_and_settings(
    policy: Document, assistant: Assistant, member: Any, owner: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    original = services.answer_for(user=member, question=QUESTION)
    # The assistant changes after the answer; the replay still uses what the answer was made with.
    assistant.temperature, assistant.seed = 0.7, 7
    assistant.prompt = services.prompt_new_version(
        prompt=assistant.prompt,
        system="Be brief.",
        instructions="{context}\n{question}",
        notes="",
        user=owner,
    )
    assistant.save()
    factories.document(collection=policy.collection, text="Expense reports go to the finance portal.")

    replay = services.answer_replay(answer=original, user=owner)

    assert replay.pk and replay.replay_of == original and original.replays.get() == replay
    assert [r["chunk_id"] for r in replay.retrieved] == [r["chunk_id"] for r in original.retrieved]
    for name in ("model", "seed", "temperature", "top_p", "max_tokens", "prompt"):
        assert getattr(replay, name) == getattr(original, name), name
    assert not replay.abstained and replay.text == original.text
    first, second = fake_provider.calls
    assert first["messages"] == second["messages"] and first["params"] == second["params"]


def test_api_tokens_store_only_a_hash(member: Any) -> None:
    token, raw = services.api_token_create(user=member, name="laptop")

    assert raw.startswith("gw_") and len(raw) > 40
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest() and token.prefix == raw[:10]
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in {str(value) for value in stored.values()}

    assert services.api_token_authenticate(raw) == member
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert services.api_token_authenticate(raw + "x") is None
    assert services.api_token_authenticate("") is None

    member.is_active = False
    member.save(update_fields=["is_active"])
    assert services.api_token_authenticate(raw) is None

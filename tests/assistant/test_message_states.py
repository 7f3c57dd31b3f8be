"""An assistant message's states, changed only through its queryset, and the conversation lock."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import connection

from assistant import pipeline, services
from assistant.models import Conversation, Message


@pytest.fixture
def conversation(member: Any) -> Conversation:
    return services.conversation_create(user=member)


@pytest.fixture
def pending(conversation: Conversation) -> Message:
    return services.message_send(conversation=conversation, text="When are expense reports due?")[1]


def status(message: Message) -> str:
    message.refresh_from_db()
    return message.status


def test_a_message_is_claimed_once(pending: Message) -> None:
    assert Message.objects.claim(pending.pk)
    assert not Message.objects.claim(pending.pk)  # a second tab gets nothing
    assert status(pending) == Message.Status.STREAMING


def test_a_stopped_message_is_neither_saved_nor_completed(pending: Message) -> None:
    Message.objects.claim(pending.pk)
    assert Message.objects.progress(pending.pk, "Expense reports")
    assert Message.objects.stop(pending.pk)

    assert not Message.objects.progress(pending.pk, "Expense reports are due")
    assert not Message.objects.complete(pending.pk, "Expense reports are due on the 5th.")
    Message.objects.halt(pending.pk, "Expense reports are")  # the writer keeps what it wrote
    pending.refresh_from_db()
    assert (pending.status, pending.content) == (Message.Status.STOPPED, "Expense reports are")


def test_only_a_failed_or_stopped_message_is_retried(pending: Message) -> None:
    assert not Message.objects.retry(pending.pk)
    Message.objects.claim(pending.pk)
    Message.objects.fail(pending.pk, "The model server cannot be reached.")
    assert Message.objects.retry(pending.pk)
    pending.refresh_from_db()
    assert (pending.status, pending.error, pending.content) == (Message.Status.PENDING, "", "")


@pytest.mark.django_db(transaction=True)
def test_a_conversation_locked_elsewhere_is_busy_until_released(conversation: Conversation) -> None:
    params = connection.get_connection_params()
    params = {k: v for k, v in params.items() if k not in {"cursor_factory", "context"}}
    with psycopg.connect(**params) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk])
        with (
            pytest.raises(services.ConversationBusy),
            services.conversation_lock(conversation.pk, wait_seconds=0),
        ):
            pass
        with services.conversation_lock_if_free(conversation.pk) as free:
            assert not free
        other.execute(
            "SELECT pg_advisory_unlock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk]
        )

        with services.conversation_lock(conversation.pk):
            row = other.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk]
            ).fetchone()
            assert row is not None and row[0] is False  # held here
        row = other.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk]
        ).fetchone()
        assert row is not None and row[0] is True  # released on leaving the block


@pytest.mark.django_db(transaction=True)
def test_an_answer_to_a_busy_conversation_fails_and_can_be_retried(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = services.message_send(conversation=conversation, text="When are expense reports due?")[1]
    monkeypatch.setattr(services, "LOCK_WAIT_SECONDS", 0)
    params = connection.get_connection_params()
    params = {k: v for k, v in params.items() if k not in {"cursor_factory", "context"}}
    with psycopg.connect(**params) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk])
        events = list(services.answer_stream(message=pending))

    assert [type(e) for e in events] == [services.Failed]
    assert not any(isinstance(e, pipeline.Done) for e in events)
    pending.refresh_from_db()
    assert pending.status == Message.Status.ERROR and pending.error.endswith("Press retry.")
    assert services.message_retry(message=pending)


def test_turn_timed_adds_up_and_skips_a_block_that_raised(assistant: Any) -> None:
    turn = pipeline.Turn(
        assistant=assistant, user=None, question="q", history=[], config=pipeline.Settings.of(assistant)
    )
    with turn.timed("tools"):
        pass
    with turn.timed("tools"):
        pass
    assert set(turn.latency) == {"tools"} and turn.latency["tools"] >= 0
    with pytest.raises(RuntimeError), turn.timed("model"):
        raise RuntimeError("the model server went away")
    assert "model" not in turn.latency

"""An answer whose writer died mid-stream is offered for retry; a live one is left alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from assistant import services
from assistant.models import Conversation, Message


@pytest.fixture
def conversation(member: Any) -> Conversation:
    return services.conversation_create(user=member)


def _streaming(conversation: Conversation, *, age_seconds: float) -> Message:
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="Half an ans",
    )
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=age_seconds))
    return message


def test_an_orphaned_streaming_answer_becomes_retryable_and_keeps_its_text(
    conversation: Conversation,
) -> None:
    message = _streaming(conversation, age_seconds=60)

    assert services.messages_orphaned_recover() == 1

    message.refresh_from_db()
    assert message.status == Message.Status.ERROR
    assert "interrupted" in message.error
    assert message.content == "Half an ans"
    assert services.message_retry(message=message)


def test_an_answer_still_being_written_is_left_alone(conversation: Conversation) -> None:
    message = _streaming(conversation, age_seconds=60)
    # Another database session (the web process writing the answer) holds the conversation lock.
    params = connection.get_connection_params()
    params = {k: v for k, v in params.items() if k not in {"cursor_factory", "context"}}
    with psycopg.connect(**params) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [services.CONVERSATION_LOCK_CLASS, conversation.pk])
        assert services.messages_orphaned_recover() == 0
        message.refresh_from_db()
        assert message.status == Message.Status.STREAMING


def test_a_just_started_answer_is_not_treated_as_orphaned(conversation: Conversation) -> None:
    message = _streaming(conversation, age_seconds=1)

    assert services.messages_orphaned_recover(conversation_id=conversation.pk) == 0
    message.refresh_from_db()
    assert message.status == Message.Status.STREAMING


def test_opening_the_conversation_recovers_it(client: Any, member: Any, conversation: Conversation) -> None:
    message = _streaming(conversation, age_seconds=60)
    client.force_login(member)

    response = client.get(f"/c/{conversation.pk}/")

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == Message.Status.ERROR

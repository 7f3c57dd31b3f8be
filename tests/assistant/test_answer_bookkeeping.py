"""What follows a saved answer off the response path: its model calls attached, its cache entry."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from answer_cache import lookup as cache_lookup
from answer_cache import services as answer_cache
from answer_cache.models import CachedAnswer
from assistant import services, tasks
from assistant.models import Answer, Assistant, Conversation, Message
from assistant.pipeline import retrieval
from guardrails.checks import check_chunk
from knowledge.models import Document
from tests import factories
from tests.expense_policy import GOOD, QUESTION
from tests.fakes import FakeProvider
from usage.models import ModelCall

pytestmark = pytest.mark.django_db


def pending_for(user: Any, question: str = QUESTION) -> Message:
    conversation: Conversation = services.conversation_create(user=user)
    _asked, pending = services.message_send(conversation=conversation, text=question)
    return pending


# The question's embedding, the evidence sentences' embedding, and the answer.
CALLS = 3


def test_the_answer_is_complete_at_once_and_its_bookkeeping_follows_the_commit(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    pending = pending_for(member)

    with factories.committed() as queued:
        message = services.answer_complete(message=pending)
        answer = Answer.objects.get(message=pending)
        # Saved whole before the commit: text, trace, cost. Not yet: the calls' link, the cache.
        assert message.status == Message.Status.COMPLETE and answer.text == message.content
        assert answer.retrieved and answer.latency_ms["total"] > 0 and answer.grounded
        assert answer.cost_usd is not None
        assert not ModelCall.objects.filter(answer=answer).exists()
        assert not CachedAnswer.objects.filter(answer=answer).exists()

    assert len(queued) == 1
    assert ModelCall.objects.filter(answer=answer).count() == CALLS
    assert CachedAnswer.objects.filter(answer=answer).exists()


def test_a_failing_cache_store_is_retried_and_loses_nothing_of_the_answer(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.replies = [GOOD]
    attempts: list[int] = []

    def broken(**kwargs: Any) -> None:
        attempts.append(kwargs["answer"].pk)
        raise RuntimeError("cache table unavailable")

    monkeypatch.setattr(answer_cache, "cache_store", broken)
    pending = pending_for(member)

    with caplog.at_level(logging.WARNING), factories.committed():
        events = list(services.answer_stream(message=pending))

    assert not any(isinstance(e, services.Failed) for e in events)
    pending.refresh_from_db()
    answer = Answer.objects.get(message=pending)
    assert pending.status == Message.Status.COMPLETE and answer.grounded
    assert len(attempts) == 1 + tasks.BOOKKEEPING_RETRIES  # the first try and every retry
    assert "failed for good" in caplog.text
    # The calls were attached on the first try, before the cache failed; the retries keep them.
    assert ModelCall.objects.filter(answer=answer).count() == CALLS


def test_a_retry_that_succeeds_stores_the_entry(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_provider.replies = [GOOD]
    real = answer_cache.cache_store
    attempts: list[int] = []

    def flaky(**kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("a deadlock, once")
        return real(**kwargs)

    monkeypatch.setattr(answer_cache, "cache_store", flaky)
    pending = pending_for(member)
    with factories.committed():
        services.answer_complete(message=pending)

    assert len(attempts) == 2
    assert CachedAnswer.objects.filter(answer__message=pending).exists()


def test_when_the_broker_refuses_the_task_the_bookkeeping_is_done_in_place(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.replies = [GOOD]

    def refused(**kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.answer_bookkeep, "delay", refused)
    pending = pending_for(member)
    with factories.committed():
        services.answer_complete(message=pending)

    answer = Answer.objects.get(message=pending)
    assert "could not queue" in caplog.text
    assert CachedAnswer.objects.filter(answer=answer).exists()
    assert ModelCall.objects.filter(answer=answer).count() == CALLS


def test_an_api_answer_is_bookkept_after_its_commit_too(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]

    with factories.committed() as queued:
        answer = services.answer_for(user=member, question=QUESTION)
        assert answer.cost_usd is not None and not CachedAnswer.objects.filter(answer=answer).exists()

    assert len(queued) == 1
    assert CachedAnswer.objects.filter(answer=answer).exists()
    assert ModelCall.objects.filter(answer=answer).count() == CALLS


def test_an_exact_cache_hit_queues_nothing(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    with factories.committed():
        services.answer_complete(message=pending_for(member))

    with factories.committed() as queued:
        services.answer_complete(message=pending_for(member))

    assert Answer.objects.filter(cache_hit=True).count() == 1
    assert queued == []  # no model call to attach, and a hit is never cached again


def test_the_task_for_an_answer_that_is_gone_does_nothing(member: Any) -> None:
    result = tasks.answer_bookkeep.delay(answer_id=987654, call_ids=[1], query_vector=None, history=None)

    assert result.get() is False


def exact_key_lookups(monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False) -> list[str]:
    """The question hashes the cache is asked for from now on (the first such lookup raising,
    as a dropped connection would, when `fail_first`)."""
    asked: list[str] = []
    real = cache_lookup._candidates

    def spy(scope: Any, digest: str | None, *args: Any, **kwargs: Any) -> Any:
        if digest is not None:
            asked.append(digest)
            if fail_first and len(asked) == 1:
                raise RuntimeError("connection reset")
        return real(scope, digest, *args, **kwargs)

    monkeypatch.setattr(cache_lookup, "_candidates", spy)
    return asked


def test_the_full_cache_lookup_skips_the_exact_key_it_already_tried(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_provider.replies = [GOOD]
    exact = exact_key_lookups(monkeypatch)
    services.answer_complete(message=pending_for(member))
    assert len(exact) == 1  # before embedding only

    exact.clear()
    assistant.guardrails = {"pii_action": "redact"}  # answered redacted, not offered a rewrite
    assistant.save(update_fields=["guardrails"])
    fake_provider.replies = [GOOD]
    services.answer_complete(message=pending_for(member, f"{QUESTION} Ask jane.doe@example.com"))
    assert len(exact) == 1  # personal data: no fast path, so the full lookup tries the exact key


def test_a_turn_reads_its_message_and_settings_in_a_few_statements(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    pending = pending_for(member)
    with CaptureQueriesContext(connection) as queries:
        services.answer_complete(message=pending)

    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    # The message with its question, conversation, user, assistant and prompt come in one query,
    # and the assistant's collections are read once a turn.
    assert sum('FROM "assistant_message"' in s for s in statements) == 3  # turn, history, final read
    assert not any(s.startswith('SELECT "assistant_prompttemplate"') for s in statements)
    assert not any(s.startswith('SELECT "auth_user"') for s in statements)
    assert sum('INNER JOIN "assistant_assistant_collections"' in s for s in statements) == 1


def test_a_chunk_is_checked_for_injection_once_per_process(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []

    def counting(text: str) -> Any:
        checked.append(text)
        return check_chunk(text)

    monkeypatch.setattr(retrieval, "_chunk_verdict", functools.lru_cache(maxsize=16)(counting))
    fake_provider.replies = [GOOD, GOOD]
    first = services.answer_complete(message=pending_for(member)).answer
    second = services.answer_complete(
        message=pending_for(member, "When are expense reports due, exactly?")
    ).answer

    assert first.guardrails["chunks"] and second.guardrails["chunks"]
    assert len(checked) == len(set(checked)) == len(first.retrieved)
    assert [c["action"] for c in second.guardrails["chunks"]] == [
        c["action"] for c in first.guardrails["chunks"]
    ]


def test_after_a_failed_fast_path_the_full_lookup_tries_the_exact_key_again(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_provider.replies = [GOOD]
    exact = exact_key_lookups(monkeypatch, fail_first=True)
    answer = services.answer_complete(message=pending_for(member)).answer

    assert answer.grounded and len(exact) == 2

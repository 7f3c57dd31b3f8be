"""The pipeline with the semantic cache and model routing wired in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from answer_cache import services as answer_cache_services
from answer_cache.models import CachedAnswer
from assistant import serializers, services
from assistant.models import Answer, Assistant, Conversation
from gateway import provider
from knowledge.models import Document
from tests import factories
from tests.expense_policy import GOOD, QUESTION, UNGROUNDED
from tests.fakes import FakeProvider
from usage.models import ModelCall

pytestmark = pytest.mark.django_db

ROUTING = {"cheap_model": "small-model", "strong_model": "big-model", "fallback_models": ["small-model"]}


def ask(user: Any, question: str = QUESTION) -> Answer:
    conversation: Conversation = services.conversation_create(user=user)
    _asked, pending = services.message_send(conversation=conversation, text=question)
    with factories.committed():  # the cache entry and the calls' link are written after the commit
        services.answer_complete(message=pending)
    return Answer.objects.get(message=pending)


def chat_calls(fake: FakeProvider) -> int:
    return len(fake.calls)


def test_the_same_question_is_answered_from_the_cache_without_a_model_call(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider, client: Any
) -> None:
    fake_provider.replies = [GOOD]
    first = ask(member)
    assert first.grounded and not first.cache_hit
    calls, embedded = chat_calls(fake_provider), len(fake_provider.embedded)

    again = ask(member, "  when are EXPENSE reports due? ")

    assert chat_calls(fake_provider) == calls  # no model call
    assert len(fake_provider.embedded) == embedded  # the exact path embeds nothing
    assert again.cache_hit and again.cached_from == first
    assert again.text == first.text and again.citations == first.citations
    assert again.cost_usd == 0 and "cache" in again.latency_ms
    client.force_login(member)
    page = client.get(f"/c/{again.message.conversation_id}/").content.decode()
    assert "Answered from an earlier answer to: “When are expense reports due?”" in page


def test_an_abstention_is_not_served_again(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.1)  # the model's answer fails grounding and the evidence is weak: no answer
    fake_provider.replies = [UNGROUNDED, GOOD]
    first = ask(member)
    assert first.grounded is False and first.answer_source == "none"

    again = ask(member)

    assert not again.cache_hit and again.grounded and chat_calls(fake_provider) == 2


def test_an_evidence_answer_is_cached_like_a_grounded_model_answer(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    """On a weak model most answers are the evidence: asked twice, the second is a cache hit."""
    evidence_strength(0.9)
    fake_provider.replies = [UNGROUNDED]
    first = ask(member)
    assert first.answer_source == "evidence" and first.grounded is True and not first.flagged
    assert CachedAnswer.objects.filter(answer=first).exists()

    again = ask(member)

    assert again.cache_hit and again.cached_from == first and chat_calls(fake_provider) == 1
    assert again.answer_source == "evidence" and again.text == first.text
    assert again.evidence == first.evidence and again.model_text == first.model_text


def test_changing_the_assistant_drops_its_cached_answers(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    ask(member)
    assert services.assistant_settings_changed(assistant=assistant) == 1

    assert not ask(member).cache_hit


def test_a_replay_never_comes_from_the_cache(
    assistant: Assistant, policy: Document, member: Any, owner: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    first = ask(member)

    replay = services.answer_replay(answer=first, user=owner)

    assert not replay.cache_hit and chat_calls(fake_provider) == 2


def test_each_question_is_routed_and_the_decision_recorded(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    assistant.routing = ROUTING
    assistant.save(update_fields=["routing"])
    fake_provider.replies = [GOOD]

    answer = ask(member)

    assert answer.route["route"] in {"cheap", "strong"} and answer.route["reason"]
    assert answer.model == answer.route["model"] in {"small-model", "big-model"}
    assert fake_provider.calls[-1]["params"].model == answer.model


def test_a_timeout_falls_back_to_another_model(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    assistant.routing = {**ROUTING, "strong_types": ["lookup", "definition", "comparison", "multi_step"]}
    assistant.routing["use_classifier"] = False
    assistant.routing["max_cheap_words"] = 1  # every question goes to the strong model first
    assistant.save(update_fields=["routing"])
    fake_provider.replies = [provider.ProviderError("timed out", kind=provider.ErrorKind.TIMEOUT), GOOD]

    answer = ask(member)

    assert answer.route["route"] == "fallback" and answer.route["fallback_from"] == "big-model"
    assert answer.model == "small-model" and answer.grounded
    assert [c["params"].model for c in fake_provider.calls] == ["big-model", "small-model"]


def test_a_repair_call_is_accounted_as_repair(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = ["not json at all", GOOD]

    answer = ask(member)

    assert answer.repaired
    purposes = list(ModelCall.objects.filter(answer=answer).values_list("purpose", flat=True))
    assert "repair" in purposes and "answer" in purposes


def test_the_cache_failing_is_only_a_miss(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("cache table missing")

    monkeypatch.setattr(answer_cache_services, "cache_lookup_exact", broken)
    monkeypatch.setattr(answer_cache_services, "cache_lookup_similar", broken)
    fake_provider.replies = [GOOD]

    assert ask(member).grounded


def test_storing_an_answer_in_the_cache_reuses_the_retrieval_vector(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    before = len(fake_provider.embedded)

    answer = ask(member)

    assert answer.grounded and CachedAnswer.objects.filter(answer=answer).exists()
    # Once, for retrieval and the cache; then only the evidence's sentences.
    assert fake_provider.embedded[before] == QUESTION and fake_provider.embedded[before:].count(QUESTION) == 1


def test_flagging_a_served_copy_stops_the_cache_serving_it(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    first = ask(member)
    hit = ask(member)
    assert hit.cached_from == first

    services.flag_create(answer=hit, user=member, category="wrong", note="out of date")

    assert not CachedAnswer.objects.filter(answer=first).exists()
    assert not ask(member).cache_hit


def test_a_message_with_personal_data_skips_the_exact_path(
    assistant: Assistant,
    policy: Document,
    member: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups: list[bool] = []
    real_exact = answer_cache_services.cache_lookup_exact
    real_similar = answer_cache_services.cache_lookup_similar

    def exact(**kwargs: Any) -> Any:
        lookups.append(True)
        return real_exact(**kwargs)

    def similar(**kwargs: Any) -> Any:
        lookups.append(False)
        return real_similar(**kwargs)

    monkeypatch.setattr(answer_cache_services, "cache_lookup_exact", exact)
    monkeypatch.setattr(answer_cache_services, "cache_lookup_similar", similar)
    fake_provider.replies = [GOOD, GOOD]

    ask(member, f"{QUESTION} Reply to jane.doe@example.com")
    assert True not in lookups  # no exact lookup: the input checks decide what happens to it
    seen = len(lookups)
    ask(member)
    assert lookups[seen:] == [True, False]


def test_a_replay_keeps_the_original_model_under_a_routing_policy(
    assistant: Assistant, policy: Document, member: Any, owner: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD, GOOD]
    first = ask(member)
    assistant.routing = ROUTING
    assistant.save(update_fields=["routing"])

    replay = services.answer_replay(answer=first, user=owner)

    assert replay.model == first.model and replay.route["route"] == "fixed"


def test_health_probes_are_not_recorded_as_usage(db: None, fake_provider: FakeProvider) -> None:
    from ops import health

    health.CHECKS["embeddings_model"]()

    assert not ModelCall.objects.exists()


def test_a_request_refused_outright_goes_to_review_for_over_refusal(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [GOOD]
    answer = ask(member)
    answer.guardrails = {"input_action": "block", "categories": ["violence_weapons"]}

    services._flag_automatically(answer)

    flag = answer.flags.get(source="guardrail")
    assert flag.category == "other" and "violence_weapons" in flag.note and "harmless" in flag.note


def test_a_follow_up_is_cached_under_the_redacted_history(
    assistant: Assistant, policy: Document, member: Any, fake_provider: FakeProvider
) -> None:
    from answer_cache.text import normalize_question, text_hash
    from guardrails.checks import GuardConfig, provider_text

    conversation: Conversation = services.conversation_create(user=member)
    first = f"{QUESTION} Ask jane.doe@example.com"
    fake_provider.replies = [GOOD, GOOD]
    for text in (first, "and receipts?"):
        _asked, pending = services.message_send(conversation=conversation, text=text)
        with factories.committed():
            services.answer_complete(message=pending)

    follow_up = Answer.objects.get(message=pending)
    entry = CachedAnswer.objects.get(answer=follow_up)
    redacted = provider_text(first, GuardConfig()).strip()
    assert "jane" not in redacted
    assert entry.context_key == text_hash(normalize_question(redacted))
    assert not any("jane" in text for text in fake_provider.embedded)


def test_a_hit_names_another_persons_question_only_once_staff_approved_the_answer(
    assistant: Assistant,
    policy: Document,
    member: Any,
    outsider: Any,
    owner: Any,
    fake_provider: FakeProvider,
    client: Any,
) -> None:
    fake_provider.replies = [GOOD]
    first = ask(member, "When exactly are the expense reports due?")
    hit = ask(outsider, "When exactly are the expense reports due?")  # the same public collection
    assert hit.cache_hit and hit.cached_from == first

    client.force_login(outsider)
    page = client.get(f"/c/{hit.message.conversation_id}/").content.decode()
    assert "Answered from an earlier answer to a similar question, on" in page
    assert "When exactly are the expense reports due?" not in page.split('class="msg msg-assistant')[1]
    assert serializers.cached_from_json(hit)["question"] is None  # nor through the API

    answer_cache_services.cache_store(answer=first, approved=True)  # what staff approval does
    page = client.get(f"/c/{hit.message.conversation_id}/").content.decode()
    assert "Answered from an earlier answer to: “When exactly are the expense reports due?”" in page
    assert serializers.cached_from_json(hit)["question"] == "When exactly are the expense reports due?"

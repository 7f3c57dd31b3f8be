"""The answer cache: what is stored, what is served to whom, and when it goes stale."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from answer_cache import lookup as cache_lookup
from answer_cache import selectors, services, tasks
from answer_cache.models import CacheCounter, CachedAnswer
from answer_cache.text import normalize_question
from assistant import pipeline
from assistant import services as assistant_services
from assistant.models import Answer, Assistant
from guardrails.checks import check_input, provider_text
from knowledge import services as knowledge_services
from knowledge.models import Collection, Document
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

EXPENSES = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""
SALARIES = """# Salary bands

## Engineering

Engineering salary bands are reviewed every March by the finance team.
"""
QUESTION = "When are expense reports due?"
ANSWER_TEXT = "Expense reports are due on the 5th of each month [1]."


@pytest.fixture(autouse=True)
def _cache_settings(settings: Any) -> None:
    settings.ANSWER_CACHE_ENABLED = True
    settings.ANSWER_CACHE_SIMILARITY = 0.8  # suits the fake bag-of-words embeddings
    settings.ANSWER_CACHE_TTL_SECONDS = 3600


@pytest.fixture
def public(db: None) -> Collection:
    return factories.collection(name="Handbook", public=True)


@pytest.fixture
def finance(owner: Any, member: Any) -> Collection:
    """Readable by the owner and the member, not by the outsider."""
    return factories.collection(name="Finance", readers=[owner, member])


@pytest.fixture
def expenses(finance: Collection) -> Document:
    return factories.document(collection=finance, text=EXPENSES, filename="expenses.md")


def make_answer(
    assistant: Assistant,
    user: Any,
    documents: list[Document],
    *,
    question: str = QUESTION,
    **fields: Any,
) -> Answer:
    """A saved answer built from every chunk of `documents`, citing the first; grounded by default."""
    chunks = [c for d in documents for c in d.chunks.order_by("position")]
    values: dict[str, Any] = {
        "assistant": assistant,
        "user": user,
        "question": question,
        "text": ANSWER_TEXT,
        "citations": [{"n": 1, "chunk_id": chunks[0].pk, "document_id": chunks[0].document_id}],
        "retrieved": [
            {"n": i, "chunk_id": c.pk, "document_id": c.document_id} for i, c in enumerate(chunks, 1)
        ],
        "grounded": True,
        "model": "fake-model",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 400,
        "prompt": assistant.prompt,
        "prompt_tokens": 900,
        "completion_tokens": 60,
        "cost_usd": Decimal("0.002"),
        "latency_ms": {"total": 2500.0},
    }
    values.update(fields)
    return Answer.objects.create(**values)


def lookup(user: Any, assistant: Assistant, question: str = QUESTION, **kwargs: Any) -> Any:
    return services.cache_lookup(
        user=user, assistant=assistant, question=question, history=kwargs.pop("history", []), **kwargs
    )


# --- keys ------------------------------------------------------------------------------------


def test_normalisation_ignores_case_spacing_and_edge_punctuation() -> None:
    assert normalize_question("  When ARE expense\n reports due?? ") == "when are expense reports due"
    assert normalize_question("¿Qué es?") == "qué es"
    assert normalize_question("C++ or C#?") == "c++ or c#"


def test_a_follow_up_is_keyed_by_the_previous_question() -> None:
    history = [(QUESTION, ANSWER_TEXT)]
    assert services.context_key("and receipts?", history) != ""
    assert services.context_key("and receipts?", history) == services.context_key(
        "And receipts", [("when are expense reports due", "other answer")]
    )
    assert services.context_key("and receipts?", [("Who approves travel?", "")]) != services.context_key(
        "and receipts?", history
    )
    assert services.context_key("and receipts?", []) == ""
    # A question that stands on its own retrieves the same sources in any conversation.
    assert services.context_key("How do I submit expense reports with receipts?", history) == ""


# --- store -----------------------------------------------------------------------------------


def test_a_grounded_answer_is_stored_with_its_sources(
    assistant: Assistant, owner: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    answer = make_answer(assistant, owner, [expenses])

    entry = services.cache_store(answer=answer)

    assert entry is not None
    chunk = expenses.chunks.get()
    assert entry.question == "when are expense reports due"
    assert entry.chunk_ids == [chunk.pk] and entry.cited_chunk_ids == [chunk.pk]
    assert entry.document_ids == [expenses.pk]
    assert entry.context_key == "" and not entry.approved
    assert len(entry.embedding) == 384 and fake_provider.embedded[-1] == QUESTION
    assert entry.expires_at - entry.created_at == pytest.approx(
        dt.timedelta(hours=1), abs=dt.timedelta(seconds=5)
    )
    # Storing again refreshes the one entry.
    assert services.cache_store(answer=answer).pk == entry.pk  # type: ignore[union-attr]
    assert CachedAnswer.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"grounded": False}, "not grounded"),
        ({"grounded": None}, "not grounded"),
        ({"flagged": True}, "flagged"),
        ({"abstained": True}, "abstained"),
        ({"fallback": True}, "a fallback"),
        ({"cache_hit": True}, "a cache hit"),
        ({"retrieved": [], "citations": []}, "no sources"),
    ],
)
def test_answers_that_must_not_be_served_again_are_not_stored(
    assistant: Assistant, owner: Any, expenses: Document, fields: dict[str, Any], reason: str
) -> None:
    answer = make_answer(assistant, owner, [expenses], **fields)

    assert services.cacheable_reason(answer) == reason
    assert services.cache_store(answer=answer) is None
    assert not CachedAnswer.objects.exists()


def test_an_answer_flagged_by_a_user_is_not_stored(
    assistant: Assistant, owner: Any, expenses: Document
) -> None:
    answer = make_answer(assistant, owner, [expenses])
    assistant_services.flag_create(answer=answer, user=owner, category="wrong")
    assert services.cache_store(answer=answer) is None


def test_staff_approval_caches_an_ungrounded_or_flagged_answer_but_never_an_abstention(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    ungrounded = make_answer(assistant, owner, [expenses], grounded=False, flagged=True)
    entry = services.cache_store(answer=ungrounded, approved=True)
    assert entry is not None and entry.approved
    hit = lookup(member, assistant)
    assert hit is not None and hit.answer == ungrounded

    abstained = make_answer(assistant, owner, [expenses], question="Anything else?", abstained=True)
    assert services.cache_store(answer=abstained, approved=True) is None


def test_nothing_is_stored_or_served_when_the_cache_is_off(
    settings: Any, assistant: Assistant, owner: Any, expenses: Document
) -> None:
    answer = make_answer(assistant, owner, [expenses])
    services.cache_store(answer=answer)
    settings.ANSWER_CACHE_ENABLED = False
    assert lookup(owner, assistant) is None
    assert services.cache_store(answer=make_answer(assistant, owner, [expenses], question="Other?")) is None


# --- lookup ----------------------------------------------------------------------------------


def test_the_same_question_hits_without_an_embedding(
    assistant: Assistant, owner: Any, member: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    answer = make_answer(assistant, owner, [expenses])
    services.cache_store(answer=answer)
    embedded = len(fake_provider.embedded)

    hit = lookup(member, assistant, "  when are EXPENSE reports due ")

    assert hit is not None
    assert (hit.kind, hit.similarity, hit.answer, hit.text) == ("exact", 1.0, answer, ANSWER_TEXT)
    assert hit.citations == answer.citations and hit.question == QUESTION
    assert hit.latency_ms > 0
    assert len(fake_provider.embedded) == embedded  # the exact path embeds nothing
    entry = CachedAnswer.objects.get()
    assert entry.hits == 1 and entry.last_hit_at is not None


def test_a_close_paraphrase_hits_by_similarity(
    assistant: Assistant, owner: Any, member: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    embedded = len(fake_provider.embedded)

    hit = lookup(member, assistant, "When are the expense reports due?")

    assert hit is not None and hit.kind == "semantic"
    assert 0.8 <= hit.similarity < 1.0
    assert len(fake_provider.embedded) == embedded + 1  # embedded here, no vector given


def test_a_given_vector_is_used_and_not_embedded_again(
    assistant: Assistant, owner: Any, member: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    from tests.fakes import fake_vector

    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    embedded = len(fake_provider.embedded)
    hit = lookup(
        member,
        assistant,
        "When are the expense reports due?",
        query_vector=fake_vector("When are the expense reports due?"),
    )
    assert hit is not None and len(fake_provider.embedded) == embedded


def test_a_lookup_with_vector_and_permissions_given_is_one_candidate_statement(
    assistant: Assistant,
    owner: Any,
    member: Any,
    expenses: Document,
    finance: Collection,
    django_assert_num_queries: Any,
) -> None:
    from tests.fakes import fake_vector

    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    # An entry far from the questions below: the walk reaches past the floor, so it saw every
    # entry near enough (see the crowded walk's tests).
    services.cache_store(answer=make_answer(assistant, owner, [expenses], question="Who approves travel?"))
    paraphrase = "When are the expense reports due?"
    other = "Where do I submit receipts in the finance portal?"

    def given(question: str) -> dict[str, Any]:
        return {"query_vector": fake_vector(question), "readable": [finance.pk]}

    # A hit: the candidates (exact key and nearest, one statement), the served entry, the counter
    # (inside the test's transaction the counter runs in a savepoint: two statements more).
    with django_assert_num_queries(3 + 2):
        hit = lookup(member, assistant, paraphrase, **given(paraphrase))
    assert hit is not None and hit.kind == "semantic"
    with django_assert_num_queries(3 + 2):
        hit = lookup(member, assistant, QUESTION, **given(QUESTION))
    assert hit is not None and hit.kind == "exact"
    # A miss loads no entry: nothing above the floor comes back from the database.
    with django_assert_num_queries(2 + 2):
        assert lookup(member, assistant, other, **given(other)) is None


def test_the_nearest_entries_can_be_walked_through_the_hnsw_index(
    assistant: Assistant, finance: Collection
) -> None:
    from tests.fakes import fake_vector

    scope = cache_lookup._Scope(
        assistant_id=assistant.pk, context_key="", now=timezone.now(), readable=[finance.pk]
    )
    sql, params = cache_lookup._candidates_sql(scope, None, fake_vector(QUESTION), floor=0.9, limit=5)
    exhaustive, values = cache_lookup._candidates_sql(
        scope, None, fake_vector(QUESTION), floor=0.9, limit=5, exhaustive=True
    )

    # A table this small would be scanned and sorted: what matters is whether it need be. The
    # walk can use the index; the exhaustive comparison cannot, so it never walks it again.
    assert "cachedanswer_embedding_hnsw" in explain(sql, params)
    assert "cachedanswer_embedding_hnsw" not in explain(exhaustive, values)


def explain(sql: str, params: list[Any]) -> str:
    """The plan of `sql` with sequential scans and sorts priced out of reach."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def crowded(
    assistant: Assistant, owner: Any, expenses: Document, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """A walk of three, crowded: three other assistants hold the paraphrase itself, nearer to it
    than this assistant's entry for QUESTION (and nothing lies beyond the floor)."""
    monkeypatch.setattr(cache_lookup, "NEAREST_WALK", 3)
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    others = []
    for i in range(3):
        other = Assistant.objects.create(name=f"Other {i}", scope="Other things.", prompt=assistant.prompt)
        assert services.cache_store(answer=make_answer(other, owner, [expenses], question=PARAPHRASE))
        others.append(other)
    return others


def test_a_crowded_walk_compares_every_entry(
    assistant: Assistant, member: Any, expenses: Document, crowded: list[Any], django_assert_num_queries: Any
) -> None:
    from tests.fakes import fake_vector

    given = {"query_vector": fake_vector(PARAPHRASE), "readable": [expenses.collection_id]}
    # The walk, crowded, then every entry compared; the served entry; the counter (+2 in a test).
    with django_assert_num_queries(4 + 2):
        hit = lookup(member, assistant, PARAPHRASE, **given)
    assert hit is not None and hit.kind == "semantic" and hit.answer.assistant == assistant

    # An exact hit needs nothing more, however crowded the walk.
    with django_assert_num_queries(3 + 2):
        hit = lookup(member, crowded[0], PARAPHRASE, **given)
    assert hit is not None and hit.kind == "exact"


def test_a_walk_that_comes_back_short_is_taken_for_crowded(
    assistant: Assistant, member: Any, expenses: Document, crowded: list[Any]
) -> None:
    from django.db import connection, transaction

    from tests.fakes import fake_vector

    given = {"query_vector": fake_vector(PARAPHRASE), "readable": [expenses.collection_id]}
    # The index hands over two entries, and one of those is gone: the walk sees one entry, near,
    # and nothing beyond the floor. The servable entry is still found.
    CachedAnswer.objects.filter(assistant=crowded[0]).delete()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL hnsw.ef_search = 2"
        )
        hit = lookup(member, assistant, PARAPHRASE, **given)

    assert hit is not None and hit.answer.assistant == assistant


def test_a_nearer_unservable_entry_does_not_hide_a_servable_one(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    flagged = make_answer(assistant, owner, [expenses], question="When are the expense reports due?")
    services.cache_store(answer=flagged)
    Answer.objects.filter(pk=flagged.pk).update(flagged=True)

    hit = lookup(member, assistant, "When are the expense reports due?!", query_vector=None)

    assert hit is not None and hit.answer.question == QUESTION


def test_a_question_below_the_threshold_misses(
    settings: Any, assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))

    assert lookup(member, assistant, "Where do I submit receipts in the finance portal?") is None
    # The same paraphrase that hits at 0.8 misses once the threshold is above its similarity.
    paraphrase = "When are the expense reports due?"
    assert lookup(member, assistant, paraphrase) is not None
    settings.ANSWER_CACHE_SIMILARITY = 0.99
    assert lookup(member, assistant, paraphrase) is None
    assert lookup(member, assistant, QUESTION) is not None  # exact matches need no threshold


def test_a_reworded_question_with_the_same_content_words_hits_by_exact_key(
    assistant: Assistant, owner: Any, member: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    embedded = len(fake_provider.embedded)

    hit = lookup(member, assistant, "Hi, please: when are expense reports due? Thanks!")

    assert hit is not None and hit.kind == "exact"
    assert len(fake_provider.embedded) == embedded
    assert (
        services.cache_lookup_exact(
            user=member, assistant=assistant, question="Where are expense reports due?", history=[]
        )
        is None
    )


def test_the_match_rule_accepts_by_cosine_or_by_a_lower_cosine_with_shared_words() -> None:
    rule = services.MatchRule(similarity=0.96, floor=0.93, min_overlap=0.5)
    same = ("when are expense reports due", "When are the expense reports due?")
    other = ("when are expense reports due", "When are salary reviews due?")
    assert rule.accepts(similarity=0.97, question=other[1], cached_question=other[0])  # cosine alone
    assert rule.accepts(similarity=0.94, question=same[1], cached_question=same[0])
    assert not rule.accepts(similarity=0.94, question=other[1], cached_question=other[0])
    assert not rule.accepts(similarity=0.92, question=same[1], cached_question=same[0])  # below floor


def test_the_match_rule_from_settings_turns_the_word_check_off_with_a_high_floor(settings: Any) -> None:
    settings.ANSWER_CACHE_SIMILARITY, settings.ANSWER_CACHE_SIMILARITY_FLOOR = 0.9, 0.99
    settings.ANSWER_CACHE_MIN_WORD_OVERLAP, settings.ANSWER_CACHE_CANDIDATES = 0.0, 3
    rule = services.MatchRule.from_settings()
    assert (rule.similarity, rule.floor, rule.candidates) == (0.9, 0.9, 3)
    assert not rule.accepts(similarity=0.89, question="a b c", cached_question="a b c")


def test_below_the_cosine_threshold_shared_content_words_decide(
    settings: Any, assistant: Assistant, owner: Any, member: Any, outsider: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    paraphrase, elsewhere = "When are the expense reports due?", "When are salary reviews due?"
    # On cosine alone, at a low enough threshold, the other question would be served the answer.
    settings.ANSWER_CACHE_SIMILARITY = 0.5
    assert lookup(member, assistant, elsewhere) is not None
    # Cosine alone now requires 0.99; from 0.5 the questions must share their content words.
    settings.ANSWER_CACHE_SIMILARITY, settings.ANSWER_CACHE_SIMILARITY_FLOOR = 0.99, 0.5
    settings.ANSWER_CACHE_MIN_WORD_OVERLAP = 0.6
    hit = lookup(member, assistant, paraphrase)
    assert hit is not None and hit.kind == "semantic" and hit.similarity < 0.99
    assert lookup(member, assistant, elsewhere) is None
    # The word check is an extra filter: the outsider is refused whatever the words.
    assert lookup(outsider, assistant, paraphrase) is None


def test_a_nearer_entry_about_something_else_does_not_block_a_matching_one(
    settings: Any, assistant: Assistant, owner: Any, member: Any, finance: Collection
) -> None:
    salaries = factories.document(collection=finance, text=SALARIES, filename="salaries.md")
    expenses = factories.document(collection=finance, text=EXPENSES, filename="expenses.md")
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    # Nearer in the fake bag-of-words space (it holds every word of the question), other words.
    decoy = make_answer(assistant, owner, [salaries], question="When are the expense reports due abroad?")
    services.cache_store(answer=decoy)
    settings.ANSWER_CACHE_SIMILARITY, settings.ANSWER_CACHE_SIMILARITY_FLOOR = 0.99, 0.3
    settings.ANSWER_CACHE_MIN_WORD_OVERLAP = 0.9

    question = "When are the expense reports due?"
    nearest = cache_lookup._candidates(
        cache_lookup._Scope(assistant.pk, "", timezone.now(), [finance.pk]),
        "no such hash",
        cache_lookup.embed_query(question, []),
        floor=0.0,
        limit=5,
    )
    assert nearest[0].entry_id == CachedAnswer.objects.get(answer=decoy).pk

    hit = lookup(member, assistant, question)

    assert hit is not None and hit.question == QUESTION


def test_another_assistant_does_not_share_the_entry(
    assistant: Assistant, owner: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    other = Assistant.objects.create(name="Other", scope="Other things.", prompt=assistant.prompt)
    assert lookup(owner, other) is None
    assert lookup(owner, assistant) is not None


def test_a_follow_up_hits_only_after_the_same_previous_question(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    history = [(QUESTION, ANSWER_TEXT)]
    answer = make_answer(assistant, owner, [expenses], question="and receipts?")
    entry = services.cache_store(answer=answer, history=history)
    assert entry is not None and entry.context_key

    assert lookup(member, assistant, "And receipts?", history=[("when are expense reports due", "…")])
    assert lookup(member, assistant, "and receipts?", history=[("Who approves travel?", "…")]) is None
    assert lookup(member, assistant, "and receipts?") is None


def test_the_history_of_a_chat_answer_is_read_from_its_conversation(
    assistant: Assistant, member: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    reply = json.dumps({"answer": ANSWER_TEXT, "citations": [1], "confidence": 0.9, "not_found": False})
    fake_provider.replies = [reply, reply]
    conversation = assistant_services.conversation_create(user=member, assistant=assistant)
    for text in (QUESTION, "and receipts?"):
        _, pending = assistant_services.message_send(conversation=conversation, text=text)
        assistant_services.answer_complete(message=pending)
    follow_up = Answer.objects.get(message=pending)
    assert follow_up.grounded is True

    entry = services.cache_store(answer=follow_up)

    assert entry is not None
    assert entry.context_key == services.context_key("and receipts?", [(QUESTION, "")])
    assert fake_provider.embedded[-1] == f"{QUESTION} and receipts?"  # the text retrieval embeds


def test_an_answer_made_by_the_pipeline_is_stored_and_served(
    assistant: Assistant, member: Any, outsider: Any, expenses: Document, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        json.dumps({"answer": ANSWER_TEXT, "citations": [1], "confidence": 0.9, "not_found": False})
    ]
    answer = assistant_services.answer_for(user=member, question=QUESTION, assistant=assistant)
    assert answer.grounded is True and not answer.flagged

    assert services.cache_store(answer=answer) is not None
    hit = lookup(member, assistant, "when are expense reports due")
    assert hit is not None and hit.answer == answer
    assert lookup(outsider, assistant) is None


PARAPHRASE = "When exactly are expense reports due?"


def checks_recorded(monkeypatch: Any, *, vouched_from: float | None = None) -> list[dict[str, Any]]:
    """Record the pipeline's input-check calls. With `vouched_from`, a check given no knowledge-base
    match, or a weaker one, flags specialised advice: the match vouches for it from that score."""
    calls: list[dict[str, Any]] = []

    def check(text: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        result = check_input(text, **kwargs)
        score = kwargs["retrieval_score"]
        if vouched_from is not None and (score is None or score < vouched_from):
            return dataclasses.replace(
                result, action="block", categories=["harm:specialised_advice"], reason="Specialised advice."
            )
        return result

    monkeypatch.setattr("assistant.pipeline.guard.check_input", check)
    return calls


def forbid_search(monkeypatch: Any) -> None:
    def no_search(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit searched the knowledge base")

    monkeypatch.setattr("knowledge.selectors.search", no_search)


def test_a_paraphrase_is_served_after_the_input_checks_without_a_search(
    assistant: Assistant, member: Any, expenses: Document, fake_provider: FakeProvider, monkeypatch: Any
) -> None:
    services.cache_store(answer=make_answer(assistant, member, [expenses]))
    checked = checks_recorded(monkeypatch)
    forbid_search(monkeypatch)
    served = assistant_services.answer_for(user=member, question=PARAPHRASE, assistant=assistant)

    assert served.cache_hit and served.text == ANSWER_TEXT
    assert fake_provider.calls == []  # no chat call
    # Checked once, as a question on topic by definition: its answer came from the knowledge base.
    assert len(checked) == 1 and checked[0]["scope"] == "" and checked[0]["retrieval_score"] is None
    assert served.guardrails is not None and served.guardrails["input_action"] == "allow"
    assert "retrieval" not in served.latency_ms and "guard_input" in served.latency_ms
    stats = selectors.cache_stats()
    assert (stats.lookups, stats.semantic_hits) == (1, 1) and CachedAnswer.objects.get().hits == 1


def test_a_paraphrase_the_input_checks_doubt_is_searched_before_it_is_served(
    assistant: Assistant, member: Any, expenses: Document, monkeypatch: Any
) -> None:
    """A flagged message takes the full path: a good enough match in the knowledge base vouches
    for it (here a specialised-advice flag) and the hit is served; a weaker one does not."""
    services.cache_store(answer=make_answer(assistant, member, [expenses]))
    # The fake bag-of-words embeddings match the chunk at ~0.3.
    calls = checks_recorded(monkeypatch, vouched_from=0.25)
    served = assistant_services.answer_for(user=member, question=PARAPHRASE, assistant=assistant)

    assert served.cache_hit and served.text == ANSWER_TEXT
    assert [c["retrieval_score"] is None for c in calls] == [True, False]  # checked again, vouched
    assert served.guardrails is not None and served.guardrails["input_action"] == "allow"
    assert "retrieval" in served.latency_ms
    assert CachedAnswer.objects.get().hits == 1

    # A match below what vouches for a question: stopped, not served, and not counted as a hit.
    checks_recorded(monkeypatch, vouched_from=1.01)
    stopped = assistant_services.answer_for(user=member, question=PARAPHRASE, assistant=assistant)
    assert not stopped.cache_hit and stopped.abstained
    assert CachedAnswer.objects.get().hits == 1


def test_the_cached_questions_own_match_vouches_for_a_paraphrase(
    assistant: Assistant, member: Any, expenses: Document, monkeypatch: Any
) -> None:
    """A flag the knowledge base may vouch for is lifted on the fast path by the match retrieval
    found for the cached question, whose documents the answer comes from: no search needed."""
    source = make_answer(assistant, member, [expenses])
    source.retrieved = [{**row, "vector_score": 0.91} for row in source.retrieved]
    source.save(update_fields=["retrieved"])
    services.cache_store(answer=source)
    calls = checks_recorded(monkeypatch, vouched_from=0.8)
    forbid_search(monkeypatch)
    served = assistant_services.answer_for(user=member, question=PARAPHRASE, assistant=assistant)

    assert served.cache_hit and [c["retrieval_score"] for c in calls] == [0.91]


def test_a_paraphrase_the_input_checks_stop_is_not_served_from_the_cache(
    assistant: Assistant, member: Any, expenses: Document, fake_provider: FakeProvider, settings: Any
) -> None:
    """Personal data in a close paraphrase (pii_action "rewrite"): the safe rewrite is offered,
    as without the cache, and the lookup counts neither as a hit nor as a miss."""
    settings.ANSWER_CACHE_SIMILARITY = 0.5  # the e-mail address moves the fake embedding away
    services.cache_store(answer=make_answer(assistant, member, [expenses]))
    question = f"{QUESTION} Reply to jane.doe@example.com"
    redacted = provider_text(question, pipeline.guard_config(assistant))
    found = services.cache_lookup_similar(  # what the pipeline finds (not counted)
        user=member,
        assistant=assistant,
        question=redacted,
        history=[],
        query_vector=cache_lookup.embed_query(redacted, []),
    )
    assert found is not None

    answer = assistant_services.answer_for(user=member, question=question, assistant=assistant)

    assert not answer.cache_hit and answer.abstained and answer.rewrite
    assert fake_provider.calls == []
    assert CachedAnswer.objects.get().hits == 0
    assert selectors.cache_stats().lookups == 0


# --- scope -----------------------------------------------------------------------------------


def test_only_users_who_can_read_every_source_get_the_hit(
    assistant: Assistant, owner: Any, member: Any, outsider: Any, public: Collection, expenses: Document
) -> None:
    handbook = factories.document(collection=public, text=SALARIES, filename="salaries.md")
    # Built from a public chunk and a Finance chunk; citing only the public one.
    answer = make_answer(assistant, owner, [handbook, expenses])
    services.cache_store(answer=answer)

    assert lookup(owner, assistant) is not None
    assert lookup(member, assistant) is not None
    assert lookup(outsider, assistant) is None
    assert lookup(outsider, assistant, "When are the expense reports due?") is None

    # Given read access, the outsider gets it too.
    expenses.collection.reader_users.add(outsider)
    assert lookup(outsider, assistant) is not None


def test_a_group_reader_gets_the_hit_and_loses_it_with_the_group(
    assistant: Assistant, owner: Any, outsider: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    group = factories.group()
    expenses.collection.reader_groups.add(group)
    outsider.groups.add(group)
    assert lookup(outsider, assistant) is not None
    outsider.groups.remove(group)
    assert lookup(outsider, assistant) is None


def test_an_assistant_narrowed_to_other_collections_does_not_serve_the_entry(
    assistant: Assistant, owner: Any, public: Collection, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    assistant.collections.set([public])
    assert lookup(owner, assistant) is None
    # Narrowed to the very collection it used, the assistant would still search less than when the
    # answer was made (it could read every collection then): not served either.
    assistant.collections.set([expenses.collection])
    assert lookup(owner, assistant) is None
    assistant.collections.clear()
    assert lookup(owner, assistant) is not None


def test_an_answer_made_with_less_access_is_not_served_to_someone_who_may_read_more(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    """Same sources, readable by both; but the owner's search reaches more, so ask afresh."""
    factories.collection(name="Board", readers=[owner])
    services.cache_store(answer=make_answer(assistant, member, [expenses]))
    assert lookup(member, assistant) is not None
    assert services.scope_key(owner, assistant) != services.scope_key(member, assistant)
    assert lookup(owner, assistant) is None


# --- invalidation ----------------------------------------------------------------------------


def test_reindexing_a_changed_document_invalidates_the_entry(
    assistant: Assistant, owner: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    assert lookup(owner, assistant) is not None

    changed = EXPENSES.replace("5th", "10th")
    updated = factories.document(collection=expenses.collection, text=changed, filename="expenses.md")

    assert updated.pk == expenses.pk and updated.version == 2
    assert lookup(owner, assistant) is None
    assert services.cache_purge() == 1
    assert not CachedAnswer.objects.exists()


def test_deleting_a_document_invalidates_the_entry(
    assistant: Assistant, owner: Any, public: Collection, expenses: Document
) -> None:
    handbook = factories.document(collection=public, text=SALARIES, filename="salaries.md")
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    kept = services.cache_store(
        answer=make_answer(assistant, owner, [handbook], question="When are salary bands reviewed?")
    )

    knowledge_services.document_delete(document=expenses)

    assert lookup(owner, assistant) is None
    assert lookup(owner, assistant, "When are salary bands reviewed?") is not None
    assert tasks.purge_answer_cache() == 1
    assert list(CachedAnswer.objects.all()) == [kept]


def test_invalidate_by_document_drops_only_entries_built_from_it(
    assistant: Assistant, owner: Any, public: Collection, expenses: Document
) -> None:
    handbook = factories.document(collection=public, text=SALARIES, filename="salaries.md")
    services.cache_store(answer=make_answer(assistant, owner, [expenses, handbook]))
    services.cache_store(answer=make_answer(assistant, owner, [handbook], question="Salary review?"))

    assert services.cache_invalidate() == 0
    assert services.cache_invalidate(document_ids=[expenses.pk]) == 1
    assert CachedAnswer.objects.get().question == "salary review"
    assert services.cache_invalidate(assistant=assistant) == 1


def test_an_expired_entry_is_not_served_and_is_purged(
    assistant: Assistant, owner: Any, expenses: Document
) -> None:
    entry = services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    assert entry is not None
    CachedAnswer.objects.filter(pk=entry.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert lookup(owner, assistant) is None
    assert services.cache_purge() == 1


def test_an_entry_flagged_after_it_was_stored_is_no_longer_served(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    answer = make_answer(assistant, owner, [expenses])
    services.cache_store(answer=answer)
    assistant_services.flag_create(answer=answer, user=member, category="wrong")

    assert lookup(owner, assistant) is None
    assert services.cache_purge() == 1


def test_a_newer_answer_to_the_same_question_replaces_the_older(
    assistant: Assistant, owner: Any, expenses: Document
) -> None:
    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    newer = make_answer(assistant, owner, [expenses], question="when are expense reports due")
    services.cache_store(answer=newer)
    assert CachedAnswer.objects.get().answer == newer


# --- the hit, and stats ----------------------------------------------------------------------


def test_the_hit_notice_names_the_earlier_question_and_its_date() -> None:
    asked = dt.datetime(2025, 3, 4, 12, 0, tzinfo=dt.UTC)
    assert (
        services.hit_notice(question="When are  expense reports due?", asked_at=asked)
        == "Answered from an earlier answer to: “When are expense reports due?”, on 4 March 2025"
    )
    long = services.hit_notice(question="why " * 100, asked_at=asked)
    assert "…”" in long and len(long) < 200


def test_a_hit_becomes_a_new_answer_and_stats_count_its_savings(
    assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    source = make_answer(assistant, owner, [expenses])
    services.cache_store(answer=source)
    hit = lookup(member, assistant)
    assert hit is not None
    assert lookup(member, assistant, "Something unrelated entirely") is None

    served = Answer.objects.create(user=member, question=QUESTION, **hit.answer_fields())

    assert served.cache_hit and served.cached_from == source and served.text == source.text
    assert served.citations == source.citations and served.prompt_tokens == 0
    assert services.cache_store(answer=served) is None  # a hit is never cached itself
    stats = selectors.cache_stats()
    assert (stats.lookups, stats.hits, stats.exact_hits, stats.semantic_hits) == (2, 1, 1, 0)
    assert stats.hit_rate == 0.5
    assert (stats.saved_prompt_tokens, stats.saved_completion_tokens) == (900, 60)
    assert stats.saved_cost_usd == Decimal("0.002")
    assert 2400 < stats.saved_ms < 2500 and stats.entries == 1
    assert stats.as_dict()["saved_cost_usd"] == "0.002000"

    later = selectors.cache_stats(since=timezone.now() + dt.timedelta(days=2))
    assert (later.lookups, later.hits, later.hit_rate, later.saved_ms) == (0, 0, None, 0.0)
    assert CacheCounter.objects.get().lookups == 2


@pytest.mark.django_db(transaction=True)
def test_a_lookup_counted_in_its_own_transaction_commits_without_waiting_for_the_disk() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assistant = assistant_services.assistant_default()
    with CaptureQueriesContext(connection) as queries:
        found = services.cache_lookup(
            user=factories.user(), assistant=assistant, question="When is it due?", history=[], readable=[]
        )

    assert found is None
    assert CacheCounter.objects.get(assistant=assistant).lookups == 1  # committed
    assert any("synchronous_commit TO OFF" in q["sql"] for q in queries.captured_queries)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_a_miss_reads_no_entry_and_a_hit_comes_with_its_answer(
    settings: Any, assistant: Assistant, owner: Any, member: Any, expenses: Document
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    services.cache_store(answer=make_answer(assistant, owner, [expenses]))
    settings.ANSWER_CACHE_SIMILARITY, settings.ANSWER_CACHE_SIMILARITY_FLOOR = 0.99, 0.99

    with CaptureQueriesContext(connection) as queries:
        assert lookup(member, assistant, "Who approves the expense reports for travel abroad?") is None
    # The exact key and the nearest candidates are read light; no entry is loaded with its answer.
    assert not any('"assistant_answer"' in q["sql"] and "JOIN" in q["sql"] for q in queries.captured_queries)

    hit = lookup(member, assistant)
    assert hit is not None and hit.kind == "exact" and hit.answer.prompt_id == assistant.prompt_id
    with CaptureQueriesContext(connection) as queries:
        assert hit.entry.answer.assistant.pk == assistant.pk and hit.answer.prompt.name
    assert queries.captured_queries == []  # loaded with the hit

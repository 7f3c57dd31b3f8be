"""The answer pipeline, branch by branch, against the fake model."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from assistant import pipeline
from assistant.models import Assistant
from assistant.prompts import ANSWER_SCHEMA, AnswerPayload
from gateway import provider
from knowledge.models import Collection, Document
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

DEADLINES = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""
TRAVEL = """# Travel policy

## Flights

Book flights through the travel desk at least two weeks ahead.
Economy class is the rule for flights under six hours.
"""
QUESTION = "When are expense reports due?"
GOOD_ANSWER = "Expense reports are due on the 5th of each month [1]."
# Shares no word with the documents, so the fake embeddings give it a similarity of about 0.
OFF_TOPIC = "Quantum chromodynamics gluon confinement"


def reply(
    answer: str = GOOD_ANSWER,
    citations: list[int] | None = None,
    *,
    confidence: float = 0.9,
    not_found: bool = False,
    follow_ups: list[str] | None = None,
) -> str:
    return json.dumps(
        {
            "answer": answer,
            "citations": [1] if citations is None else citations,
            "confidence": confidence,
            "not_found": not_found,
            "follow_ups": follow_ups or [],
        }
    )


def tool_request(name: str, arguments: dict[str, Any], call_id: str = "c1") -> provider.ChatResult:
    return provider.ChatResult(
        content="",
        model="fake-model",
        usage=provider.Usage(prompt_tokens=50, completion_tokens=5),
        latency_ms=1.0,
        tool_calls=(provider.ToolCall(id=call_id, name=name, arguments=json.dumps(arguments)),),
    )


def events_for(**kwargs: Any) -> list[pipeline.Event]:
    return list(pipeline.answer_events(**kwargs))


def user_prompt(call: dict[str, Any]) -> str:
    return str(call["messages"][-1]["content"])


@pytest.fixture
def policies(db: None) -> Collection:
    return factories.collection(name="Policies", public=True)


@pytest.fixture
def deadlines(policies: Collection) -> Document:
    return factories.document(collection=policies, text=DEADLINES, filename="expense-policy.md")


@pytest.fixture
def travel(policies: Collection) -> Document:
    return factories.document(collection=policies, text=TRAVEL, filename="travel-policy.md")


# --- the happy path ------------------------------------------------------------------------


def test_valid_answer_is_cited_grounded_streamed_and_recorded(
    assistant: Assistant, deadlines: Document, travel: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply()]

    events = events_for(assistant=assistant, user=member, question=QUESTION)

    stages = [e.name for e in events if isinstance(e, pipeline.Stage)]
    assert stages == ["retrieving", "thinking", "checking"]
    assert isinstance(events[-1], pipeline.Done)
    answer = events[-1].answer
    assert answer.pk is None  # the caller saves it
    assert "".join(e.text for e in events if isinstance(e, pipeline.Delta)) == answer.text == GOOD_ANSWER

    assert answer.retrieved[0]["document_id"] == deadlines.pk
    chunk = deadlines.chunks.get()
    assert answer.citations == [
        {
            "n": 1,
            "chunk_id": chunk.pk,
            "document_id": deadlines.pk,
            "title": deadlines.title,
            "filename": "expense-policy.md",
            "page": None,
            "heading": chunk.heading,
            # The sentence that supports the claim, not the whole chunk.
            "quote": "Expense reports are due on the 5th of each month.",
            "quarantined": False,
        }
    ]
    assert chunk.text.startswith("Expense reports are due") and chunk.text != answer.citations[0]["quote"]
    assert answer.grounded is True
    assert answer.grounding["grounded"] is True and answer.grounding["score"] == 1.0
    assert not answer.flagged and not answer.abstained and not answer.fallback and not answer.repaired
    assert answer.confidence == 0.9

    assert answer.model == assistant.chat_model
    assert answer.prompt == assistant.prompt and answer.prompt.version == 1
    assert (answer.seed, answer.temperature, answer.top_p, answer.max_tokens) == (42, 0.0, 1.0, 400)
    assert answer.system_fingerprint == "fp_fake"
    assert answer.prompt_tokens == 100 and answer.completion_tokens == len(reply().split())
    assert {"retrieval", "model", "total"} <= set(answer.latency_ms)
    assert answer.raw_output == reply()
    assert answer.user == member and answer.question == QUESTION

    [call] = fake_provider.calls
    assert call["json_schema"] == ANSWER_SCHEMA
    assert call["params"] == provider.ChatParams(
        model=assistant.chat_model, temperature=0.0, top_p=1.0, seed=42, max_tokens=400
    )
    assert "[1] (Expense policy, Expense policy › Deadlines)" in user_prompt(call)
    assert "Question: When are expense reports due?" in user_prompt(call)
    assert assistant.name in call["messages"][0]["content"]

    answer.save()  # the unsaved Answer is complete enough to store


def test_run_to_answer_returns_the_answer(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply()]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.text == GOOD_ANSWER and answer.grounded


def test_inline_marks_count_as_citations(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply(citations=[])]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert [c["n"] for c in answer.citations] == [1]
    assert answer.grounded is True


def test_a_provider_error_in_the_final_call_propagates(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [provider.ProviderError("down", kind=provider.ErrorKind.UNAVAILABLE)]
    with pytest.raises(provider.ProviderError):
        pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)


# --- repair and fallback -------------------------------------------------------------------


def test_invalid_json_is_repaired_once(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = ["The reports are due on the fifth.", reply()]

    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)

    assert answer.repaired is True and not answer.fallback
    assert answer.text == GOOD_ANSWER and answer.grounded
    first, repair = fake_provider.calls
    assert repair["json_schema"] == ANSWER_SCHEMA
    assert repair["messages"][-2] == {"role": "assistant", "content": "The reports are due on the fifth."}
    assert "could not be used: it was not valid JSON" in user_prompt(repair)
    assert answer.raw_output == reply()
    assert answer.prompt_tokens == 200  # both calls are counted
    assert "repair" in answer.latency_ms


def test_unusable_output_with_strong_evidence_shows_the_evidence_quoted(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.9)
    fake_provider.replies = ["not json", '{"answer": 3}']

    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)

    assert len(fake_provider.calls) == 2 and answer.repaired is True
    assert answer.answer_source == "evidence" and answer.fallback is True
    assert answer.text.startswith("Expense reports are due on the 5th of each month. [1]")
    assert answer.grounded is True and not answer.flagged and not answer.abstained
    assert answer.grounding["method"] == "evidence"
    assert answer.grounding["model"]["problem"] == pipeline.MODEL_UNUSABLE
    assert answer.confidence == 0.9 and answer.evidence_strength == 0.9 and answer.state == "grounded"
    # The quoted sentence is its citation's quote, so the source panel marks it.
    assert answer.citations[0]["quote"].startswith(answer.evidence[0]["text"])
    assert answer.citations[0]["document_id"] == deadlines.pk


def test_medium_evidence_is_quoted_with_a_low_confidence_warning(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.5)
    fake_provider.replies = ["not json", '{"answer": 3}']
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "evidence" and answer.grounding["level"] == "medium"
    assert answer.state == "uncertain" and answer.low_confidence


def test_a_grounded_answer_where_the_evidence_is_weak_is_shown_with_a_warning(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.2)
    fake_provider.replies = [reply()]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "model" and answer.grounded and answer.text == GOOD_ANSWER
    assert answer.confidence == 0.2 and answer.state == "uncertain"


def test_unusable_output_with_weak_evidence_abstains_with_related_passages(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.1)
    fake_provider.replies = ["not json", provider.ProviderError("slow", kind=provider.ErrorKind.TIMEOUT)]

    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)

    assert answer.answer_source == "none" and answer.abstained and answer.text == pipeline.NOT_FOUND_TEXT
    assert answer.fallback is True and not answer.flagged
    assert answer.evidence and answer.evidence[0]["text"].startswith("Expense reports are due")
    assert answer.abstain_reason == pipeline.EVIDENCE_WEAK_REASON


def test_with_evidence_answers_off_unusable_output_falls_back_and_flags(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    assistant.evidence_answers = False
    fake_provider.replies = ["not json", '{"answer": 3}']

    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)

    assert answer.text == pipeline.FALLBACK_TEXT and answer.answer_source == "none"
    assert answer.fallback is True and answer.flagged is True and answer.grounded is False
    assert answer.repaired is True and answer.confidence == 0.0
    assert answer.citations[0]["document_id"] == deadlines.pk  # the sources stay open to the reader
    assert answer.state == "ungrounded"
    assert answer.evidence  # still found and shown beside it


@pytest.mark.parametrize(
    "first",
    [
        reply("Due on the 5th [1].", citations=[7]),
        reply("Due on the 5th [7].", citations=[1]),  # a mark in the text is a citation too
        reply("Due on the 5th [0].", citations=[0]),
    ],
    ids=["listed", "inline", "zero"],
)
def test_citing_an_unknown_source_number_is_repaired(
    first: str, assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [first, reply()]

    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)

    assert len(fake_provider.calls) == 2 and answer.repaired is True
    assert "but only sources 1 to 1 exist" in user_prompt(fake_provider.calls[1])
    assert [c["n"] for c in answer.citations] == [1]


def test_parse_payload_accepts_a_fenced_object() -> None:
    payload, problem = pipeline.parse_payload(f"```json\n{reply()}\n```", 1)
    assert payload is not None and payload.answer == GOOD_ANSWER and problem == ""


# --- abstaining ----------------------------------------------------------------------------


def test_weak_retrieval_abstains_without_a_model_call(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    events = events_for(assistant=assistant, user=member, question=OFF_TOPIC)

    assert fake_provider.calls == []
    answer = events[-1].answer  # type: ignore[union-attr]
    assert answer.abstained is True and answer.text == pipeline.NOT_FOUND_TEXT
    # Far from the assistant's scope as well: the reason says it is off topic.
    assert answer.abstain_reason == pipeline.OFF_TOPIC_REASON
    assert "off_topic" in answer.guardrails["categories"]
    assert [e.text for e in events if isinstance(e, pipeline.Delta)] == [pipeline.NOT_FOUND_TEXT]
    assert answer.retrieved  # what was found, and how weakly, stays in the trace
    assert answer.retrieved[0]["vector_score"] < assistant.min_similarity
    assert answer.prompt_tokens == 0 and answer.confidence == 0.0 and answer.state == "abstained"

    assistant.guardrails = {"topic": False}
    unscoped = pipeline.run_to_answer(assistant=assistant, user=member, question=OFF_TOPIC)
    assert unscoped.abstain_reason == pipeline.WEAK_RETRIEVAL_REASON and fake_provider.calls == []


def test_nothing_readable_abstains_without_a_model_call(
    assistant: Assistant, member: Any, fake_provider: FakeProvider
) -> None:
    secret = factories.collection(name="Secret")
    factories.document(collection=secret, text=DEADLINES)
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.abstained and answer.retrieved == [] and fake_provider.calls == []


def test_retrieval_is_weak_below_the_threshold(assistant: Assistant) -> None:
    turn = pipeline.Turn(
        assistant=assistant, user=None, question="q", history=[], config=pipeline.Settings.of(assistant)
    )
    assert pipeline.retrieval_is_weak(turn)  # no sources
    source = pipeline.Source(1, 1, 1, "T", "t.md", None, "", "text", vector_score=0.19)
    turn.sources = [source, pipeline.Source(2, 2, 1, "T", "t.md", None, "", "text", keyword_score=0.5)]
    assert pipeline.retrieval_is_weak(turn)
    source.vector_score = 0.2
    assert not pipeline.retrieval_is_weak(turn)


def test_the_model_saying_not_found_abstains_when_the_evidence_is_weak(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.1)
    follow_up = "When are the receipts submitted?"
    fake_provider.replies = [
        reply("The sources do not say.", citations=[], not_found=True, follow_ups=[follow_up])
    ]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.abstained is True and answer.text == pipeline.NOT_FOUND_TEXT
    assert answer.model_text == "The sources do not say."  # behind a disclosure
    assert answer.abstain_reason == pipeline.MODEL_ABSTAINED
    assert answer.grounded is None and not answer.flagged
    assert answer.suggestions == [follow_up]  # its terms are in the sources


def test_the_model_saying_not_found_gives_way_to_strong_evidence(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.95)
    fake_provider.replies = [reply("The sources do not say.", citations=[], not_found=True)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "evidence" and not answer.abstained
    assert "due on the 5th of each month" in answer.text
    assert answer.model_text == "The sources do not say."
    assert answer.grounding["model"]["problem"] == pipeline.MODEL_ABSTAINED


def test_model_follow_ups_that_the_sources_cannot_answer_give_way_to_the_sources_own(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    nonsense = ["this answer has been deleted from the Debian repository?", "Who wrote the moon landing?"]
    fake_provider.replies = [reply(follow_ups=nonsense)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "model"
    assert answer.suggestions and not set(answer.suggestions) & {f"{s.rstrip('?')}?" for s in nonsense}
    assert all("Expense policy" in s for s in answer.suggestions)  # drawn from what was retrieved


@pytest.mark.parametrize("text", ["   ", ",, ", " . [1]"])
def test_an_answer_without_words_abstains(
    text: str,
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.1)
    fake_provider.replies = [reply(text)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.abstained is True and answer.text == pipeline.NOT_FOUND_TEXT
    assert answer.grounded is None and answer.state == "abstained"


# --- tools ---------------------------------------------------------------------------------


@pytest.fixture
def tool_assistant(assistant: Assistant) -> Assistant:
    assistant.tools_enabled = True
    assistant.top_k = 1  # so that a tool search has something new to add
    assistant.save(update_fields=["tools_enabled", "top_k"])
    return assistant


def test_a_tool_search_adds_sources_and_is_recorded(
    tool_assistant: Assistant, deadlines: Document, travel: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        tool_request("search_knowledge", {"query": "book flights travel desk"}),
        "I have what I need.",
        reply("Book flights through the travel desk at least two weeks ahead [2].", citations=[2]),
    ]

    events = events_for(assistant=tool_assistant, user=member, question=QUESTION)

    answer = events[-1].answer  # type: ignore[union-attr]
    assert "searching" in [e.name for e in events if isinstance(e, pipeline.Stage)]
    assert [(r["document_id"], r["via_tool"]) for r in answer.retrieved] == [
        (deadlines.pk, False),
        (travel.pk, True),
    ]
    [call] = answer.tool_calls
    assert call["name"] == "search_knowledge"
    assert call["arguments"] == {"query": "book flights travel desk"}
    assert "[2] (Travel policy" in call["result"] and call["latency_ms"] >= 0
    assert answer.citations[0]["document_id"] == travel.pk and answer.grounded is True

    first, second, final = fake_provider.calls
    assert first["tools"] == pipeline.TOOLS and "json_schema" not in first
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": call["result"]}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "search_knowledge"
    assert "[2] (Travel policy" in user_prompt(final) and final["json_schema"] == ANSWER_SCHEMA
    assert answer.prompt_tokens == 50 + 100 + 100 and "tools" in answer.latency_ms


def test_tool_rounds_are_bounded(
    tool_assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        *(tool_request("search_knowledge", {"query": "expense"}) for _ in range(pipeline.MAX_TOOL_ROUNDS)),
        reply(),
    ]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    assert len(fake_provider.calls) == pipeline.MAX_TOOL_ROUNDS + 1
    assert len(answer.tool_calls) == pipeline.MAX_TOOL_ROUNDS
    assert answer.tool_calls[0]["result"] == "No further passages found."  # already a source
    assert answer.text == GOOD_ANSWER


def test_the_document_info_tool_reports_metadata(
    tool_assistant: Assistant, deadlines: Document, travel: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        tool_request("document_info", {"title": "travel"}),
        tool_request("no_such_tool", {}),
        reply(),
    ]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    info, unknown = answer.tool_calls
    [document] = json.loads(info["result"])
    assert document["title"] == "Travel policy" and document["collection"] == "Policies"
    assert unknown["result"] == "Unknown tool 'no_such_tool'."
    assert len(answer.retrieved) == 1


def test_a_rejected_tools_call_degrades_and_still_answers(
    tool_assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        provider.ProviderError("tools are not supported", kind=provider.ErrorKind.BAD_REQUEST),
        reply(),
    ]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    assert answer.tool_calls == [
        {"error": "tools are not supported", "kind": "bad_request", "degraded": True}
    ]
    assert answer.text == GOOD_ANSWER and answer.grounded is True
    assert len(fake_provider.calls) == 2


def test_a_model_without_tool_support_answering_in_text_still_answers(
    tool_assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = ["Reports are due on the 5th.", reply()]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    assert answer.tool_calls == [] and answer.text == GOOD_ANSWER and answer.grounded is True
    assert len(fake_provider.calls) == 2


def test_a_tool_search_stays_inside_the_assistants_collections(
    tool_assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    tool_assistant.collections.add(deadlines.collection)
    cafeteria = factories.collection(name="Cafeteria", public=True)
    factories.document(collection=cafeteria, text="Lunch is served from noon, with soup on Mondays.")
    fake_provider.replies = [
        tool_request("search_knowledge", {"query": "lunch soup", "collection": "Cafeteria"}, "a"),
        tool_request("search_knowledge", {"query": "lunch soup"}, "b"),
        reply(),
    ]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    assert [c["result"] for c in answer.tool_calls] == ["No further passages found."] * 2
    assert {r["document_id"] for r in answer.retrieved} == {deadlines.pk}


# --- grounding, permissions, input ---------------------------------------------------------


UNSUPPORTED = "Expense claims are reimbursed in bitcoin within 90 days [1]."


def test_an_ungrounded_answer_gives_way_to_strong_evidence_and_is_kept_behind_it(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.8)
    fake_provider.replies = [reply(UNSUPPORTED)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "evidence" and answer.grounded is True and not answer.flagged
    assert answer.model_text == UNSUPPORTED
    [claim] = answer.grounding["model"]["claims"]
    assert claim["supported"] is False and {"bitcoin", "90"} <= set(claim["missing"])
    assert answer.grounding["model"]["problem"] == pipeline.MODEL_UNSUPPORTED


def test_an_ungrounded_answer_with_weak_evidence_abstains(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.05)
    fake_provider.replies = [reply(UNSUPPORTED)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "none" and answer.abstained and answer.text == pipeline.NOT_FOUND_TEXT
    assert answer.grounded is False and answer.model_text == UNSUPPORTED and not answer.flagged
    assert answer.evidence  # shown as related passages


def test_with_evidence_answers_off_an_ungrounded_answer_is_shown_and_flagged(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    assistant.evidence_answers = False
    fake_provider.replies = [reply(UNSUPPORTED)]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.grounded is False and answer.flagged is True and not answer.abstained
    assert answer.text == UNSUPPORTED and answer.answer_source == "model"
    [claim] = answer.grounding["claims"]
    assert claim["supported"] is False and {"bitcoin", "90"} <= set(claim["missing"])
    assert answer.state == "ungrounded"


def test_an_answer_citing_nothing_is_not_the_models_to_show(
    assistant: Assistant,
    deadlines: Document,
    member: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.1)
    fake_provider.replies = [reply("Expense reports are due on the 5th of each month.", citations=[])]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.answer_source == "none" and answer.grounded is False


SALARIES = (
    "# Salaries\n\nExpense reports of directors are due on the 1st. Salary bands are reviewed in March.\n"
)


@pytest.fixture
def salaries(owner: Any) -> Document:
    secret = factories.collection(name="Board", readers=[owner])
    return factories.document(collection=secret, text=SALARIES, filename="salaries.md")


def test_a_user_never_gets_chunks_of_a_collection_they_cannot_read(
    assistant: Assistant,
    deadlines: Document,
    salaries: Document,
    member: Any,
    owner: Any,
    fake_provider: FakeProvider,
) -> None:
    fake_provider.replies = [reply(), reply()]

    as_member = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    as_owner = pipeline.run_to_answer(assistant=assistant, user=owner, question=QUESTION)

    assert salaries.pk not in {r["document_id"] for r in as_member.retrieved}
    assert "Salary" not in user_prompt(fake_provider.calls[0])
    # The same question does reach the chunk for someone who may read it.
    assert salaries.pk in {r["document_id"] for r in as_owner.retrieved}
    assert "Salary" in user_prompt(fake_provider.calls[1])


def test_a_tool_search_respects_permissions(
    tool_assistant: Assistant,
    deadlines: Document,
    salaries: Document,
    member: Any,
    fake_provider: FakeProvider,
) -> None:
    fake_provider.replies = [
        tool_request("search_knowledge", {"query": "salary bands directors", "collection": "Board"}, "a"),
        tool_request("search_knowledge", {"query": "salary bands directors"}, "b"),
        tool_request("document_info", {"title": "salaries"}, "c"),
        reply(),
    ]
    answer = pipeline.run_to_answer(assistant=tool_assistant, user=member, question=QUESTION)
    assert salaries.pk not in {r["document_id"] for r in answer.retrieved}
    assert all("Salary" not in c["result"] for c in answer.tool_calls)


def test_replaying_pinned_chunks_drops_those_the_user_cannot_read(
    assistant: Assistant, deadlines: Document, salaries: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply()]
    pinned = [deadlines.chunks.get().pk, salaries.chunks.get().pk]
    answer = pipeline.run_to_answer(
        assistant=assistant, user=member, question=QUESTION, pinned_chunk_ids=pinned
    )
    assert [r["chunk_id"] for r in answer.retrieved] == pinned[:1]
    assert answer.retrieved[0]["vector_score"] >= assistant.min_similarity  # scored, so not "weak"
    assert answer.text == GOOD_ANSWER


@pytest.mark.parametrize("question", ["", "   \n ", "x" * (pipeline.MAX_QUESTION_CHARS + 1)])
def test_empty_or_oversized_questions_are_rejected_before_any_work(
    question: str, assistant: Assistant, member: Any, fake_provider: FakeProvider
) -> None:
    with pytest.raises(pipeline.QuestionRejected):
        next(pipeline.answer_events(assistant=assistant, user=member, question=question))
    assert fake_provider.calls == [] and fake_provider.embedded == []


def test_question_limits() -> None:
    assert pipeline.validate_question("  a question?  ") == "a question?"
    assert pipeline.validate_question("x" * pipeline.MAX_QUESTION_CHARS)
    with pytest.raises(pipeline.QuestionRejected, match="4,001 characters; the limit is 4,000"):
        pipeline.validate_question("x" * 4001)


# --- history, rewrites, suggestions --------------------------------------------------------


def test_a_short_follow_up_is_searched_with_the_previous_question(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply("Submit them in the finance portal with the receipts attached [1].")]
    history = [(QUESTION, "On the 5th of each month.")]

    answer = pipeline.run_to_answer(
        assistant=assistant, user=member, question="and receipts?", history=history
    )

    assert "When are expense reports due? and receipts?" in fake_provider.embedded
    assert "Earlier question: When are expense reports due?" in user_prompt(fake_provider.calls[0])
    assert "Question: and receipts?" in user_prompt(fake_provider.calls[0])
    assert answer.grounded is True


def test_retrieval_query() -> None:
    history = [("What is the expense deadline?", "The 5th.")]
    assert pipeline.retrieval_query("and receipts?", history) == "What is the expense deadline? and receipts?"
    assert pipeline.retrieval_query("and receipts?", []) == "and receipts?"
    long = "Which finance portal page takes receipts for travel expenses?"
    assert pipeline.retrieval_query(long, history) == long


def test_a_vague_question_gets_a_more_specific_rewrite(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply()]
    history = [(QUESTION, "On the 5th.")]

    answered = pipeline.run_to_answer(
        assistant=assistant, user=member, question="Tell me more", history=history
    )
    weak = pipeline.run_to_answer(assistant=assistant, user=member, question="Tell me more")

    assert answered.rewrite == "What does “Expense policy” say about deadlines?"
    assert weak.abstained and weak.rewrite == answered.rewrite
    assert len(fake_provider.calls) == 1


@pytest.mark.parametrize(
    ("question", "vague"),
    [
        ("Tell me more", True),
        ("why?", True),
        ("and pricing?", True),
        ("Explain this", True),
        ("Expense deadline?", False),
        (QUESTION, False),
    ],
)
def test_which_questions_count_as_vague(question: str, vague: bool) -> None:
    source = pipeline.Source(1, 1, 1, "Expense policy", "e.md", None, "Expense policy › Deadlines", "text")
    assert bool(pipeline.vague_rewrite(question, [source])) is vague
    assert pipeline.vague_rewrite(question, []) == ""


def test_follow_ups_are_cleaned(
    assistant: Assistant, deadlines: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [
        reply(
            follow_ups=[
                "How are receipts   submitted",
                "how are receipts submitted?",
                "Why?",
                "when are expense reports due",
                "Where is the finance portal?",
                "Who approves expense reports?",
                "What happens to late reports?",
            ]
        )
    ]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.suggestions == [
        "How are receipts submitted?",
        "Where is the finance portal?",
        "Who approves expense reports?",
    ]


def test_without_follow_ups_suggestions_come_from_source_headings(
    assistant: Assistant, deadlines: Document, travel: Document, member: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies = [reply()]
    answer = pipeline.run_to_answer(assistant=assistant, user=member, question=QUESTION)
    assert answer.suggestions == [
        "What does Expense policy say about Deadlines?",
        "What does Travel policy say about Flights?",
    ]
    untitled = pipeline.Source(1, 1, 1, "Handbook", "h.md", None, "", "text")
    assert pipeline.suggestions_from_sources([untitled], "q") == ["What are the key points of Handbook?"]


# --- the streamed answer field -------------------------------------------------------------

STREAMED = [
    "Line one\nLine two",
    'She said "yes" and left',
    "Café au lait, naïve",
    "Back\\slash, tab\tand slash /",
    "Emoji 😀 and 中文",
    "",
]


def _feed_all(parts: list[str]) -> str:
    stream = pipeline.AnswerFieldStream()
    return "".join(stream.feed(part) for part in parts)


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw"])
@pytest.mark.parametrize("text", STREAMED)
def test_the_answer_field_survives_every_split(text: str, ascii_only: bool) -> None:
    raw = json.dumps(
        {"answer": text, "citations": [1], "follow_ups": ['"answer": "leak"']}, ensure_ascii=ascii_only
    )
    assert _feed_all(list(raw)) == text  # one character at a time
    for i, j in itertools.combinations(range(len(raw) + 1), 2):
        assert _feed_all([raw[:i], raw[i:j], raw[j:]]) == text, (i, j)


def test_the_answer_field_handles_every_json_escape() -> None:
    raw = r'{ "answer" : "a\nb\"c\u00e9d\\e\/f\tg\rh\bi\fj\ud83d\ude00k" , "citations": []}'
    expected = json.loads(raw)["answer"]
    for i in range(len(raw) + 1):
        assert _feed_all([raw[:i], raw[i:]]) == expected, i


def test_the_answer_field_may_come_after_other_keys() -> None:
    assert _feed_all(['{"citations": [1], "ans', 'wer": "ok"}']) == "ok"


def test_broken_unicode_escapes_do_not_break_the_stream() -> None:
    # A lone surrogate half cannot be sent to a browser; a malformed escape is dropped.
    assert _feed_all([r'{"answer": "a\ud83d b\ude00 c\uZZZZd"}']) == "a\ufffd b\ufffd cd"
    assert _feed_all([r'{"answer": "a\ud83d', r'"}']) == "a\ufffd"


# --- payload details -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"), [(0.85, 0.85), (85, 0.85), (100, 1.0), (250, 1.0), (-0.3, 0.0)]
)
def test_confidence_is_clamped_onto_zero_to_one(written: float, stored: float) -> None:
    payload = AnswerPayload.model_validate_json(json.dumps({"answer": "a", "confidence": written}))
    assert payload.confidence == pytest.approx(stored)


def test_a_nan_confidence_counts_as_zero() -> None:
    assert AnswerPayload.model_validate_json('{"answer": "a", "confidence": NaN}').confidence == 0.0


def test_a_prompt_with_stray_braces_still_fills_in() -> None:
    assert pipeline.fill_template("Q: {question} {unknown}", question="why?") == "Q: why? {unknown}"
    template = 'Reply like {"answer": "..."} to: {question}'
    assert pipeline.fill_template(template, question="why?") == 'Reply like {"answer": "..."} to: why?'
    assert pipeline.fill_template("{{literal}} {question}", question="q") == "{literal} q"

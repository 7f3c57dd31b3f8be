"""`manage.py ask`: one answer from the shell, as text or as one JSON object."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from assistant import pipeline, services
from assistant.models import Answer
from gateway import provider
from knowledge.models import Collection
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

EXPENSES = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the receipts.
"""
QUESTION = "When are expense reports due each month?"
ANSWER = "Expense reports are due on the 5th of each month [1]."
REQUIRED = {
    "answer",
    "citations",
    "abstained",
    "confidence",
    "grounded",
    "cache_hit",
    "model",
    "seed",
    "system_fingerprint",
    "usage",
    "cost_usd",
    "latency_ms",
    "guardrails",
    "suggestions",
}


def reply(answer: str = ANSWER) -> str:
    return json.dumps(
        {
            "answer": answer,
            "citations": [1],
            "confidence": 0.9,
            "not_found": False,
            "follow_ups": ["Where do I submit expense reports?"],
        }
    )


@pytest.fixture
def policy(admin_user: Any) -> Collection:
    collection = factories.collection(name="Policies", public=True)
    factories.document(collection=collection, text=EXPENSES, filename="expenses.md")
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0
    assistant.save()
    return collection


def ask(*args: str) -> str:
    out = StringIO()
    call_command("ask", *args, stdout=out)
    return out.getvalue()


def test_json_has_every_field(policy: Collection, fake_provider: FakeProvider, admin_user: Any) -> None:
    fake_provider.replies.append(reply())

    record = json.loads(ask(QUESTION, "--json"))

    assert set(record) >= REQUIRED
    answer = Answer.objects.get(pk=record["answer_id"])
    assert record["answer"] == ANSWER == answer.text
    [citation] = record["citations"]
    assert {"chunk_id", "document_id", "filename", "quote"} <= set(citation)
    assert citation["filename"] == "expenses.md"
    assert citation["chunk_id"] == answer.citations[0]["chunk_id"]
    assert record["abstained"] is False
    assert record["grounded"] is True
    assert record["confidence"] == 0.9
    assert record["model"] == answer.model
    assert record["seed"] == services.assistant_default().seed
    assert record["system_fingerprint"] == "fp_fake"
    assert record["usage"] == {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
    }
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] == answer.latency_ms["total"]
    assert record["suggestions"] == ["Where do I submit expense reports?"]
    # Filled in by later features; present already so scripts need not change.
    assert record["cost_usd"] == 0.0  # the local model is priced at zero; its tokens are still counted
    assert record["cache_hit"] is None
    # Every guardrail verdict, with its score and latency.
    assert {v["check"] for v in record["guardrails"]["input"]} >= {"normalize", "pii", "injection", "harm"}
    assert (
        record["guardrails"]["input_action"] == "allow" and record["guardrails"]["output_action"] == "allow"
    )
    assert all({"score", "latency_ms", "action"} <= set(v) for v in record["guardrails"]["output"])
    assert answer.user == admin_user  # the first superuser, by default


def test_abstains_when_nothing_matches(admin_user: Any, fake_provider: FakeProvider) -> None:
    record = json.loads(ask("Quantum chromodynamics gluon confinement", "--json"))

    assert record["abstained"] is True
    assert record["answer"] == pipeline.NOT_FOUND_TEXT
    assert record["citations"] == []
    assert record["system_fingerprint"] is None
    assert record["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert fake_provider.calls == []


def test_text_output_numbers_the_sources(policy: Collection, fake_provider: FakeProvider) -> None:
    fake_provider.replies.append(reply())

    out = ask("When", "are", "expense", "reports", "due?")

    assert out.startswith(ANSWER)
    assert "[1] Expense policy (expenses.md, Expense policy › Deadlines)" in out
    assert "“Expense reports are due on the 5th" in out
    assert "Where do I submit expense reports?" in out
    assert "grounded · confidence 0.90" in out


def test_user_option_uses_their_permissions(
    policy: Collection, outsider: Any, member: Any, fake_provider: FakeProvider
) -> None:
    board = factories.collection(name="Board", readers=[member])
    factories.document(
        collection=board, text="Expense reports for Globex are due on the 1st.", filename="b.md"
    )
    fake_provider.replies += [reply(), reply()]

    outsiders = json.loads(ask(QUESTION, "--user", "outsider", "--json"))
    members = json.loads(ask(QUESTION, "--user", "member", "--json"))

    board_document = board.documents.get().pk
    assert board_document not in {
        r["document_id"] for r in Answer.objects.get(pk=outsiders["answer_id"]).retrieved
    }
    assert board_document in {r["document_id"] for r in Answer.objects.get(pk=members["answer_id"]).retrieved}


def test_provider_error_is_a_command_error(policy: Collection, fake_provider: FakeProvider) -> None:
    fake_provider.replies.append(
        provider.ProviderError(
            "The chat model server cannot be reached.", kind=provider.ErrorKind.UNAVAILABLE
        )
    )

    with pytest.raises(CommandError, match="The chat model server cannot be reached"):
        ask(QUESTION, "--json")

    assert not Answer.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([QUESTION, "--user", "nobody"], "No user named 'nobody'"),
        ([QUESTION, "--assistant", "Nope"], "No assistant named 'Nope'"),
        (["why " * 1500], "the limit is 4,000"),
    ],
)
def test_bad_options_are_command_errors(admin_user: Any, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        ask(*args)


def test_without_a_superuser_says_what_to_do(member: Any) -> None:
    with pytest.raises(CommandError, match="--user"):
        ask(QUESTION)


def test_assistant_by_name_or_model_id(policy: Collection, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), reply()]

    by_name = json.loads(ask(QUESTION, "--assistant", "Groundwork", "--json"))
    by_id = json.loads(ask(QUESTION, "--assistant", "groundwork", "--json"))

    assert by_name["assistant"] == by_id["assistant"] == "Groundwork"

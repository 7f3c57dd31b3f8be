"""export_finetune: which answers qualify, the chat-format JSONL, the split, and --start without a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from assistant import services as assistant_services
from assistant.models import Answer, Assistant, Feedback, Flag, Message
from knowledge.models import Chunk
from review import services as review_services
from routing import distill
from routing.management.commands.export_finetune import validation_path
from tests import factories
from tests.routing.conftest import GOOD, QUESTION, make_answer

pytestmark = pytest.mark.django_db


def rate(answer: Answer, *ratings: int) -> Answer:
    for rating in ratings:
        Feedback.objects.create(answer=answer, user=factories.user(), rating=rating)
    return answer


def export(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    out = tmp_path / "data.jsonl"
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

    call_command("export_finetune", "--out", str(out), *args, stdout=Out())
    train = [json.loads(line) for line in out.read_text().splitlines()]
    held = [json.loads(line) for line in validation_path(out).read_text().splitlines()]
    return train, held, "".join(lines)


def questions(rows: list[dict[str, Any]]) -> list[str]:
    return [row["messages"][1]["content"].rsplit("\n", 3)[-1] for row in rows]


def test_rated_up_grounded_strong_answers_are_exported_as_chat_examples(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    rate(make_answer(assistant, member, chunk), 1)
    for excluded in [
        make_answer(assistant, member, chunk, grounded=False),
        make_answer(assistant, member, chunk, grounded=None),
        make_answer(assistant, member, chunk, flagged=True),
        make_answer(assistant, member, chunk, abstained=True),
        make_answer(assistant, member, chunk, fallback=True),
        make_answer(assistant, member, chunk, cache_hit=True),
        make_answer(assistant, member, chunk, route={"route": "cheap", "model": "small"}),
        make_answer(assistant, member, chunk, route={}),
    ]:
        rate(excluded, 1)
    make_answer(assistant, member, chunk)  # unrated
    rate(make_answer(assistant, member, chunk), 1, -1)  # net zero
    rate(make_answer(assistant, member, chunk), -1)  # rated down

    train, held, summary = export(tmp_path, "--validation-fraction", "0")

    assert held == [] and len(train) == 1
    roles = [m["role"] for m in train[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    system, user, target = (m["content"] for m in train[0]["messages"])
    assert assistant.name in system
    assert QUESTION in user and chunk.text in user and "[1] (" in user
    payload = json.loads(target)
    assert payload["answer"] == GOOD and payload["citations"] == [1] and payload["not_found"] is False
    assert summary.startswith("Exported 1 examples (1 train")
    assert "1 rated up" in summary


def test_the_split_is_deterministic_and_disjoint(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    for _ in range(12):
        rate(make_answer(assistant, member, chunk), 1)

    train, held, summary = export(tmp_path, "--validation-fraction", "0.3")
    again_train, again_held, _ = export(tmp_path, "--validation-fraction", "0.3")

    assert len(train) + len(held) == 12 and held and train
    assert (train, held) == (again_train, again_held)
    split = distill.finetune_export(validation_fraction=0.3)
    train_ids = {e.answer_id for e in split.train}
    held_ids = {e.answer_id for e in split.validation}
    assert train_ids.isdisjoint(held_ids) and len(train_ids | held_ids) == 12 and len(held_ids) == len(held)
    assert f"{len(held)} validation ->" in summary and "data.validation.jsonl" in summary


def test_model_option_since_and_min_rating(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    cheap = rate(make_answer(assistant, member, chunk, model="gpt-x", route={"route": "cheap"}), 1, 1)
    rate(make_answer(assistant, member, chunk), 1)

    assert len(export(tmp_path, "--model", "gpt-x", "--validation-fraction", "0")[0]) == 1
    assert len(export(tmp_path, "--min-rating", "2", "--validation-fraction", "0")[0]) == 0
    assert len(export(tmp_path, "--since", "2999-01-01", "--validation-fraction", "0")[0]) == 0
    assert cheap.model == "gpt-x"


def test_history_is_part_of_the_prompt(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    conversation = assistant_services.conversation_create(user=member, assistant=assistant)
    earlier_q = Message.objects.create(conversation=conversation, role="user", content="What is the portal?")
    Message.objects.create(
        conversation=conversation, role="assistant", content="The finance portal.", reply_to=earlier_q
    )
    asked = Message.objects.create(conversation=conversation, role="user", content=QUESTION)
    reply = Message.objects.create(conversation=conversation, role="assistant", content=GOOD, reply_to=asked)
    rate(make_answer(assistant, member, chunk, message=reply), 1)

    train, _, _ = export(tmp_path, "--validation-fraction", "0")

    assert "Earlier question: What is the portal?" in train[0]["messages"][1]["content"]


def test_an_answer_whose_document_is_gone_is_skipped(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    answer = rate(make_answer(assistant, member, chunk), 1)
    answer.retrieved = [{"n": 1, "chunk_id": 999_999}]
    answer.save(update_fields=["retrieved"])

    train, held, summary = export(tmp_path)

    assert train == held == [] and "1 skipped: context no longer available" in summary


def test_staff_approved_and_corrected_answers_are_exported_though_flagged(
    tmp_path: Path, assistant: Assistant, member: Any, chunk: Chunk
) -> None:
    reviewer = factories.user(username="reviewer", staff=True)
    approved = make_answer(assistant, member, chunk, flagged=True, grounded=False)  # not rated
    corrected = make_answer(
        assistant, member, chunk, flagged=True, route={"route": "cheap", "model": "small"}
    )
    make_answer(assistant, member, chunk, flagged=True)  # flagged, never reviewed: left out
    for answer in (approved, corrected, *Answer.objects.filter(flagged=True)):
        Flag.objects.get_or_create(answer=answer, category=Flag.Category.UNSUPPORTED)
    review_services.review_approve(answer=approved, actor=reviewer)
    review_services.review_correct(answer=corrected, actor=reviewer, text="Reports are due Friday [1].")

    train, _, summary = export(tmp_path, "--validation-fraction", "0")

    assert len(train) == 2 and "2 staff-approved or corrected" in summary
    targets = [json.loads(row["messages"][2]["content"]) for row in train]
    assert {t["answer"] for t in targets} == {GOOD, "Reports are due Friday [1]."}
    assert next(t for t in targets if t["answer"].startswith("Reports"))["citations"] == [1]


def test_start_without_an_openai_key_says_so_and_fails(tmp_path: Path, assistant: Assistant) -> None:
    with pytest.raises(CommandError, match="Fine-tuning needs an OpenAI key"):
        call_command("export_finetune", "--out", str(tmp_path / "x.jsonl"), "--start")

    assert not (tmp_path / "x.jsonl").exists()


def test_bad_arguments_are_refused(tmp_path: Path, db: None) -> None:
    with pytest.raises(CommandError, match="validation-fraction"):
        call_command("export_finetune", "--out", str(tmp_path / "x.jsonl"), "--validation-fraction", "1")
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_finetune", "--out", str(tmp_path / "x.jsonl"), "--since", "yesterday")

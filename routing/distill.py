"""Distillation data: good strong-model answers as OpenAI chat-format fine-tuning examples.

An answer qualifies when it came from the strong model (its routing decision said "strong", or
it names the model asked for) and either people rated it up (net Feedback rating at least
`min_rating`) while it was grounded and not flagged, abstained, a fallback or a cache hit, or
staff approved it in the review queue (which overrides the automatic flag that sent it there).
A staff correction is an example whatever model answered: its target is the corrected text.

Each example is rebuilt as the model saw it: the answer's prompt version, its conversation
history, and its retrieved chunks read back through the knowledge selectors with the asker's
permissions. An answer whose chunks are gone (a deleted document) is skipped, since its context
can no longer be shown truthfully. The target is the JSON the pipeline asks the model for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet, Sum

from assistant import grounding, pipeline
from assistant import services as assistant_services
from assistant.models import Answer
from assistant.prompts import AnswerPayload
from knowledge import selectors as knowledge
from review import selectors as review

SPLIT_SALT = "groundwork-finetune-v1"


def _strong(model: str | None) -> Q:
    if model:
        return Q(model=model)
    return Q(route__route="strong")


@dataclass(frozen=True)
class Candidates:
    answers: QuerySet[Answer]  # oldest first
    rated: set[int]
    approved: set[int]
    corrected: dict[int, str]  # answer id -> the text staff wrote


def candidate_answers(
    *, model: str | None = None, since: datetime | None = None, min_rating: int = 1
) -> Candidates:
    """The answers to export: rated up by people, approved or corrected by staff."""
    answers = Answer.objects.filter(user__isnull=False, cached_from__isnull=True).exclude(cache_hit=True)
    if since is not None:
        answers = answers.filter(created_at__gte=since)
    good = answers.filter(_strong(model), grounded=True, flagged=False, abstained=False, fallback=False)
    rated = set(
        good.exclude(text="")
        .annotate(net=Sum("feedback__rating"))
        .filter(net__gte=min_rating)
        .values_list("pk", flat=True)
    )
    corrected = {c.answer.pk: c.text for c in review.corrections()}
    approved = set(
        answers.filter(_strong(model), pk__in=review.approved_answer_ids() - corrected.keys())
        .exclude(text="")
        .values_list("pk", flat=True)
    )
    wanted = rated | approved | corrected.keys()
    chosen = (
        answers.filter(pk__in=wanted)
        .select_related("prompt", "assistant", "message__reply_to", "user")
        .order_by("created_at", "pk")
    )
    return Candidates(chosen, rated, approved, corrected)


@dataclass
class Example:
    answer_id: int
    messages: list[dict[str, str]]
    rated: bool = False
    approved: bool = False

    def line(self) -> str:
        return json.dumps({"messages": self.messages}, ensure_ascii=False)

    @property
    def split(self) -> float:
        """A stable number in [0, 1) from the answer id, for the validation split."""
        digest = hashlib.sha256(f"{SPLIT_SALT}:{self.answer_id}".encode()).hexdigest()
        return int(digest[:8], 16) / 0x1_0000_0000


def _sources(answer: Answer) -> list[pipeline.Source] | None:
    traces = [t for t in answer.retrieved if isinstance(t, dict) and t.get("chunk_id")]
    if not traces:
        return None
    hits = {
        h.chunk.pk: h for h in knowledge.hits_for_chunks(answer.user, [int(t["chunk_id"]) for t in traces])
    }
    sources: list[pipeline.Source] = []
    for trace in traces:
        hit = hits.get(int(trace["chunk_id"]))
        if hit is None:
            return None
        sources.append(
            pipeline.Source(
                number=int(trace.get("n") or len(sources) + 1),
                chunk_id=hit.chunk.pk,
                document_id=hit.chunk.document_id,
                title=hit.document.title,
                filename=hit.document.filename,
                page=hit.chunk.page,
                heading=hit.chunk.heading,
                text=hit.chunk.text,
            )
        )
    return sources


def example_for(answer: Answer, *, corrected_text: str | None = None) -> Example | None:
    """The fine-tuning example for one answer, or None when its context cannot be rebuilt.

    With `corrected_text` the target is what staff wrote, cited by its own [n] marks.
    """
    sources = _sources(answer)
    if sources is None:
        return None
    history = assistant_services.history_before(answer.message) if answer.message else []
    past = "".join(f"Earlier question: {q}\nEarlier answer: {a[:400]}\n" for q, a in history[-3:])
    prompt = answer.prompt
    system = pipeline.fill_template(
        prompt.system, assistant_name=answer.assistant.name, scope=answer.assistant.scope
    )
    user = pipeline.fill_template(
        prompt.instructions,
        context="\n\n".join(s.prompt_block() for s in sources),
        history=f"\n{past}" if past else "",
        question=answer.question,
    )
    citations = [int(c["n"]) for c in answer.citations if isinstance(c, dict) and c.get("n")]
    if corrected_text is not None:
        numbers = range(1, len(sources) + 1)
        citations = [n for n in grounding.cited_numbers(corrected_text) if n in numbers]
    target = AnswerPayload(
        answer=answer.text if corrected_text is None else corrected_text,
        citations=citations,
        confidence=answer.confidence if answer.confidence is not None else 0.5,
        not_found=False,
        follow_ups=[str(s) for s in answer.suggestions][:3],
    )
    return Example(
        answer_id=answer.pk,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": target.model_dump_json()},
        ],
    )


@dataclass
class Export:
    train: list[Example] = field(default_factory=list)
    validation: list[Example] = field(default_factory=list)
    considered: int = 0
    rated: int = 0
    approved: int = 0
    skipped_context: int = 0


def finetune_export(
    *,
    model: str | None = None,
    since: datetime | None = None,
    min_rating: int = 1,
    validation_fraction: float = 0.1,
) -> Export:
    """The examples, split deterministically by answer id into train and validation."""
    found = candidate_answers(model=model, since=since, min_rating=min_rating)
    export = Export()
    examples = []
    for answer in found.answers:
        export.considered += 1
        example = example_for(answer, corrected_text=found.corrected.get(answer.pk))
        if example is None:
            export.skipped_context += 1
            continue
        example.rated = answer.pk in found.rated
        example.approved = answer.pk in found.approved or answer.pk in found.corrected
        export.rated += example.rated
        export.approved += example.approved
        examples.append(example)
    export.validation = [e for e in examples if e.split < validation_fraction]
    if validation_fraction > 0 and not export.validation and len(examples) >= 2:
        export.validation = [min(examples, key=lambda e: e.split)]
    held_out = {e.answer_id for e in export.validation}
    export.train = [e for e in examples if e.answer_id not in held_out]
    return export

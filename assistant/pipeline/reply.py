"""Step 15 of an answer: what the model's output amounts to (`model_reply`), and which text is
shown (`final_outcome`): the model's answer when it holds, else the evidence, else an abstention."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from assistant import evidence, grounding
from assistant.models import AnswerSource
from assistant.pipeline.guard import WITHHELD_TEXT, output_checked, redact, shorten
from assistant.pipeline.record import citation_records
from assistant.pipeline.suggestions import checked_suggestions, suggestions_from_sources, vague_rewrite
from assistant.pipeline.turn import Outcome, Turn
from assistant.prompts import AnswerPayload

FALLBACK_TEXT = (
    "I could not produce a reliable answer to this from your knowledge base. "
    "Try rephrasing the question, or open the sources below."
)
NOT_FOUND_TEXT = "I could not find this in your knowledge base."


@dataclass(frozen=True)
class ModelReply:
    """What the model's output amounts to, before the pipeline decides which text is shown."""

    text: str  # the model's answer as written (redacted as it streamed), "" when it gave none
    shown: str  # the same after the output checks (annotated, redacted, or withheld)
    action: str  # the output checks' action: allow, rewrite or block
    problem: str  # "" when the answer is usable and grounded; else why it cannot be shown
    citations: list[int] = field(default_factory=list)
    confidence: float = 0.0
    suggestions: list[str] = field(default_factory=list)
    check: grounding.Grounding | None = None
    fallback: bool = False  # the output was unusable even after one repair

    @property
    def usable(self) -> bool:
        return not self.problem


MODEL_UNUSABLE = "The model's output was unusable after one repair."
MODEL_ABSTAINED = "The model found no answer in the sources."
MODEL_UNSUPPORTED = "Some of the model's statements are not supported by the sources it cited."


def model_reply(turn: Turn, payload: AnswerPayload | None) -> ModelReply:
    if payload is None:
        return ModelReply(text="", shown="", action="allow", problem=MODEL_UNUSABLE, fallback=True)
    text = payload.answer.strip()
    if not grounding.WORD.search(grounding.CITATION_MARK.sub("", text)):
        text = ""  # punctuation and marks alone (",, [1]") are no answer, and have no claim to check
    suggestions = [
        redact(s, turn.guard) for s in checked_suggestions(payload.follow_ups, turn.question, turn.sources)
    ]
    if payload.not_found or not text:
        shown, action = output_checked(turn, text) if text else (text, "allow")
        return ModelReply(
            text=text,
            shown=shown,
            action=action,
            problem=MODEL_ABSTAINED,
            confidence=payload.confidence,
            suggestions=suggestions,
        )
    shown, action = output_checked(turn, text)
    cited = [s for s in turn.sources if s.number in set(payload.citations)]
    # The model saw each source's title and heading with its text, and may use their words.
    check = grounding.check(text, [f"{s.title}\n{s.heading}\n{s.text}" for s in cited])
    return ModelReply(
        text=text,
        shown=shown,
        action=action,
        problem="" if check.grounded else MODEL_UNSUPPORTED,
        citations=payload.citations,
        confidence=payload.confidence,
        suggestions=suggestions,
        check=check,
    )


def _stored_grounding(turn: Turn, check: grounding.Grounding) -> dict[str, Any]:
    """The grounding trace, with the model's words redacted as the stored answer is."""
    stored = dataclasses.replace(
        check,
        claims=[
            dataclasses.replace(
                c, text=redact(c.text, turn.guard), missing=[redact(w, turn.guard) for w in c.missing]
            )
            for c in check.claims
        ],
    )
    return stored.as_json()


def final_outcome(turn: Turn, reply: ModelReply) -> Outcome:
    """Which text is shown: the model's answer when it holds, else the evidence when it is strong
    enough, else an abstention with the evidence shown as related passages.

    The model's own text is kept (`model_text`) whenever another is shown, with the reason, so
    the person can still read it behind a disclosure, with its warning.
    """
    selection = turn.selection or evidence.Selection()
    suggestions = reply.suggestions or [
        redact(s, turn.guard) for s in suggestions_from_sources(turn.sources, turn.question)
    ]
    rewrite = vague_rewrite(turn.question, turn.sources)
    model_grounding = _stored_grounding(turn, reply.check) if reply.check is not None else {}
    if reply.action == "block":
        # Withheld by an output check (a leak of the instructions, an insult): nobody reads it.
        return Outcome.of(
            text=WITHHELD_TEXT,
            answer_source=AnswerSource.NONE,
            abstained=reply.problem == MODEL_ABSTAINED,
            abstain_reason=shorten(reply.problem, 200) if reply.problem == MODEL_ABSTAINED else "",
            citations=citation_records(turn.sources, reply.citations, reply.text),
            confidence=reply.confidence,
            grounded=reply.check.grounded if reply.check is not None else None,
            grounding=model_grounding,
            flagged=True,
            suggestions=suggestions,
            rewrite=rewrite,
        )
    if reply.usable:
        # Grounded in what it cited, but when nothing in the sources clearly answers the question
        # the answer may be about something else: it is shown with a low-confidence warning.
        weak = turn.selection is not None and selection.level == "weak"
        return Outcome.of(
            text=reply.shown,
            answer_source=AnswerSource.MODEL,
            citations=citation_records(turn.sources, reply.citations, reply.text),
            confidence=round(min(reply.confidence, selection.strength), 4) if weak else reply.confidence,
            grounded=True,
            grounding=model_grounding,
            suggestions=suggestions,
            rewrite=rewrite,
        )
    if not turn.assistant.evidence_answers:
        return _unchecked_answer(turn, reply, suggestions, rewrite, model_grounding)
    model_text = redact(reply.shown or reply.text, turn.guard)
    if selection.level in evidence.ANSWERING_LEVELS:
        return Outcome.of(
            text=evidence.answer_text(selection),
            answer_source=AnswerSource.EVIDENCE,
            model_text=model_text,
            citations=_evidence_citations(turn, selection),
            confidence=round(selection.strength, 4),
            grounded=True,
            grounding={
                "grounded": True,
                "method": "evidence",
                "level": selection.level,
                "score": 1.0,
                "claims": [],
                "model": {"problem": reply.problem, **model_grounding},
            },
            fallback=reply.fallback,
            suggestions=suggestions,
            rewrite=rewrite,
        )
    return Outcome.of(
        text=NOT_FOUND_TEXT,
        answer_source=AnswerSource.NONE,
        model_text=model_text,
        abstained=True,
        abstain_reason=shorten(
            reply.problem if reply.problem == MODEL_ABSTAINED else EVIDENCE_WEAK_REASON, 200
        ),
        confidence=round(selection.strength, 4),
        grounded=reply.check.grounded if reply.check is not None else None,
        grounding={**model_grounding, "model": {"problem": reply.problem}},
        fallback=reply.fallback,
        suggestions=suggestions,
        rewrite=rewrite,
    )


def _unchecked_answer(
    turn: Turn, reply: ModelReply, suggestions: list[str], rewrite: str, model_grounding: dict[str, Any]
) -> Outcome:
    """With evidence answers turned off: the model's own text even when it could not be checked
    (shown with its warning and flagged for review), its abstention, or the fallback text."""
    if reply.fallback:
        return Outcome.of(
            text=FALLBACK_TEXT,
            answer_source=AnswerSource.NONE,
            fallback=True,
            grounded=False,
            flagged=True,
            confidence=0.0,
            citations=citation_records(turn.sources, [s.number for s in turn.sources[:3]]),
            suggestions=suggestions,
            grounding={"grounded": False, "reason": MODEL_UNUSABLE},
        )
    if reply.problem == MODEL_ABSTAINED:
        return Outcome.of(
            text=reply.shown or NOT_FOUND_TEXT,
            answer_source=AnswerSource.NONE,
            abstained=True,
            abstain_reason=MODEL_ABSTAINED,
            confidence=reply.confidence,
            rewrite=rewrite,
            suggestions=suggestions,
        )
    return Outcome.of(
        text=reply.shown,
        answer_source=AnswerSource.MODEL,
        citations=citation_records(turn.sources, reply.citations, reply.text),
        confidence=reply.confidence,
        grounded=False,
        grounding=model_grounding,
        flagged=True,
        suggestions=suggestions,
        rewrite=rewrite,
    )


EVIDENCE_WEAK_REASON = (
    "The passages found do not clearly answer this question, and the model's answer could not be checked "
    "against them."
)


def _evidence_citations(turn: Turn, selection: evidence.Selection) -> list[dict[str, Any]]:
    """The sources an evidence answer quotes, each with the quoted text as its supporting quote."""
    shown = evidence.answer_parts(selection)
    records = citation_records(turn.sources, [item.n for item in shown])
    quotes: dict[int, str] = {}
    for item in shown:
        quotes[item.n] = f"{quotes[item.n]} {item.text}" if item.n in quotes else item.text
    for record in records:
        record["quote"] = quotes.get(record["n"], record["quote"])
    return records

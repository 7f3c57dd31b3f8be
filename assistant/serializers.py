"""Answers as plain JSON dicts, shared by the OpenAI-compatible API and `manage.py ask`.

Fields that later features fill in (cost, cache, guardrails) are always present, as null until
then, so that scripts reading them do not have to change when the features arrive.
"""

from __future__ import annotations

from typing import Any

from django.utils.text import slugify

from answer_cache import services as answer_cache
from assistant.models import Answer, Assistant


def model_id(assistant: Assistant) -> str:
    """How clients name an assistant: its name as a slug ("Groundwork" is "groundwork")."""
    return slugify(assistant.name)


def assistant_named(name: str) -> Assistant | None:
    """The assistant a model id or a name refers to, ignoring case; None if there is none.

    Names are unique but two could share a slug ("HR policy", "hr-policy"): the first by name wins.
    """
    assistants = list(Assistant.objects.select_related("prompt"))
    exact = next((a for a in assistants if a.name == name), None)
    wanted = slugify(name)
    return exact or next((a for a in assistants if wanted and model_id(a) == wanted), None)


CITATION_KEYS = ("n", "chunk_id", "document_id", "title", "filename", "page", "heading", "quote")


def citations_json(answer: Answer) -> list[dict[str, Any]]:
    """The cited passages, each with the same keys whatever version of the pipeline wrote it."""
    return [{key: citation.get(key) for key in CITATION_KEYS} for citation in answer.citations or []]


EVIDENCE_KEYS = ("text", "n", "chunk_id", "document_id", "filename", "score")


def evidence_json(answer: Answer) -> list[dict[str, Any]]:
    """The sentences of the sources that best answer the question, best first."""
    return [
        {key: item.get(key) for key in EVIDENCE_KEYS}
        for item in answer.evidence or []
        if isinstance(item, dict)
    ]


def latency_total(answer: Answer) -> float | None:
    total = (answer.latency_ms or {}).get("total")
    return None if total is None else float(total)


def answer_summary(answer: Answer) -> dict[str, Any]:
    """The `groundwork` field the API adds to a chat completion: what a client needs to show trust."""
    return {
        "answer_id": answer.pk,
        "citations": citations_json(answer),
        "answer_source": answer.answer_source,
        "evidence": evidence_json(answer),
        "abstained": answer.abstained,
        "grounded": answer.grounded,
        "confidence": answer.confidence,
        "suggestions": list(answer.suggestions or []),
        "prompt_version": answer.prompt.version,
        "latency_ms": latency_total(answer),
        "cache_hit": bool(answer.cache_hit),
        "cached_from": cached_from_json(answer),
    }


def cached_from_json(answer: Answer) -> dict[str, Any] | None:
    """For a cache hit: which earlier answer was served, when, and to which question when the asker
    may see it (their own, or approved by staff; null otherwise)."""
    source = answer.cached_from if answer.cache_hit else None
    if source is None:
        return None
    return {
        "answer_id": source.pk,
        "question": answer_cache.source_question_for(answer, answer.user),
        "asked_at": source.created_at.isoformat(),
    }


def answer_record(answer: Answer) -> dict[str, Any]:
    """Everything `ask --json` prints: the answer, its sources and how it was made."""
    return {
        "answer_id": answer.pk,
        "question": answer.question,
        "answer": answer.text,
        "answer_source": answer.answer_source,
        "evidence": evidence_json(answer),
        "evidence_strength": answer.evidence_strength,
        "model_text": answer.model_text or None,
        "citations": citations_json(answer),
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        "confidence": answer.confidence,
        "grounded": answer.grounded,
        "flagged": answer.flagged,
        "suggestions": list(answer.suggestions or []),
        "rewrite": answer.rewrite,
        "assistant": answer.assistant.name,
        "prompt_version": answer.prompt.version,
        "model": answer.model,
        "seed": answer.seed,
        "temperature": answer.temperature,
        "top_p": answer.top_p,
        "system_fingerprint": answer.system_fingerprint or None,
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
        },
        "latency_ms": latency_total(answer),
        "cost_usd": None if answer.cost_usd is None else float(answer.cost_usd),
        "cache_hit": answer.cache_hit,
        "cached_from": cached_from_json(answer),
        "route": answer.route or None,
        "guardrails": answer.guardrails,
    }

"""Follow-up questions offered with an answer, and a more specific version of a vague question."""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.pipeline.turn import Source
from common.text import content_terms as content_words

VAGUE = re.compile(
    r"^(tell me( more)?|more|explain( it| this)?|what about (it|this|that)|help|why|how)\??$", re.I
)


def _suggestion_key(text: str) -> str:
    return " ".join(text.split()).rstrip("?").strip().lower()


def _clean_suggestions(candidates: Sequence[str], question: str) -> list[str]:
    """At most three distinct follow-ups, each a question, none a repeat of the one asked."""
    seen = {_suggestion_key(question)}
    out: list[str] = []
    for candidate in candidates:
        text = " ".join(str(candidate).split())[:160].rstrip("?").strip()
        if len(text) < 8 or _suggestion_key(text) in seen:
            continue
        seen.add(_suggestion_key(text))
        out.append(f"{text}?")
    return out[:3]


# A follow-up the model writes must read as a question: a question word or auxiliary first, or
# a Chinese or Japanese question particle.
_QUESTION_START = re.compile(
    r"^(?:what|how|when|where|who|whom|whose|why|which|can|could|does|do|did|is|are|was|were|should"
    r"|will|would|may|must|has|have|are)\b",
    re.IGNORECASE,
)
_CJK_QUESTION = re.compile("嗎|吗|什麼|什么|如何|怎麼|怎么|為什麼|为什么|哪|誰|谁|幾|几|多少|是否|呢|か")
SUGGESTION_SUPPORT = 0.6  # share of a follow-up's terms that one source must hold


def checked_suggestions(candidates: Sequence[str], question: str, sources: Sequence[Source]) -> list[str]:
    """The model's follow-ups that pass a sanity check against the sources: each reads as a
    question and most of its terms occur in one of the sources, so the knowledge could answer
    it. A tiny model's "this answer has been deleted from the Debian repository?" does not."""
    vocabularies = [content_words(f"{s.title} {s.heading} {s.text}") for s in sources]
    kept = []
    for suggestion in _clean_suggestions(candidates, question):
        body = suggestion.rstrip("?？")
        if not (_QUESTION_START.match(body) or _CJK_QUESTION.search(body)):
            continue
        wanted = content_words(body)
        if len(wanted) < 2 or not vocabularies:
            continue
        if max(len(wanted & have) / len(wanted) for have in vocabularies) >= SUGGESTION_SUPPORT:
            kept.append(suggestion)
    return kept


def suggestions_from_sources(sources: Sequence[Source], question: str) -> list[str]:
    """Follow-ups drawn from the headings of what was retrieved, when the model offers none."""
    ideas = []
    for source in sources:
        topic = source.heading.split(" › ")[-1] if source.heading else source.title
        ideas.append(
            f"What does {source.title} say about {topic}"
            if topic != source.title
            else f"What are the key points of {topic}"
        )
    return _clean_suggestions(ideas, question)


def vague_rewrite(question: str, sources: Sequence[Source]) -> str:
    """A more specific version of a vague question, for the user to edit or accept."""
    # One content word or none ("tell me more", "and pricing?") leaves the topic to guess; two
    # ("expense deadline?") already name it.
    words = content_words(question)
    if len(words) >= 2 and not VAGUE.match(question.strip()):
        return ""
    if not sources:
        return ""
    top = sources[0]
    topic = top.heading.split(" › ")[-1] if top.heading else top.title
    subject = question.strip().rstrip("?") or "this"
    return f"What does “{top.title}” say about {topic.lower() if topic != top.title else subject}?"

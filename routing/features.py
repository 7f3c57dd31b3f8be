"""Cheap features of a question, computed in microseconds, that the router decides on.

Shared by the router (routing/policy.py) and its training script (routing/training.py), so the
classifier sees at decision time exactly what it was fitted on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

QUESTION_TYPES = ("lookup", "definition", "comparison", "how", "why", "multi_step")

WORD = re.compile(r"\w+", re.UNICODE)
COMPARISON = re.compile(
    r"\b(compare[sd]?|comparison|differen(ce|ces|t from)|differ|versus|vs\.?|better|worse|pros and cons"
    r"|advantages?|disadvantages?|trade-?offs?|similarit(y|ies)|contrast)\b"
)
BETWEEN = re.compile(r"\bbetween\b.+\b(and|or)\b")
WHY = re.compile(r"\bwhy\b|\bwhat (is|are|was|were) the reasons?\b|\bfor what reason\b")
MULTI_STEP = re.compile(
    r"\b(steps?|step-by-step|walk me through|procedure|process (for|of|to)|explain|describe|summari[sz]e"
    r"|outline|list (all|the)|what happens (if|when)|implications?|consequences?|impact of|plan)\b"
    r"|\bfirst\b.+\bthen\b"
)
HOW = re.compile(r"^\W*(how|in what way)\b(?!\s+(many|much|long|often|old|far|big|large|soon)\b)")
DEFINITION = re.compile(
    r"^\W*(what|who)\s+(is|are|was|were)\s+(an?\s+|the\s+)?[\w\-]+(\s+[\w\-]+)?\s*\??\s*$"
    r"|\b(define|definition of|meaning of|stand for|stands for)\b"
)
CONJUNCTION = re.compile(
    r"\b(and|or|but|because|if|when|while|although|whereas|unless|whether|so that)\b|[,;:]"
)
EXTRA_QUESTION = re.compile(r"\b(and|also|or)\s+(what|how|why|when|where|who|which|is|are|does|do|can)\b")


def question_type(question: str) -> str:
    """One of QUESTION_TYPES, by the first rule that matches (most demanding first)."""
    text = " ".join(question.lower().split())
    if COMPARISON.search(text) or BETWEEN.search(text):
        return "comparison"
    if WHY.search(text):
        return "why"
    if MULTI_STEP.search(text):
        return "multi_step"
    if HOW.search(text):
        return "how"
    if DEFINITION.search(text):
        return "definition"
    return "lookup"


@dataclass(frozen=True)
class Features:
    words: int
    clauses: int
    questions: int
    question_type: str
    follow_up: bool
    retrieval_score: float | None

    def vector(self) -> list[float]:
        """The classifier's inputs, each scaled to about 0..1 (names in VECTOR_NAMES)."""
        return [
            min(math.log1p(self.words) / math.log(60), 1.5),
            min(self.clauses - 1, 4) / 4,
            min(self.questions - 1, 3) / 3,
            *(1.0 if self.question_type == t else 0.0 for t in QUESTION_TYPES),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "clauses": self.clauses,
            "questions": self.questions,
            "question_type": self.question_type,
            "follow_up": self.follow_up,
            "retrieval_score": None if self.retrieval_score is None else round(self.retrieval_score, 4),
        }


VECTOR_NAMES = ["log_words", "extra_clauses", "extra_questions", *(f"type_{t}" for t in QUESTION_TYPES)]


def question_features(
    question: str, *, history: list[tuple[str, str]] | None = None, retrieval_score: float | None = None
) -> Features:
    text = " ".join(question.lower().split())
    words = len(WORD.findall(text))
    return Features(
        words=words,
        clauses=1 + len(CONJUNCTION.findall(text)),
        questions=max(1, text.count("?")) + len(EXTRA_QUESTION.findall(text)),
        question_type=question_type(text),
        follow_up=bool(history) and words < 6,
        retrieval_score=retrieval_score,
    )

"""What the guardrail checks return: one Verdict per check, and the result of a whole run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from guardrails import rewrite

Action = Literal["allow", "rewrite", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "rewrite", "block")


@dataclass(frozen=True)
class Verdict:
    check: str
    action: Action
    categories: list[str]
    score: float
    latency_ms: float
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "action": self.action,
            "categories": self.categories,
            "score": round(self.score, 4),
            "latency_ms": round(self.latency_ms, 3),
            "detail": self.detail,
        }


def reason_for(categories: Sequence[str]) -> str:
    """One sentence per distinct reason, for the person who sent the message."""
    reasons: list[str] = []
    for category in categories:
        text = rewrite.REASONS.get(category) or rewrite.REASONS.get(category.split(":")[0], "")
        if text and text not in reasons:
            reasons.append(text)
    return " ".join(reasons)


@dataclass(frozen=True)
class InputResult:
    action: Action
    text: str  # normalised + PII-redacted: the only form of the input to send on, log or cache
    categories: list[str]
    scores: dict[str, float]
    rewrite: str | None
    verdicts: list[Verdict]
    reason: str = ""
    latency_ms: float = 0.0  # the checks, without the embedding
    embedding_ms: float = 0.0  # the query embedding, when the checks had to compute it
    query_vector: list[float] | None = field(default=None, repr=False)  # for reuse by retrieval
    # Allowed, but to be answered with this notice shown: the harm classifier alone found the
    # question sensitive and a close knowledge-base match vouched for it. `notice_categories`
    # are the flags behind it (the harm verdict keeps them too, with action "allow").
    notice: str = ""
    notice_categories: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "categories": self.categories,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "rewrite": self.rewrite,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "embedding_ms": round(self.embedding_ms, 3),
            "notice": self.notice,
            "notice_categories": self.notice_categories,
            "verdicts": [v.as_json() for v in self.verdicts],
        }


@dataclass(frozen=True)
class OutputResult:
    action: Action  # allow; rewrite: show `text` instead; block: withhold the answer
    text: str  # the answer with secrets and personal data redacted (and a note when overconfident)
    categories: list[str]
    scores: dict[str, float]
    verdicts: list[Verdict]
    reason: str = ""
    latency_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "categories": self.categories,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "verdicts": [v.as_json() for v in self.verdicts],
        }


OUTPUT_REASONS = {
    "format": "The answer was not in the expected format.",
    "leak:system_prompt": "The answer repeated the assistant's instructions.",
    "leak": "Secrets or other people's data were removed from the answer.",
    "tone:rude": "The answer was rude.",
    "tone:overconfident": "The answer made overconfident claims; a note was added.",
    "pii": "Personal data was removed from the answer.",
}


def output_reason(categories: Sequence[str]) -> str:
    reasons: list[str] = []
    for category in categories:
        text = OUTPUT_REASONS.get(category) or OUTPUT_REASONS.get(category.split(":")[0], "")
        if text and text not in reasons:
            reasons.append(text)
    return " ".join(reasons)

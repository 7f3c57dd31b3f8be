"""The state of one answer while it is made (`Turn`), what it is made with, and the events it yields."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from assistant import evidence
from assistant.models import Answer, Assistant, PromptTemplate
from gateway import provider
from guardrails.checks import GuardConfig
from routing.policy import Decision

MAX_QUESTION_CHARS = 4000


class QuestionRejected(Exception):
    """A question refused before any work: empty or too long. The message is for the user."""


def validate_question(text: str) -> str:
    question = (text or "").strip()
    if not question:
        raise QuestionRejected("Type a question first.")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionRejected(
            f"That message is {len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}. "
            "Shorten it or ask about one part at a time."
        )
    return question


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Stage:
    name: str  # "retrieving", "searching", "thinking", "checking"


@dataclass(frozen=True)
class EvidenceFound:
    """The sentences of the retrieved sources that best answer the question, before any model call."""

    items: list[evidence.Evidence]
    level: evidence.Level


@dataclass(frozen=True)
class Done:
    answer: Answer
    # What retrieval searched for, and the redacted history it was asked in: the answer cache
    # stores the answer under the same key and vector the next lookup will use.
    query_vector: list[float] | None = None
    history: list[tuple[str, str]] | None = None


Event = Delta | Stage | EvidenceFound | Done


# --- what an answer is made with -----------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The settings an answer is made with; snapshotted onto the Answer for replay."""

    model: str
    temperature: float
    top_p: float
    seed: int | None
    max_tokens: int
    prompt: PromptTemplate
    # Answer on `model` whatever the routing policy says (a replay must use the original's model).
    pinned: bool = False

    @classmethod
    def of(cls, assistant: Assistant) -> Settings:
        return cls(
            model=assistant.chat_model,
            temperature=assistant.temperature,
            top_p=assistant.top_p,
            seed=assistant.seed,
            max_tokens=assistant.max_tokens,
            prompt=assistant.prompt,
        )

    @classmethod
    def of_answer(cls, answer: Answer) -> Settings:
        return cls(
            model=answer.model,
            temperature=answer.temperature,
            top_p=answer.top_p,
            seed=answer.seed,
            max_tokens=answer.max_tokens,
            prompt=answer.prompt,
            pinned=True,
        )

    def params(self) -> provider.ChatParams:
        return provider.ChatParams(
            model=self.model,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            max_tokens=self.max_tokens,
        )


@dataclass
class Source:
    """One numbered source in the prompt."""

    number: int
    chunk_id: int
    document_id: int
    title: str
    filename: str
    page: int | None
    heading: str
    text: str
    score: float | None = None
    vector_score: float | None = None
    keyword_score: float | None = None
    via_tool: bool = False
    quarantined: bool = False  # it held instructions to an AI: they were cut out of `text`

    def prompt_block(self) -> str:
        where = ", ".join(
            p for p in (self.title, self.heading, f"page {self.page}" if self.page else "") if p
        )
        return f"[{self.number}] ({where})\n{self.text}"

    def trace(self) -> dict[str, Any]:
        return {
            "n": self.number,
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "score": self.score,
            "vector_score": self.vector_score,
            "keyword_score": self.keyword_score,
            "via_tool": self.via_tool,
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True)
class Outcome:
    """How a turn ends, before it is recorded: the Answer's own fields (text, abstention,
    citations, ...)."""

    fields: dict[str, Any]

    @classmethod
    def of(cls, **fields: Any) -> Outcome:
        return cls(fields=fields)


@dataclass
class Turn:
    """The working state of one answer while it is being made."""

    assistant: Assistant
    user: Any
    question: str
    history: list[tuple[str, str]]
    config: Settings
    began: float = field(default_factory=time.perf_counter)
    sources: list[Source] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: provider.Usage = field(default_factory=provider.Usage)
    latency: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""
    raw: str = ""
    repaired: bool = False
    guard: GuardConfig = field(default_factory=GuardConfig)
    verdicts: dict[str, Any] = field(default_factory=lambda: {"input": [], "chunks": [], "output": []})
    query_vector: list[float] | None = None  # the question's embedding (input checks, retrieval)
    retrieval_vector: list[float] | None = None  # what retrieval searched for (see stages.embed_question)
    readable: list[int] | None = None  # collections the user may read within the assistant's, once a turn
    exact_tried: bool = False  # the answer cache's exact key was looked up before embedding
    decision: Decision | None = None  # which model answers, and why (routing)
    selection: evidence.Selection | None = None  # the evidence found in the sources

    @functools.cached_property
    def scope(self) -> list[int] | None:
        """The assistant's collections (None: all of them), read once a turn."""
        ids = list(self.assistant.collections.values_list("pk", flat=True))
        return ids or None

    def routed(self, decision: Decision) -> None:
        """Record the routing decision; the model it names answers from here on."""
        self.decision = decision
        self.config = dataclasses.replace(self.config, model=decision.model)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's wall time to `latency[name]` in ms (a block that raises adds nothing:
        the trace shows the time of what completed)."""
        started = time.perf_counter()
        yield
        self.add_latency(name, (time.perf_counter() - started) * 1000)

    def add_latency(self, name: str, ms: float) -> None:
        self.latency[name] = round(self.latency.get(name, 0.0) + ms, 1)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.began) * 1000

    def finish(self) -> None:
        """The turn's total time so far: set once its answer is decided."""
        self.latency["total"] = round(self.elapsed_ms(), 1)

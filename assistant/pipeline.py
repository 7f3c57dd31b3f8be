"""The answer pipeline: retrieve, prompt, call the model in JSON mode, validate, check, record.

`answer_events` is a generator so the chat page can stream the answer as it is written; every
other caller (the API, the CLI, evals, replays) drains it with `run_to_answer`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from pydantic import ValidationError

from answer_cache import services as answer_cache
from assistant import evidence, grounding
from assistant.models import Answer, AnswerSource, Assistant, PromptTemplate
from assistant.prompts import ANSWER_SCHEMA, REPAIR_INSTRUCTIONS, AnswerPayload
from common.text import content_terms as content_words
from gateway import provider
from guardrails import pii
from guardrails.checks import (
    GuardConfig,
    InputResult,
    check_chunk,
    check_input,
    check_output,
    output_stream_redactor,
    provider_text,
)
from knowledge import selectors as knowledge
from routing.fallback import chat_with_fallback, stream_with_fallback
from routing.policy import Decision, route_decide

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
MAX_TOOL_ROUNDS = 2
FALLBACK_TEXT = (
    "I could not produce a reliable answer to this from your knowledge base. "
    "Try rephrasing the question, or open the sources below."
)
NOT_FOUND_TEXT = "I could not find this in your knowledge base."
REWRITE_TEXT = "I can't answer this as it is asked. You can send the safer version below, or edit it first."
BLOCK_TEXT = "I can't help with this request."
WITHHELD_TEXT = (
    "The answer was withheld by a safety check, and staff have been asked to review it. "
    "Open the sources below to read what was found."
)
MAX_REWRITE_CHARS = 500  # Answer.rewrite's length
WEAK_RETRIEVAL_REASON = "Nothing in the knowledge you can read matches this question closely enough."
OFF_TOPIC_REASON = (
    "The question is outside what this assistant is for, and nothing in your knowledge matches it."
)
VAGUE = re.compile(
    r"^(tell me( more)?|more|explain( it| this)?|what about (it|this|that)|help|why|how)\??$", re.I
)

User = AbstractBaseUser | AnonymousUser


class QuestionRejected(Exception):
    """A question refused before any work: empty or too long. The message is for the user."""


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Stage:
    name: str  # "retrieving", "thinking", "checking"


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


@dataclass
class Turn:
    """The working state of one answer while it is being made."""

    assistant: Assistant
    user: Any
    question: str
    history: list[tuple[str, str]]
    config: Settings
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
    retrieval_vector: list[float] | None = None  # what retrieval searched for (see _retrieval_vector)
    readable: list[int] | None = None  # collections the user may read within the assistant's, once a turn
    exact_tried: bool = False  # the answer cache's exact key was looked up before embedding
    decision: Decision | None = None  # which model answers, and why (routing)
    selection: evidence.Selection | None = None  # the evidence found in the sources

    @functools.cached_property
    def scope(self) -> list[int] | None:
        """The assistant's collections (None: all of them), read once a turn."""
        return _collections(self.assistant)

    def routed(self, decision: Decision) -> None:
        """Record the routing decision; the model it names answers from here on."""
        self.decision = decision
        self.config = dataclasses.replace(self.config, model=decision.model)


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


def _collections(assistant: Assistant) -> list[int] | None:
    ids = list(assistant.collections.values_list("pk", flat=True))
    return ids or None


def _sources_from_hits(
    hits: Sequence[knowledge.SearchHit], start: int, *, via_tool: bool = False
) -> list[Source]:
    return [
        Source(
            number=start + i,
            chunk_id=hit.chunk.pk,
            document_id=hit.chunk.document_id,
            title=hit.document.title,
            filename=hit.document.filename,
            page=hit.chunk.page,
            heading=hit.chunk.heading,
            text=hit.chunk.text,
            score=round(hit.score, 5),
            vector_score=None if hit.vector_score is None else round(hit.vector_score, 4),
            keyword_score=None if hit.keyword_score is None else round(hit.keyword_score, 4),
            via_tool=via_tool,
        )
        for i, hit in enumerate(hits)
    ]


def retrieval_query(question: str, history: list[tuple[str, str]]) -> str:
    """A short follow-up ("and for GPL?") is searched together with the previous question."""
    if history and len(content_words(question)) < 4:
        return f"{history[-1][0]} {question}"
    return question


def _embed_question(turn: Turn) -> None:
    """Embed the (redacted) question once: the input checks, retrieval and the answer cache
    share the vector. A follow-up is searched for with the previous question (see
    `retrieval_query`): both texts go in one request."""
    started = time.perf_counter()
    texts = [turn.question]
    query = retrieval_query(turn.question, turn.history)
    if query != turn.question:
        texts.append(query)
    vectors = provider.embed(texts, kind="query").vectors
    turn.query_vector, turn.retrieval_vector = vectors[0], vectors[-1]
    turn.latency["embedding"] = round((time.perf_counter() - started) * 1000, 1)


def _retrieval_vector(turn: Turn) -> list[float]:
    """The vector of what retrieval searches for: the question's own, or a follow-up's with the
    previous question (`_embed_question` makes both)."""
    if turn.retrieval_vector is None:
        _embed_question(turn)
    assert turn.retrieval_vector is not None
    return turn.retrieval_vector


def _readable(turn: Turn) -> list[int]:
    """The collections the user may read within the assistant's scope, asked once per turn."""
    if turn.readable is None:
        turn.readable = knowledge.readable_collection_ids(turn.user, turn.scope)
    return turn.readable


def _retrieve(turn: Turn) -> None:
    started = time.perf_counter()
    query = retrieval_query(turn.question, turn.history)
    hits = knowledge.search(
        turn.user,
        query,
        turn.assistant.top_k,
        turn.scope,
        query_vector=_retrieval_vector(turn),
        readable_ids=_readable(turn),
    )
    turn.sources = _guard_sources(turn, _sources_from_hits(hits, 1))
    turn.latency["retrieval"] = round((time.perf_counter() - started) * 1000, 1)


# check_chunk is a pure function of the text (rules only, ~1-6 ms a chunk), and the same chunks
# come back turn after turn: its verdicts are kept per process, by text.
_chunk_verdict = functools.lru_cache(maxsize=1024)(check_chunk)


def _guard_sources(turn: Turn, sources: list[Source]) -> list[Source]:
    """Retrieved text is data, never instructions: a chunk addressed to an AI is neutralised.

    The neutralised text replaces the chunk's in the prompt; the source is marked quarantined
    in the trace and in its citation, and every chunk's verdict is recorded.
    """
    if not turn.guard.injection:
        return sources
    for source in sources:
        started = time.perf_counter()
        verdict = _chunk_verdict(source.text)
        if verdict.is_injection:
            source.text = verdict.neutralised_text
            source.quarantined = True
        turn.verdicts["chunks"].append(
            {
                "check": "injection",
                "n": source.number,
                "chunk_id": source.chunk_id,
                "action": "quarantine" if verdict.is_injection else "allow",
                "score": round(verdict.score, 4),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "rules": list(verdict.rules),
                # Exactly what was cut out, shown in the source panel beside the passage.
                "removed": list(verdict.removed),
                "defanged_links": verdict.defanged_links,
            }
        )
    return sources


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(float(x) ** 2 for x in a)) * math.sqrt(math.fsum(float(y) ** 2 for y in b))
    return dot / norm if norm else 0.0


def _retrieve_pinned(turn: Turn, chunk_ids: list[int]) -> None:
    """The given chunks (a replay), scored against the question as a search would have scored them.

    Without a similarity every pinned chunk would count as a weak match, and a replay would
    abstain where the original answered.
    """
    started = time.perf_counter()
    hits = knowledge.hits_for_chunks(turn.user, chunk_ids)
    if hits:
        vector = _retrieval_vector(turn)
        hits = [dataclasses.replace(hit, vector_score=_cosine(vector, hit.chunk.embedding)) for hit in hits]
    turn.sources = _guard_sources(turn, _sources_from_hits(hits, 1))
    turn.latency["retrieval"] = round((time.perf_counter() - started) * 1000, 1)


def best_vector_score(turn: Turn) -> float:
    return max((s.vector_score or 0.0 for s in turn.sources), default=0.0)


def retrieval_is_weak(turn: Turn) -> bool:
    return not turn.sources or best_vector_score(turn) < turn.assistant.min_similarity


# --- guardrails ----------------------------------------------------------------------------


def guard_config(assistant: Assistant) -> GuardConfig:
    """The assistant's guardrail settings; stored settings that no longer parse fall back to the defaults.

    The admin form refuses bad settings, so this only happens to rows written another way.
    """
    try:
        return GuardConfig.from_dict(assistant.guardrails or None)
    except ValueError as exc:
        logger.warning("assistant %s has unusable guardrail settings (%s): defaults used", assistant.pk, exc)
        return GuardConfig()


def _scope_text(assistant: Assistant) -> str:
    """What the assistant is for: its stated scope and the descriptions of its collections."""
    descriptions = [d for d in assistant.collections.values_list("description", flat=True) if d.strip()]
    return "\n".join([assistant.scope, *descriptions]).strip()


def _check_input(turn: Turn, original: str, *, cached: answer_cache.CacheHit | None = None) -> InputResult:
    """The input checks on the user's message, reusing the question's vector and retrieval's best match.

    A question the knowledge base answers (a match at or above the assistant's own
    `min_similarity`, calibrated for its embedding model) is on topic by definition, so the
    scope check runs only for the others. So is a question close enough to one answered before
    to be `cached`, checked before any search: the best match its earlier question had stands
    for retrieval's (the documents that answered it are those its answer would be served from).
    An answer served from the cache this way records these verdicts but none for retrieved
    chunks or scope, since neither ran.
    """
    scope = "" if cached is not None or not retrieval_is_weak(turn) else _scope_text(turn.assistant)
    match = best_vector_score(turn) if turn.sources else None
    if cached is not None:
        match = _cached_match(cached)
    result = check_input(
        original,
        scope=scope,
        query_vector=turn.query_vector,
        retrieval_score=match,
        # A follow-up was searched for (and cached) together with the question before it: that
        # match vouches for nothing the follow-up itself says.
        retrieval_for_message=retrieval_query(turn.question, turn.history) == turn.question,
        config=turn.guard,
    )
    turn.verdicts["input"] = [v.as_json() for v in result.verdicts]
    turn.verdicts["input_action"] = result.action
    turn.verdicts["categories"] = list(result.categories)
    if result.notice:
        # Answered, with this shown: the question read as sensitive, and the documents answer it.
        turn.verdicts["notice"] = result.notice
        turn.verdicts["notice_categories"] = list(result.notice_categories)
    else:
        turn.verdicts.pop("notice", None)
        turn.verdicts.pop("notice_categories", None)
    # A flagged cache hit is checked again after retrieval: the record keeps the second verdicts
    # and the time of both.
    turn.latency["guard_input"] = round(turn.latency.get("guard_input", 0.0) + result.latency_ms, 1)
    return result


def _cached_match(hit: answer_cache.CacheHit) -> float | None:
    """The best vector match retrieval found for the cached answer's own question, if recorded."""
    scores = [
        float(source["vector_score"])
        for source in hit.answer.retrieved or []
        if isinstance(source, dict) and isinstance(source.get("vector_score"), int | float)
    ]
    return max(scores, default=None)


def _only_personal_data(result: InputResult) -> bool:
    return bool(result.categories) and all(c.startswith("pii:") for c in result.categories)


def _stopped_by_input(turn: Turn, result: InputResult) -> Answer | None:
    """The abstention for a message the input checks stopped, or None to answer it (redacted).

    A safe rewrite is offered, editable, whenever one exists; only a request with none is refused.
    """
    if result.allowed or result.categories == ["off_topic"]:
        # Off topic alone coincides with weak retrieval (see _check_input): the not-found
        # abstention says why and still offers a more specific question and suggestions.
        return None
    offered = (result.rewrite or "").strip()
    if result.action == "rewrite" and _only_personal_data(result) and len(offered) > MAX_REWRITE_CHARS:
        # Too long to offer back: answer the redacted text, as pii_action "redact" would.
        turn.verdicts["input_action"] = "redact"
        return None
    if len(offered) > MAX_REWRITE_CHARS:
        offered = offered[: MAX_REWRITE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    reason = result.reason or "A safety check stopped this message."
    text = f"{REWRITE_TEXT if offered else BLOCK_TEXT} {reason}"
    if offered:
        text += f"\n\nA safer version: “{offered}”"
    return _record(
        turn,
        text=text,
        abstained=True,
        abstain_reason=_shorten(reason, 200),
        confidence=0.0,
        rewrite=offered,
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _redact(text: str, config: GuardConfig) -> str:
    """Personal data out of text that is stored (raw output, grounding claims)."""
    return pii.redact(text, config.pii_kinds).text if config.pii else text


def _check_output(turn: Turn, text: str) -> tuple[str, str]:
    """The answer text to show, and the output action (allow, rewrite or block)."""
    result = check_output(text, system_prompt=_messages(turn)[0]["content"], config=turn.guard)
    turn.verdicts["output"] = [v.as_json() for v in result.verdicts]
    turn.verdicts["output_action"] = result.action
    turn.verdicts["output_categories"] = list(result.categories)
    if result.reason:
        turn.verdicts["output_reason"] = result.reason
    turn.latency["guard_output"] = round(result.latency_ms, 1)
    if result.action == "block":
        return WITHHELD_TEXT, "block"
    return result.text, result.action


class _Placeholders(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill_template(template: str, **values: str) -> str:
    """`template` with its {placeholders} filled in.

    Prompts are edited by staff: an unknown {name} is left as written, and a template that
    str.format cannot read (a lone brace, a JSON example) is filled by plain substitution,
    so that one edit cannot break every answer.
    """
    try:
        return template.format_map(_Placeholders(values))
    except (ValueError, IndexError, AttributeError):
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _messages(turn: Turn) -> list[dict[str, Any]]:
    prompt = turn.config.prompt
    history = "".join(f"Earlier question: {q}\nEarlier answer: {a[:400]}\n" for q, a in turn.history[-3:])
    system = fill_template(prompt.system, assistant_name=turn.assistant.name, scope=turn.assistant.scope)
    user = fill_template(
        prompt.instructions,
        context="\n\n".join(s.prompt_block() for s in turn.sources) or "(no sources)",
        history=f"\n{history}" if history else "",
        question=turn.question,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# --- tools --------------------------------------------------------------------------------

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_knowledge",
            "description": "Search the knowledge base for passages about a topic.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "collection": {"type": "string", "description": "A collection name, or empty for all."},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "document_info",
            "description": "Metadata of a document: title, collection, pages, version, when it was indexed.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "The document's title or file name."}
                },
                "required": ["title"],
            },
        },
    },
]


def _run_tool(turn: Turn, name: str, arguments: dict[str, Any]) -> str:
    if name == "search_knowledge":
        query = str(arguments.get("query", "")).strip()[:500]
        collection = str(arguments.get("collection", "") or "").strip()
        scope = turn.scope
        wanted: list[int] | None = scope
        if collection:
            # A collection the model names narrows the search; it never widens the assistant's scope.
            named = knowledge.readable_collection_ids(turn.user, [collection])
            wanted = [pk for pk in named if scope is None or pk in scope]
        if not query or wanted == []:
            return "No further passages found."
        try:
            hits = knowledge.search(turn.user, query, 3, wanted)
        except provider.ProviderError as exc:
            return f"The search failed: {exc}"
        known = {s.chunk_id for s in turn.sources}
        fresh = [h for h in hits if h.chunk.pk not in known]
        added = _guard_sources(turn, _sources_from_hits(fresh, len(turn.sources) + 1, via_tool=True))
        turn.sources.extend(added)
        return "\n\n".join(s.prompt_block() for s in added) or "No further passages found."
    if name == "document_info":
        title = str(arguments.get("title", "")).strip()
        docs = knowledge.documents_readable_by(turn.user, title=title, limit=3)
        return json.dumps(docs) if docs else "No readable document matches that title."
    return f"Unknown tool {name!r}."


def _tool_rounds(turn: Turn) -> None:
    """Let the model ask for more context, within a bounded loop; each call is recorded.

    A model without tool support answers in text or rejects the request; either way the
    pipeline carries on with the sources it has.
    """
    messages = _messages(turn)
    for _round in range(MAX_TOOL_ROUNDS):
        started = time.perf_counter()
        try:
            result = _chat(turn, messages, tools=TOOLS)
        except provider.ProviderError as exc:
            turn.tool_calls.append({"error": str(exc), "kind": exc.kind.value, "degraded": True})
            return
        turn.usage = turn.usage + result.usage
        turn.latency["tools"] = round(
            turn.latency.get("tools", 0) + (time.perf_counter() - started) * 1000, 1
        )
        if not result.tool_calls:
            return
        messages.append(
            {
                "role": "assistant",
                "content": result.content or None,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in result.tool_calls
                ],
            }
        )
        for call in result.tool_calls:
            began = time.perf_counter()
            output = _run_tool(turn, call.name, call.parsed_arguments())
            turn.tool_calls.append(
                {
                    "name": call.name,
                    "arguments": call.parsed_arguments(),
                    "result": output[:500],
                    "latency_ms": round((time.perf_counter() - began) * 1000, 1),
                }
            )
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})


# --- the model's JSON ----------------------------------------------------------------------


class AnswerFieldStream:
    """Pulls the text of the "answer" field out of a JSON object as it streams in."""

    START = re.compile(r'"answer"\s*:\s*"')
    ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}  # others stand for themselves

    def __init__(self) -> None:
        self.raw = ""
        self.position: int | None = None
        self.closed = False

    def feed(self, text: str) -> str:
        self.raw += text
        if self.closed:
            return ""
        if self.position is None:
            match = self.START.search(self.raw)
            if not match:
                return ""
            self.position = match.end()
        out: list[str] = []
        i = self.position
        while i < len(self.raw):
            char = self.raw[i]
            if char == '"':
                self.closed = True
                i += 1
                break
            if char == "\\":
                if i + 1 >= len(self.raw):
                    break
                escape = self.raw[i + 1]
                if escape == "u":
                    decoded, used = self._unicode_escape(i)
                    if used == 0:
                        break  # the rest of the escape has not arrived yet
                    out.append(decoded)
                    i += used
                    continue
                out.append(self.ESCAPES.get(escape, escape))
                i += 2
                continue
            out.append(char)
            i += 1
        self.position = i
        return "".join(out)

    def _unicode_escape(self, i: int) -> tuple[str, int]:
        """The character of the \\uXXXX escape at `i` and how many characters it took (0: incomplete).

        A character outside the BMP comes as a surrogate pair, two escapes that make one
        character; halves on their own could not be encoded for the page, so they become U+FFFD.
        """
        code = self._hex4(i)
        if code is None:
            return "", 0
        if code < 0:
            return "", 6  # a malformed escape is dropped
        if 0xD800 <= code < 0xDC00:
            following = self.raw[i + 6 : i + 12]
            if not "\\u".startswith(following[:2]):
                return "\ufffd", 6
            if len(following) < 6:
                return "", 0
            low = self._hex4(i + 6)
            if low is not None and 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
            return "\ufffd", 6
        if 0xDC00 <= code < 0xE000:
            return "\ufffd", 6
        return chr(code), 6

    def _hex4(self, i: int) -> int | None:
        """The value of the four hex digits after "\\u" at `i`; None if not all here yet, -1 if malformed."""
        if i + 6 > len(self.raw):
            return None
        digits = self.raw[i + 2 : i + 6]
        if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            return -1
        return int(digits, 16)


def parse_payload(raw: str, source_count: int) -> tuple[AnswerPayload | None, str]:
    """The validated payload, or None and what was wrong with it (for the repair prompt)."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        payload = AnswerPayload.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"it was not valid JSON for the schema ({first['msg']} at {first.get('loc')})."
    # A mark like [2] in the text is a citation too: the reader sees it whether or not it is listed.
    numbers = list(dict.fromkeys([*payload.citations, *grounding.cited_numbers(payload.answer)]))
    unknown = [n for n in numbers if not 1 <= n <= source_count]
    if unknown:
        return None, f"it cited source(s) {unknown}, but only sources 1 to {source_count} exist."
    payload.citations = numbers
    return payload, ""


def _chat(turn: Turn, messages: list[dict[str, Any]], **kwargs: Any) -> provider.ChatResult:
    """One model call on the routed model, falling back to the next one on a timeout or outage."""
    if turn.decision is None:
        return provider.chat(messages, params=turn.config.params(), **kwargs)
    result, decision = chat_with_fallback(
        messages, decision=turn.decision, params=turn.config.params(), **kwargs
    )
    turn.routed(decision)
    return result


def _route(turn: Turn, pinned_model: str | None) -> None:
    """Choose the model for this question (routing.policy); a replay or eval keeps its own model."""
    best = max((s.vector_score or 0.0 for s in turn.sources), default=None)
    started = time.perf_counter()
    turn.routed(
        route_decide(
            assistant=turn.assistant,
            question=turn.question,
            retrieval_score=best,
            history=turn.history,
            pinned_model=pinned_model,
        )
    )
    turn.latency["routing"] = round((time.perf_counter() - started) * 1000, 1)


def _repair(turn: Turn, problem: str) -> AnswerPayload | None:
    messages = _messages(turn) + [
        {"role": "assistant", "content": turn.raw[:2000]},
        {"role": "user", "content": REPAIR_INSTRUCTIONS.format(problem=problem, count=len(turn.sources))},
    ]
    started = time.perf_counter()
    with provider.purpose("repair"):
        result = _chat(turn, messages, json_schema=ANSWER_SCHEMA)
    turn.latency["repair"] = round((time.perf_counter() - started) * 1000, 1)
    turn.usage = turn.usage + result.usage
    turn.repaired = True
    turn.raw = result.content
    payload, _ = parse_payload(result.content, len(turn.sources))
    return payload


# --- suggestions ---------------------------------------------------------------------------


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


def _checked_suggestions(candidates: Sequence[str], question: str, sources: Sequence[Source]) -> list[str]:
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


# --- the pipeline --------------------------------------------------------------------------


def _record(turn: Turn, **fields: Any) -> Answer:
    config = turn.config
    return Answer(
        assistant=turn.assistant,
        user=turn.user if getattr(turn.user, "pk", None) else None,
        question=turn.question,
        model=config.model,
        seed=config.seed,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        prompt=config.prompt,
        system_fingerprint=turn.fingerprint,
        retrieved=[s.trace() for s in turn.sources],
        tool_calls=turn.tool_calls,
        raw_output=_redact(turn.raw[:20000], turn.guard),
        repaired=turn.repaired,
        prompt_tokens=turn.usage.prompt_tokens,
        completion_tokens=turn.usage.completion_tokens,
        latency_ms=turn.latency,
        guardrails=turn.verdicts,
        route=turn.decision.as_json() if turn.decision else {},
        **_evidence_fields(turn),
        **fields,
    )


def _evidence_fields(turn: Turn) -> dict[str, Any]:
    selection = turn.selection
    if selection is None:
        return {}
    return {
        "evidence": [item.as_json() for item in selection.items],
        "evidence_strength": round(selection.strength, 4) if selection.items else None,
    }


def citation_records(
    sources: Sequence[Source], numbers: Sequence[int], answer: str = ""
) -> list[dict[str, Any]]:
    """The cited sources, each with the sentence(s) that support the answer's claims as its quote."""
    by_number = {s.number: s for s in sources}
    records = []
    for n in dict.fromkeys(numbers):
        source = by_number.get(n)
        if source is None:
            continue
        records.append(
            {
                "n": n,
                "chunk_id": source.chunk_id,
                "document_id": source.document_id,
                "title": source.title,
                "filename": source.filename,
                "page": source.page,
                "heading": source.heading,
                "quote": grounding.supporting_quote(grounding.claims_citing(answer, n), source.text),
                "quarantined": source.quarantined,
            }
        )
    return records


def answer_events(
    *,
    assistant: Assistant,
    user: Any,
    question: str,
    history: list[tuple[str, str]] | None = None,
    config: Settings | None = None,
    pinned_chunk_ids: list[int] | None = None,
) -> Iterator[Event]:
    """Make one answer, yielding progress and answer text as it streams; ends with Done.

    The Answer in Done is not saved: the caller attaches it to its message and saves it.
    ProviderError propagates when the model cannot be reached (the caller offers a retry).

    Guardrails: from here on only the normalised, redacted question (and history) is used, so
    personal data reaches neither provider nor the Answer; the user's own message keeps the
    original. A message the input checks stop gets an abstention with the reason and a safe
    rewrite, without a chat call; retrieved chunks holding instructions are neutralised; the
    answer is redacted as it streams and checked as a whole at the end.
    """
    began = time.perf_counter()
    original = validate_question(question)
    rules = guard_config(assistant)
    redacted = provider_text(original, rules).strip()
    if not redacted:
        raise QuestionRejected("Type a question first.")
    turn = Turn(
        assistant=assistant,
        user=user,
        question=redacted,
        history=[(provider_text(q, rules), provider_text(a, rules)) for q, a in history or []],
        config=config or Settings.of(assistant),
        guard=rules,
    )
    replaying = pinned_chunk_ids is not None or config is not None
    # The same question asked before is answered again without embedding it: it passed the input
    # checks when it was first asked. Not a message with personal data in it, whose redacted form
    # may match: the input checks decide what happens to it (rewrite, block) under pii_action.
    personal = rules.pii and (bool(pii.find(original, rules.pii_kinds)) or redacted != original)
    turn.exact_tried = not (replaying or personal)
    hit = _cache_lookup(turn, exact_only=True) if turn.exact_tried else None
    if hit is not None:
        yield from _answer_from_cache(turn, hit, began)
        return

    yield Stage("retrieving")
    _embed_question(turn)
    # A paraphrase of a question answered before is served without a search when the input
    # checks find nothing in it: its answer was grounded when it was cached. A message they flag
    # in any way takes the full path, as if there were no hit: retrieval, then the checks again
    # with its best match (which may vouch for it, or make a scope check run), and the hit only
    # if nothing stops it there. The lookup is counted once that is decided.
    hit = None if replaying else _cache_lookup(turn, exact_only=False)
    if hit is not None:
        checked = _check_input(turn, original, cached=hit)
        if checked.allowed and not checked.categories:
            _count_lookup(turn, hit)
            yield from _answer_from_cache(turn, hit, began)
            return

    if pinned_chunk_ids is not None:
        _retrieve_pinned(turn, pinned_chunk_ids)
    else:
        _retrieve(turn)

    stopped = _stopped_by_input(turn, _check_input(turn, original))
    if stopped is not None:
        turn.latency["total"] = round((time.perf_counter() - began) * 1000, 1)
        yield Delta(stopped.text)
        yield Done(stopped)
        return

    if not replaying:
        _count_lookup(turn, hit)
    if hit is not None:
        yield from _answer_from_cache(turn, hit, began)
        return

    if turn.sources:
        _select_evidence(turn)
        assert turn.selection is not None
        if turn.selection.items:
            yield EvidenceFound(items=turn.selection.items, level=turn.selection.level)

    if retrieval_is_weak(turn):
        turn.latency["total"] = round((time.perf_counter() - began) * 1000, 1)
        off_topic = "off_topic" in turn.verdicts.get("categories", [])
        yield Delta(NOT_FOUND_TEXT)
        yield Done(
            _record(
                turn,
                text=NOT_FOUND_TEXT,
                abstained=True,
                answer_source=AnswerSource.NONE,
                abstain_reason=OFF_TOPIC_REASON if off_topic else WEAK_RETRIEVAL_REASON,
                confidence=0.0,
                rewrite=vague_rewrite(turn.question, turn.sources),
                suggestions=suggestions_from_sources(turn.sources, turn.question),
            )
        )
        return

    # A replay or an eval run that names another model than the assistant's keeps that model.
    pinned = (
        config.model
        if config is not None and (config.pinned or config.model != assistant.chat_model)
        else None
    )
    _route(turn, pinned)

    if assistant.tools_enabled:
        yield Stage("searching")
        _tool_rounds(turn)

    yield Stage("thinking")
    started = time.perf_counter()
    field_stream = AnswerFieldStream()
    # Personal data and secrets are cut out sentence by sentence, before the browser sees them.
    redactor = output_stream_redactor(turn.guard)
    result: provider.ChatResult | None = None
    assert turn.decision is not None
    stream = stream_with_fallback(
        _messages(turn), decision=turn.decision, params=turn.config.params(), json_schema=ANSWER_SCHEMA
    )
    for event in stream:
        if isinstance(event, provider.StreamDelta):
            text = redactor.feed(field_stream.feed(event.text))
            if text:
                yield Delta(text)
        else:
            result = event
    rest = redactor.flush()
    if rest:
        yield Delta(rest)
    assert result is not None
    turn.routed(stream.decision)
    turn.latency["model"] = round((time.perf_counter() - started) * 1000, 1)
    turn.usage = turn.usage + result.usage
    turn.fingerprint = result.system_fingerprint or ""
    turn.raw = result.content

    yield Stage("checking")
    payload, problem = parse_payload(turn.raw, len(turn.sources))
    if payload is None:
        try:
            payload = _repair(turn, problem)
        except provider.ProviderError as exc:
            logger.warning("repair call failed: %s", exc)
            payload = None
    reply = _model_reply(turn, payload)
    turn.latency["total"] = round((time.perf_counter() - began) * 1000, 1)
    answer = _final_answer(turn, reply)
    cacheable = answer.answer_source != AnswerSource.NONE
    yield Done(
        answer,
        query_vector=turn.retrieval_vector if cacheable else None,
        history=turn.history if cacheable else None,
    )


def _select_evidence(turn: Turn) -> None:
    """The sentences of the retrieved sources that best answer the question (`evidence.select`)."""
    turn.selection = evidence.select(turn.question, turn.sources, query_vector=turn.retrieval_vector)
    turn.latency["evidence"] = round(turn.selection.latency_ms, 1)


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


def _model_reply(turn: Turn, payload: AnswerPayload | None) -> ModelReply:
    if payload is None:
        return ModelReply(text="", shown="", action="allow", problem=MODEL_UNUSABLE, fallback=True)
    text = payload.answer.strip()
    if not grounding.WORD.search(grounding.CITATION_MARK.sub("", text)):
        text = ""  # punctuation and marks alone (",, [1]") are no answer, and have no claim to check
    suggestions = [
        _redact(s, turn.guard) for s in _checked_suggestions(payload.follow_ups, turn.question, turn.sources)
    ]
    if payload.not_found or not text:
        shown, action = _check_output(turn, text) if text else (text, "allow")
        return ModelReply(
            text=text,
            shown=shown,
            action=action,
            problem=MODEL_ABSTAINED,
            confidence=payload.confidence,
            suggestions=suggestions,
        )
    shown, action = _check_output(turn, text)
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
                c, text=_redact(c.text, turn.guard), missing=[_redact(w, turn.guard) for w in c.missing]
            )
            for c in check.claims
        ],
    )
    return stored.as_json()


def _final_answer(turn: Turn, reply: ModelReply) -> Answer:
    """Which text is shown: the model's answer when it holds, else the evidence when it is strong
    enough, else an abstention with the evidence shown as related passages.

    The model's own text is kept (`model_text`) whenever another is shown, with the reason, so
    the person can still read it behind a disclosure, with its warning.
    """
    selection = turn.selection or evidence.Selection()
    suggestions = reply.suggestions or [
        _redact(s, turn.guard) for s in suggestions_from_sources(turn.sources, turn.question)
    ]
    rewrite = vague_rewrite(turn.question, turn.sources)
    model_grounding = _stored_grounding(turn, reply.check) if reply.check is not None else {}
    if reply.action == "block":
        # Withheld by an output check (a leak of the instructions, an insult): nobody reads it.
        return _record(
            turn,
            text=WITHHELD_TEXT,
            answer_source=AnswerSource.NONE,
            abstained=reply.problem == MODEL_ABSTAINED,
            abstain_reason=_shorten(reply.problem, 200) if reply.problem == MODEL_ABSTAINED else "",
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
        return _record(
            turn,
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
    model_text = _redact(reply.shown or reply.text, turn.guard)
    if selection.level in evidence.ANSWERING_LEVELS:
        return _record(
            turn,
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
    return _record(
        turn,
        text=NOT_FOUND_TEXT,
        answer_source=AnswerSource.NONE,
        model_text=model_text,
        abstained=True,
        abstain_reason=_shorten(
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
) -> Answer:
    """With evidence answers turned off: the model's own text even when it could not be checked
    (shown with its warning and flagged for review), its abstention, or the fallback text."""
    if reply.fallback:
        return _record(
            turn,
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
        return _record(
            turn,
            text=reply.shown or NOT_FOUND_TEXT,
            answer_source=AnswerSource.NONE,
            abstained=True,
            abstain_reason=MODEL_ABSTAINED,
            confidence=reply.confidence,
            rewrite=rewrite,
            suggestions=suggestions,
        )
    return _record(
        turn,
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


def _cache_lookup(turn: Turn, *, exact_only: bool) -> answer_cache.CacheHit | None:
    """An earlier answer this user may be given, or None; a cache failure is only a miss."""
    try:
        return answer_cache.cache_lookup(
            user=turn.user,
            assistant=turn.assistant,
            question=turn.question,
            history=turn.history,
            query_vector=None if exact_only else _retrieval_vector(turn),
            exact_only=exact_only,
            # The exact key missed before embedding: the full lookup only needs the nearest ones.
            semantic_only=turn.exact_tried and not exact_only,
            readable=_readable(turn),
            count=exact_only,  # an exact hit is served at once; the full lookup, as _count_lookup
        )
    except Exception:
        logger.exception("answer cache lookup failed; answering without it")
        if exact_only:
            turn.exact_tried = False  # the full lookup tries the exact key again
        return None


def _count_lookup(turn: Turn, hit: answer_cache.CacheHit | None) -> None:
    """Count the full lookup in the cache statistics: the hit served, or a miss."""
    try:
        answer_cache.cache_lookup_count(assistant=turn.assistant, hit=hit)
    except Exception:
        logger.exception("answer cache count failed")


def _answer_from_cache(turn: Turn, hit: answer_cache.CacheHit, began: float) -> Iterator[Event]:
    """The earlier answer, recorded as a new Answer that points at it (no model is called)."""
    fields = hit.answer_fields()
    fields["latency_ms"] = {
        **turn.latency,
        "cache": round(hit.latency_ms, 1),
        "total": round((time.perf_counter() - began) * 1000, 1),
    }
    yield Delta(hit.text)
    yield Done(
        Answer(
            **fields,
            user=turn.user if getattr(turn.user, "pk", None) else None,
            question=turn.question,
            guardrails=turn.verdicts if turn.verdicts.get("input") else None,
        )
    )


def run_to_done(**kwargs: Any) -> Done:
    """Drain `answer_events` and return its final event (the unsaved Answer and its vector)."""
    for event in answer_events(**kwargs):
        if isinstance(event, Done):
            return event
    raise RuntimeError("the answer pipeline ended without an answer")


def run_to_answer(**kwargs: Any) -> Answer:
    """Drain `answer_events` and return its (unsaved) Answer."""
    return run_to_done(**kwargs).answer

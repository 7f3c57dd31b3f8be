"""The answer pipeline: retrieve, prompt, call the model in JSON mode, validate, check, record.

`answer_events` is a generator so the chat page can stream the answer as it is written; every
other caller (the API, the CLI, evals, replays) drains it with `run_to_answer`.
"""

from __future__ import annotations

import dataclasses
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

from assistant import grounding
from assistant.models import Answer, Assistant, PromptTemplate
from assistant.prompts import ANSWER_SCHEMA, REPAIR_INSTRUCTIONS, AnswerPayload
from gateway import provider
from knowledge import selectors as knowledge

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
MAX_TOOL_ROUNDS = 2
FALLBACK_TEXT = (
    "I could not produce a reliable answer to this from your knowledge base. "
    "Try rephrasing the question, or open the sources below."
)
NOT_FOUND_TEXT = "I could not find this in your knowledge base."
WEAK_RETRIEVAL_REASON = "Nothing in the knowledge you can read matches this question closely enough."
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
class Done:
    answer: Answer


Event = Delta | Stage | Done


@dataclass(frozen=True)
class Settings:
    """The settings an answer is made with; snapshotted onto the Answer for replay."""

    model: str
    temperature: float
    top_p: float
    seed: int | None
    max_tokens: int
    prompt: PromptTemplate

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
    if history and len(grounding.content_words(question)) < 4:
        return f"{history[-1][0]} {question}"
    return question


def _retrieve(turn: Turn) -> None:
    started = time.perf_counter()
    hits = knowledge.search(
        turn.user,
        retrieval_query(turn.question, turn.history),
        turn.assistant.top_k,
        _collections(turn.assistant),
    )
    turn.sources = _sources_from_hits(hits, 1)
    turn.latency["retrieval"] = round((time.perf_counter() - started) * 1000, 1)


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
        vector = provider.embed([retrieval_query(turn.question, turn.history)], kind="query").vectors[0]
        hits = [dataclasses.replace(hit, vector_score=_cosine(vector, hit.chunk.embedding)) for hit in hits]
    turn.sources = _sources_from_hits(hits, 1)
    turn.latency["retrieval"] = round((time.perf_counter() - started) * 1000, 1)


def retrieval_is_weak(turn: Turn) -> bool:
    best = max((s.vector_score or 0.0 for s in turn.sources), default=0.0)
    return not turn.sources or best < turn.assistant.min_similarity


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
        scope = _collections(turn.assistant)
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
        added = _sources_from_hits(fresh, len(turn.sources) + 1, via_tool=True)
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
            result = provider.chat(messages, params=turn.config.params(), tools=TOOLS)
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


def _repair(turn: Turn, problem: str) -> AnswerPayload | None:
    messages = _messages(turn) + [
        {"role": "assistant", "content": turn.raw[:2000]},
        {"role": "user", "content": REPAIR_INSTRUCTIONS.format(problem=problem, count=len(turn.sources))},
    ]
    started = time.perf_counter()
    result = provider.chat(messages, params=turn.config.params(), json_schema=ANSWER_SCHEMA)
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
    words = grounding.content_words(question)
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
        raw_output=turn.raw[:20000],
        repaired=turn.repaired,
        prompt_tokens=turn.usage.prompt_tokens,
        completion_tokens=turn.usage.completion_tokens,
        latency_ms=turn.latency,
        **fields,
    )


def citation_records(sources: Sequence[Source], numbers: Sequence[int]) -> list[dict[str, Any]]:
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
                "quote": source.text[:600],
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
    """
    began = time.perf_counter()
    turn = Turn(
        assistant=assistant,
        user=user,
        question=validate_question(question),
        history=history or [],
        config=config or Settings.of(assistant),
    )
    yield Stage("retrieving")
    if pinned_chunk_ids is not None:
        _retrieve_pinned(turn, pinned_chunk_ids)
    else:
        _retrieve(turn)

    if retrieval_is_weak(turn):
        turn.latency["total"] = round((time.perf_counter() - began) * 1000, 1)
        yield Delta(NOT_FOUND_TEXT)
        yield Done(
            _record(
                turn,
                text=NOT_FOUND_TEXT,
                abstained=True,
                abstain_reason=WEAK_RETRIEVAL_REASON,
                confidence=0.0,
                rewrite=vague_rewrite(turn.question, turn.sources),
                suggestions=suggestions_from_sources(turn.sources, turn.question),
            )
        )
        return

    if assistant.tools_enabled:
        yield Stage("searching")
        _tool_rounds(turn)

    yield Stage("thinking")
    started = time.perf_counter()
    field_stream = AnswerFieldStream()
    result: provider.ChatResult | None = None
    for event in provider.chat_stream(
        _messages(turn), params=turn.config.params(), json_schema=ANSWER_SCHEMA
    ):
        if isinstance(event, provider.StreamDelta):
            text = field_stream.feed(event.text)
            if text:
                yield Delta(text)
        else:
            result = event
    assert result is not None
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
    turn.latency["total"] = round((time.perf_counter() - began) * 1000, 1)
    if payload is None:
        yield Done(
            _record(
                turn,
                text=FALLBACK_TEXT,
                fallback=True,
                grounded=False,
                flagged=True,
                confidence=0.0,
                citations=citation_records(turn.sources, [s.number for s in turn.sources[:3]]),
                suggestions=suggestions_from_sources(turn.sources, turn.question),
                grounding={"grounded": False, "reason": "The model's output was unusable after one repair."},
            )
        )
        return

    text = payload.answer.strip()
    if not grounding.WORD.search(grounding.CITATION_MARK.sub("", text)):
        text = ""  # punctuation and marks alone (",, [1]") are no answer, and have no claim to check
    if payload.not_found or not text:
        yield Done(
            _record(
                turn,
                text=text or NOT_FOUND_TEXT,
                abstained=True,
                abstain_reason="The model found no answer in the sources.",
                confidence=payload.confidence,
                rewrite=vague_rewrite(turn.question, turn.sources),
                suggestions=_clean_suggestions(payload.follow_ups, turn.question)
                or suggestions_from_sources(turn.sources, turn.question),
            )
        )
        return

    cited = [s for s in turn.sources if s.number in set(payload.citations)]
    # The model saw each source's title and heading with its text, and may use their words.
    check = grounding.check(text, [f"{s.title}\n{s.heading}\n{s.text}" for s in cited])
    suggestions = _clean_suggestions(payload.follow_ups, turn.question) or suggestions_from_sources(
        turn.sources, turn.question
    )
    yield Done(
        _record(
            turn,
            text=text,
            citations=citation_records(turn.sources, payload.citations),
            confidence=payload.confidence,
            grounded=check.grounded,
            grounding=check.as_json(),
            flagged=not check.grounded,
            suggestions=suggestions,
            rewrite=vague_rewrite(turn.question, turn.sources),
        )
    )


def run_to_answer(**kwargs: Any) -> Answer:
    """Drain `answer_events` and return its (unsaved) Answer."""
    for event in answer_events(**kwargs):
        if isinstance(event, Done):
            return event.answer
    raise RuntimeError("the answer pipeline ended without an answer")

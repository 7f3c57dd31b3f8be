"""The model calls of an answer: its prompt, the routing decision (step 11), the tool rounds
(step 12), and the one repair of an unusable JSON answer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from assistant.pipeline.payload import parse_payload
from assistant.pipeline.retrieval import guard_sources, sources_from_hits
from assistant.pipeline.turn import Turn
from assistant.prompts import ANSWER_SCHEMA, REPAIR_INSTRUCTIONS, AnswerPayload
from gateway import provider
from knowledge import selectors as knowledge
from routing.fallback import chat_with_fallback
from routing.policy import route_decide

MAX_TOOL_ROUNDS = 2


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


def messages(turn: Turn) -> list[dict[str, Any]]:
    """The prompt: the system message and the user's, with the sources and recent history."""
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


def chat(turn: Turn, prompt: list[dict[str, Any]], **kwargs: Any) -> provider.ChatResult:
    """One model call on the routed model, falling back to the next one on a timeout or outage."""
    if turn.decision is None:
        return provider.chat(prompt, params=turn.config.params(), **kwargs)
    result, decision = chat_with_fallback(
        prompt, decision=turn.decision, params=turn.config.params(), **kwargs
    )
    turn.routed(decision)
    return result


def route(turn: Turn, pinned_model: str | None) -> None:
    """Step 11: choose the model for this question (routing.policy); a replay or eval keeps its own."""
    best = max((s.vector_score or 0.0 for s in turn.sources), default=None)
    with turn.timed("routing"):
        turn.routed(
            route_decide(
                assistant=turn.assistant,
                question=turn.question,
                retrieval_score=best,
                history=turn.history,
                pinned_model=pinned_model,
            )
        )


def repair(turn: Turn, problem: str) -> AnswerPayload | None:
    """One more call, shown the unusable output and what was wrong with it; its payload or None."""
    prompt = messages(turn) + [
        {"role": "assistant", "content": turn.raw[:2000]},
        {"role": "user", "content": REPAIR_INSTRUCTIONS.format(problem=problem, count=len(turn.sources))},
    ]
    with turn.timed("repair"), provider.purpose("repair"):
        result = chat(turn, prompt, json_schema=ANSWER_SCHEMA)
    turn.usage = turn.usage + result.usage
    turn.repaired = True
    turn.raw = result.content
    payload, _ = parse_payload(result.content, len(turn.sources))
    return payload


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
        added = guard_sources(turn, sources_from_hits(fresh, len(turn.sources) + 1, via_tool=True))
        turn.sources.extend(added)
        return "\n\n".join(s.prompt_block() for s in added) or "No further passages found."
    if name == "document_info":
        title = str(arguments.get("title", "")).strip()
        docs = knowledge.documents_readable_by(turn.user, title=title, limit=3)
        return json.dumps(docs) if docs else "No readable document matches that title."
    return f"Unknown tool {name!r}."


def tool_rounds(turn: Turn) -> None:
    """Let the model ask for more context, within a bounded loop; each call is recorded.

    A model without tool support answers in text or rejects the request; either way the
    pipeline carries on with the sources it has.
    """
    prompt = messages(turn)
    for _round in range(MAX_TOOL_ROUNDS):
        try:
            with turn.timed("tools"):
                result = chat(turn, prompt, tools=TOOLS)
        except provider.ProviderError as exc:
            turn.tool_calls.append({"error": str(exc), "kind": exc.kind.value, "degraded": True})
            return
        turn.usage = turn.usage + result.usage
        if not result.tool_calls:
            return
        prompt.append(
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
            prompt.append({"role": "tool", "tool_call_id": call.id, "content": output})

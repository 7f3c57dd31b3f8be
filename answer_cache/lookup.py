"""Answer cache lookups: an earlier answer this user may be given for a question.

`cache_lookup_exact` matches the normalised question text alone (no embedding: a turn tries it
before anything is embedded); `cache_lookup_similar` takes the question's vector and finds the
nearest cached questions `MatchRule` accepts (and the exact key too, in the same statement, when
it was not tried before). Neither counts itself: the caller counts the lookup it settles on with
`cache_lookup_count` (a hit served, or a miss), since the pipeline looks up before the input
checks decide whether a hit is served. `cache_lookup` does all three, for callers that need no
such decision.

An entry is served only while every chunk it was built from still exists and the asking user may
read every one of them, checked in the lookup's SQL, so correctness does not depend on the purge.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.formats import date_format

from answer_cache.models import CacheCounter, CachedAnswer
from answer_cache.text import (
    History,
    context_key,
    exact_key,
    normalize_question,
    query_text,
    text_hash,
    word_overlap,
)
from assistant.models import Answer, Assistant, Flag
from gateway import provider
from knowledge import selectors as knowledge
from knowledge.models import Chunk

logger = logging.getLogger(__name__)

NOTICE_QUESTION_CHARS = 120


def embed_query(question: str, history: History) -> list[float]:
    """The vector a lookup compares: of the text retrieval embeds (`query_text`), so the
    pipeline's vector can be shared."""
    return list(provider.embed([query_text(question, history)], kind="query").vectors[0])


@dataclass(frozen=True)
class CacheHit:
    """What the pipeline needs to answer from an earlier answer."""

    entry: CachedAnswer
    answer: Answer  # the source answer
    kind: str  # "exact" or "semantic"
    similarity: float
    latency_ms: float  # the whole lookup, including an embedding it had to make

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def citations(self) -> list[dict[str, Any]]:
        return list(self.answer.citations)

    @property
    def question(self) -> str:
        return self.answer.question

    @property
    def asked_at(self) -> datetime:
        return self.answer.created_at

    @property
    def notice(self) -> str:
        return hit_notice(question=self.question, asked_at=self.asked_at)

    def answer_fields(self) -> dict[str, Any]:
        """Field values for the new Answer that records this hit (add message, user, question)."""
        source = self.answer
        return {
            "assistant": source.assistant,
            "text": source.text,
            "answer_source": source.answer_source,
            "evidence": source.evidence,
            "evidence_strength": source.evidence_strength,
            "model_text": source.model_text,
            "citations": source.citations,
            "confidence": source.confidence,
            "grounded": source.grounded,
            "grounding": source.grounding,
            "suggestions": source.suggestions,
            "retrieved": source.retrieved,
            "model": source.model,
            "seed": source.seed,
            "temperature": source.temperature,
            "top_p": source.top_p,
            "max_tokens": source.max_tokens,
            "prompt": source.prompt,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0,
            "cache_hit": True,
            "cached_from": source,
            "latency_ms": {"cache": round(self.latency_ms, 1), "total": round(self.latency_ms, 1)},
        }


def hit_notice(*, question: str | None, asked_at: datetime) -> str:
    """The line shown with a cached answer: which earlier question it answered (when the reader
    may see it, see `source_question_for`), and when."""
    day = date_format(timezone.localtime(asked_at), "j F Y")
    if question is None:
        return f"Answered from an earlier answer to a similar question, on {day}"
    text = " ".join(question.split())
    if len(text) > NOTICE_QUESTION_CHARS:
        text = text[: NOTICE_QUESTION_CHARS - 1].rstrip() + "…"
    return f"Answered from an earlier answer to: “{text}”, on {day}"


# --- lookup ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    assistant_id: int
    context_key: str
    now: datetime
    readable: list[int]  # collections the user may read, within the assistant's scope

    @property
    def key(self) -> str:
        return _readable_key(self.readable)


def _readable_key(readable: Sequence[int]) -> str:
    return text_hash(",".join(str(pk) for pk in sorted(set(readable))))


def _readable_ids(user: object, assistant: Assistant) -> list[int]:
    """The collections `user` may read within the assistant's."""
    collections = list(assistant.collections.values_list("pk", flat=True)) or None
    return knowledge.readable_collection_ids(user, collections)


def scope_key(user: object, assistant: Assistant) -> str:
    """Which of the assistant's collections `user` may read, as a hash (see CachedAnswer.scope_key)."""
    return _readable_key(_readable_ids(user, assistant))


def _servable_sql(scope: _Scope) -> tuple[str, list[Any]]:
    """Conditions on entry `e`: this assistant and context, fresh, unflagged, every chunk readable.

    Only our own table names are formatted into the SQL; every value is a parameter.

    `scope.readable` comes from knowledge.selectors.readable_collection_ids: a chunk that no
    longer exists, or lies in a collection outside it, fails the inner NOT EXISTS and the entry
    is not served.
    """
    answers, flags, chunks = Answer._meta.db_table, Flag._meta.db_table, Chunk._meta.db_table
    sql = (
        "e.assistant_id = %s AND e.context_key = %s AND e.scope_key = %s AND e.expires_at > %s "  # noqa: S608
        f"AND (e.approved OR NOT EXISTS (SELECT 1 FROM {answers} a WHERE a.id = e.answer_id "
        f"AND a.flagged) AND NOT EXISTS (SELECT 1 FROM {flags} f WHERE f.answer_id = e.answer_id)) "
        "AND cardinality(e.chunk_ids) > 0 "
        "AND NOT EXISTS (SELECT 1 FROM unnest(e.chunk_ids) AS wanted(id) WHERE NOT EXISTS "
        f"(SELECT 1 FROM {chunks} c WHERE c.id = wanted.id AND c.collection_id = ANY(%s)))"
    )
    return sql, [scope.assistant_id, scope.context_key, scope.key, scope.now, scope.readable]


def _entries() -> QuerySet[CachedAnswer]:
    # The hit's Answer needs the source's prompt and assistant: one query loads them all.
    return CachedAnswer.objects.select_related("answer__prompt", "answer__assistant")


@dataclass(frozen=True)
class Candidate:
    """A servable entry a lookup found: its id and question, and how it matched."""

    entry_id: int
    question: str
    exact: bool  # its question hash is the new question's
    similarity: float  # cosine similarity of the two questions (1.0 for an exact match)


# How many of the nearest entries, of any assistant or scope, the HNSW index hands over for the
# nearest-entries branch: pgvector's default candidate list (hnsw.ef_search 40).
NEAREST_WALK = 40
_CROWDED = -1  # the id of the row that says the walk was crowded (see `_candidates`)


def _candidates_sql(
    scope: _Scope,
    digest: str | None,
    vector: Sequence[float] | None,
    *,
    floor: float,
    limit: int,
    exhaustive: bool = False,
) -> tuple[str, list[Any]]:
    """One statement for the candidates of a lookup (see `_candidates`): the exact key's, and
    the nearest among the walk's (or, `exhaustive`, among every entry). Only our own table names
    are formatted into it, every value is a parameter."""
    table = CachedAnswer._meta.db_table
    servable, params = _servable_sql(scope)
    ties = "e.approved DESC, e.created_at DESC"
    literal = "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]" if vector is not None else ""
    walk = vector is not None and not exhaustive
    head, branches, values = "", [], []
    if walk:
        # The NEAREST_WALK nearest entries of the whole table, of anyone, through its HNSW index.
        head = (
            "WITH near AS MATERIALIZED (SELECT n.id, n.embedding <=> %s::vector AS distance "  # noqa: S608
            f"FROM {table} n ORDER BY distance LIMIT %s) "
        )
        values += [literal, NEAREST_WALK]
    if digest is not None:
        branches.append(
            f"(SELECT e.id, e.question, TRUE, 1.0::float8 FROM {table} e "  # noqa: S608
            f"WHERE e.question_hash = %s AND {servable} ORDER BY {ties} LIMIT 1)"
        )
        values += [digest, *params]
    if walk:
        # Those of the walk near enough and servable here; and a row saying so when no entry of
        # the walk lies beyond the floor. Entries beyond the walk may then be near enough too:
        # it may have been all near ones, or have come back short (the index hands over at most
        # hnsw.ef_search entries, and entries deleted or updated since the last vacuum count
        # among them but are dropped), and pgvector 0.6 filters after the walk.
        branches.append(
            f"(SELECT e.id, e.question, FALSE, 1 - distance FROM near JOIN {table} e ON e.id = near.id "  # noqa: S608
            f"WHERE distance <= %s AND {servable} ORDER BY distance, {ties} LIMIT %s)"
        )
        values += [1.0 - floor, *params, max(1, limit)]
        branches.append(
            f"(SELECT {_CROWDED}, '', FALSE, 0.0::float8 "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM near WHERE distance > %s))"
        )
        values += [1.0 - floor]
    elif vector is not None:
        # Every entry compared. The distance test comes first among the conditions (the servable
        # checks are subqueries, the planner runs them last), so the chunk and flag checks run
        # only for entries near enough to be served. Ordered by similarity, an order the HNSW
        # index cannot produce, so the planner cannot walk it again.
        branches.append(
            f"(SELECT e.id, e.question, FALSE, 1 - (e.embedding <=> %s::vector) AS similarity "  # noqa: S608
            f"FROM {table} e WHERE (e.embedding <=> %s::vector) <= %s AND {servable} "
            f"ORDER BY similarity DESC, {ties} LIMIT %s)"
        )
        values += [literal, literal, 1.0 - floor, *params, max(1, limit)]
    return head + " UNION ALL ".join(branches), values


def _candidates(
    scope: _Scope, digest: str | None, vector: Sequence[float] | None, *, floor: float, limit: int
) -> list[Candidate]:
    """In one statement: the servable entry whose question hash is `digest` (the newest approved
    one first), then, given the question's vector, up to `limit` nearest servable entries at
    or above cosine `floor`, nearest first. Only ids and questions are read: the entry that is
    served is loaded by `_load`, and a miss reads no more.

    The nearest are sought among the NEAREST_WALK nearest entries of the whole table, found
    through its HNSW index: 1.8 ms at 5,000 entries, where comparing every entry took 8.9 and
    grows with the cache. When no entry of the walk lies beyond the floor (other assistants' or
    scopes' copies of a popular question crowding it, say, or a table smaller than the walk),
    servable entries may lie beyond it, and a second statement compares every entry, unless
    the answer is known already: an exact hit, or `limit` servable entries from the walk,
    which are nearer than anything beyond it.
    """
    if digest is None and vector is None:
        return []
    sql, params = _candidates_sql(scope, digest, vector, floor=floor, limit=limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    crowded = any(pk == _CROWDED for pk, *_ in rows)
    rows = [row for row in rows if row[0] != _CROWDED]
    if crowded and not any(row[2] for row in rows) and len(rows) < max(1, limit):
        sql, params = _candidates_sql(scope, None, vector, floor=floor, limit=limit, exhaustive=True)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    return [Candidate(int(pk), str(question), bool(exact), float(sim)) for pk, question, exact, sim in rows]


def _find_exact(scope: _Scope, digest: str) -> Candidate | None:
    """The servable entry whose question hash is `digest`: one light statement, no embedding."""
    found = _candidates(scope, digest, None, floor=1.0, limit=0)
    return found[0] if found else None


def _load(entry_id: int) -> CachedAnswer | None:
    """The entry with its answer, the answer's prompt and assistant, in one query."""
    return _entries().filter(pk=entry_id).first()


@dataclass(frozen=True)
class MatchRule:
    """When a cached question answers a new one (calibrated by bench/cache_calibrate.py).

    A candidate is accepted when its cosine similarity is at least `similarity`, or at least
    `floor` and the two questions share enough content words (`word_overlap`, Jaccard of
    stemmed content words, question words, negations and numbers) at least `min_overlap`.
    The lexical check is independent of the embedding: it rejects near neighbours that ask
    something else ("what do I get paid" against "when do I get paid").
    """

    similarity: float
    floor: float
    min_overlap: float
    candidates: int = 5

    @classmethod
    def from_settings(cls) -> MatchRule:
        return cls(
            similarity=settings.ANSWER_CACHE_SIMILARITY,
            floor=min(settings.ANSWER_CACHE_SIMILARITY_FLOOR, settings.ANSWER_CACHE_SIMILARITY),
            min_overlap=settings.ANSWER_CACHE_MIN_WORD_OVERLAP,
            candidates=settings.ANSWER_CACHE_CANDIDATES,
        )

    def accepts(self, *, similarity: float, question: str, cached_question: str) -> bool:
        if similarity >= self.similarity:
            return True
        if similarity < self.floor:
            return False
        return word_overlap(question, cached_question) >= self.min_overlap

    def choose(self, question: str, candidates: Sequence[Candidate]) -> Candidate | None:
        """The nearest candidate the rule accepts (an exact match always), or None."""
        for candidate in candidates:
            if candidate.exact or self.accepts(
                similarity=candidate.similarity, question=question, cached_question=candidate.question
            ):
                return candidate
        return None


def _count(assistant: Assistant, kind: str | None, entry_id: int | None = None) -> None:
    """One more lookup for today (and a hit of `kind` on `entry_id`), in one statement."""
    table, entries = CacheCounter._meta.db_table, CachedAnswer._meta.db_table
    now = timezone.now()
    bump = (
        f"WITH bump AS (UPDATE {entries} SET hits = hits + 1, last_hit_at = %s WHERE id = %s) "  # noqa: S608
        if entry_id is not None
        else ""
    )
    sql = (
        f"{bump}INSERT INTO {table} (day, assistant_id, lookups, exact_hits, semantic_hits) "  # noqa: S608
        "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (day, assistant_id) DO UPDATE SET "
        f"lookups = {table}.lookups + 1, exact_hits = {table}.exact_hits + EXCLUDED.exact_hits, "
        f"semantic_hits = {table}.semantic_hits + EXCLUDED.semantic_hits"
    )
    params: list[Any] = [now, entry_id] if entry_id is not None else []
    params += [timezone.localdate(now), assistant.pk, int(kind == "exact"), int(kind == "semantic")]
    own_transaction = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if own_transaction:
            # Statistics, counted while the user waits: commit without waiting for the disk (a
            # PostgreSQL crash within a fraction of a second could lose a count, nothing else).
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(sql, params)


@dataclass(frozen=True)
class _Lookup:
    """What both lookups start from: where entries may come from, and when the lookup began."""

    scope: _Scope
    started: float


def _prepare(
    user: object, assistant: Assistant, question: str, history: History, readable: Sequence[int] | None
) -> _Lookup | None:
    """The lookup's scope, or None when nothing can be served (the cache off, an empty question,
    no readable collection). `readable` is knowledge.selectors.readable_collection_ids(user, the
    assistant's collections) when the caller already has it."""
    started = time.perf_counter()
    if not settings.ANSWER_CACHE_ENABLED or not normalize_question(question):
        return None
    if readable is None:
        readable = _readable_ids(user, assistant)
    if not readable:
        return None
    scope = _Scope(
        assistant_id=assistant.pk,
        context_key=context_key(question, history),
        now=timezone.now(),
        readable=list(readable),
    )
    return _Lookup(scope=scope, started=started)


def _hit(found: Candidate | None, started: float) -> CacheHit | None:
    entry = _load(found.entry_id) if found is not None else None
    if entry is None or found is None:
        return None
    kind, similarity = ("exact", 1.0) if found.exact else ("semantic", found.similarity)
    return CacheHit(
        entry=entry,
        answer=entry.answer,
        kind=kind,
        similarity=round(similarity, 4),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def cache_lookup_exact(
    *,
    user: object,
    assistant: Assistant,
    question: str,
    history: History,
    readable: Sequence[int] | None = None,
) -> CacheHit | None:
    """The servable entry whose question is this one up to `answer_cache.text.exact_key`, in the
    same assistant and context key, or None. Nothing is embedded and nothing counted."""
    lookup = _prepare(user, assistant, question, history, readable)
    if lookup is None:
        return None
    return _hit(_find_exact(lookup.scope, text_hash(exact_key(question))), lookup.started)


def cache_lookup_similar(
    *,
    user: object,
    assistant: Assistant,
    question: str,
    history: History,
    query_vector: Sequence[float],
    try_exact: bool = True,
    readable: Sequence[int] | None = None,
) -> CacheHit | None:
    """The nearest servable entry `MatchRule` accepts for the question's vector (as `query_text`
    builds it): cosine alone at or above settings.ANSWER_CACHE_SIMILARITY, or above
    ANSWER_CACHE_SIMILARITY_FLOOR with shared content words; or None. With `try_exact`, an exact
    match is looked for in the same statement and preferred. Nothing is counted."""
    lookup = _prepare(user, assistant, question, history, readable)
    if lookup is None:
        return None
    rule = MatchRule.from_settings()
    digest = text_hash(exact_key(question)) if try_exact else None
    candidates = _candidates(lookup.scope, digest, query_vector, floor=rule.floor, limit=rule.candidates)
    return _hit(rule.choose(question, candidates), lookup.started)


def cache_lookup(
    *,
    user: object,
    assistant: Assistant,
    question: str,
    history: History,
    query_vector: Sequence[float] | None = None,
    readable: Sequence[int] | None = None,
) -> CacheHit | None:
    """An earlier answer this user may be given for `question`, counted: the exact key first (so
    an exact hit never waits for an embedding), then the similar lookup, embedding the question
    here when no `query_vector` is given. For callers that serve whatever it finds."""
    started = time.perf_counter()
    if not settings.ANSWER_CACHE_ENABLED or not normalize_question(question):
        return None
    if readable is None:
        readable = _readable_ids(user, assistant)
    arguments: dict[str, Any] = {
        "user": user,
        "assistant": assistant,
        "question": question,
        "history": history,
        "readable": readable,
    }
    hit = cache_lookup_exact(**arguments) if readable and query_vector is None else None
    if hit is None and readable:
        try:
            vector = query_vector if query_vector is not None else embed_query(question, history)
        except provider.ProviderError as exc:
            logger.warning("cache lookup skipped: %s", exc)
        else:
            hit = cache_lookup_similar(**arguments, query_vector=vector, try_exact=query_vector is not None)
    if hit is not None:
        hit = dataclasses.replace(hit, latency_ms=(time.perf_counter() - started) * 1000)
    cache_lookup_count(assistant=assistant, hit=hit)
    return hit


def cache_lookup_count(*, assistant: Assistant, hit: CacheHit | None) -> None:
    """Count a lookup made with `count=False`: a miss, or the hit that was served."""
    if hit is None:
        _count(assistant, None)
        return
    _count(assistant, hit.kind, hit.entry.pk)
    hit.entry.hits += 1
    hit.entry.last_hit_at = timezone.now()

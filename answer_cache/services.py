"""The RAG-aware answer cache: store good answers, serve them again, drop them when stale.

Where it is called (assistant/pipeline.py and assistant/services.py):

- `cache_lookup(..., exact_only=True)` in `answer_events` right after redaction, before anything
  is embedded (skipped when the message held personal data); then `cache_lookup(user=...,
  assistant=..., question=..., history=..., query_vector=...)` after retrieval and the input
  guardrails, with the vector retrieval used. Only redacted questions are looked up and cached.
  A hit becomes a new Answer with `CacheHit.answer_fields()` (cache_hit=True, cached_from=the
  source answer), shown with the earlier question and its date; no model is called.
- `cache_store(answer=..., query_vector=..., history=...)` once an Answer is saved and committed,
  with the vector retrieval used: the assistant's `answer_bookkeep` task, queued on commit by
  `assistant.services.answer_bookkeeping_enqueue`, so the user does not wait for it (it reads
  answer.pk, the message for the conversation history, and the answer's retrieved chunks). It
  decides itself whether the answer may be cached, so it can be called for every answer. The
  full lookup after retrieval passes `semantic_only=True` when the exact key was already tried.
  Staff approval (the review queue) calls `cache_store(answer=..., approved=True)`; a user's flag
  on a served copy drops the entry.
- `cache_purge()` runs from the `answer_cache.tasks.purge_answer_cache` beat task;
  `cache_invalidate(document_ids=...)` drops entries built from given documents at once.

Correctness does not depend on the purge: a lookup serves an entry only while every chunk it was
built from still exists (re-indexing a document replaces its chunks, deleting it removes them)
and the asking user may read every one of them, checked in the lookup's SQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.formats import date_format

from answer_cache.models import CacheCounter, CachedAnswer
from answer_cache.text import exact_key, normalize_question, text_hash, word_overlap
from assistant.models import Answer, Assistant, Flag
from gateway import provider
from knowledge import selectors as knowledge
from knowledge.models import Chunk

logger = logging.getLogger(__name__)

History = Sequence[tuple[str, str]]
NOTICE_QUESTION_CHARS = 120


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


def source_question_for(answer: Answer, reader: object) -> str | None:
    """The earlier question a cache hit answered, if `reader` may see it; else None.

    Someone else's question is theirs: it is named only when it was the reader's own, or when
    staff approved that answer for everyone (the cache entry is marked approved). Otherwise the
    reader learns only that a similar question was answered before, and when.
    """
    source = answer.cached_from if answer.cache_hit else None
    if source is None:
        return None
    if source.user_id is not None and source.user_id == getattr(reader, "pk", None):
        return source.question
    if CachedAnswer.objects.filter(answer=source, approved=True).exists():
        return source.question
    return None


# --- keys ------------------------------------------------------------------------------------


def is_follow_up(question: str, history: History) -> bool:
    """A question that needs the one before it to be understood; retrieval searches them together."""
    from assistant import grounding

    return bool(history) and len(grounding.content_words(question)) < 4


def context_key(question: str, history: History) -> str:
    """Empty for a question that stands alone; the previous question's hash for a follow-up.

    It follows the pipeline's own rule (assistant.pipeline.retrieval_query): a follow-up is
    retrieved together with the previous question, so "and for GPL?" after two different
    questions are two different keys; a full question retrieves the same sources in any
    conversation and shares its key.
    """
    if not is_follow_up(question, history):
        return ""
    return text_hash(normalize_question(history[-1][0]))


def query_text(question: str, history: History) -> str:
    """What is embedded: the text retrieval embeds, so the pipeline's vector can be shared."""
    if is_follow_up(question, history):
        return f"{history[-1][0]} {question}"
    return question


def _embed(question: str, history: History) -> list[float]:
    return list(provider.embed([query_text(question, history)], kind="query").vectors[0])


# --- store -----------------------------------------------------------------------------------


def cacheable_reason(answer: Answer, *, approved: bool = False) -> str:
    """Why `answer` may not be cached, or "" when it may.

    Abstentions, fallbacks and cache hits are never cached. Otherwise staff approval is enough;
    without it the answer must have passed the grounding check and carry no flag.
    """
    if answer.pk is None:
        return "not saved"
    if answer.cache_hit or answer.cached_from_id is not None:
        return "a cache hit"
    if answer.replay_of_id is not None:
        return "a staff replay"
    if answer.user_id is None:
        return "no asker, so no known permissions"
    if answer.abstained:
        return "abstained"
    if answer.fallback:
        return "a fallback"
    if not _chunk_ids(answer)[0]:
        return "no sources"
    if approved:
        return ""
    if answer.grounded is not True:
        return "not grounded"
    if answer.flagged or Flag.objects.filter(answer=answer).exists():
        return "flagged"
    return ""


def _chunk_ids(answer: Answer) -> tuple[list[int], list[int], list[int]]:
    """(retrieved chunk ids, cited chunk ids, document ids) of an answer."""
    retrieved: list[int] = []
    cited: list[int] = []
    documents: list[int] = []
    for rows, into in ((answer.retrieved or [], retrieved), (answer.citations or [], cited)):
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("chunk_id"), int):
                into.append(row["chunk_id"])
                if isinstance(row.get("document_id"), int):
                    documents.append(row["document_id"])
    chunks = list(dict.fromkeys([*retrieved, *cited]))
    return chunks, list(dict.fromkeys(cited)), sorted(set(documents))


def _history_of(answer: Answer) -> list[tuple[str, str]]:
    if answer.message_id is None:
        return []
    from assistant.selectors import history_before

    return history_before(answer.message)  # type: ignore[arg-type]


@transaction.atomic
def cache_store(
    *,
    answer: Answer,
    approved: bool = False,
    history: History | None = None,
    query_vector: Sequence[float] | None = None,
) -> CachedAnswer | None:
    """Cache a saved answer if it qualifies (see `cacheable_reason`); returns the entry or None.

    `history` defaults to the conversation before the answer's message. `query_vector` is the
    embedding retrieval used, if the caller has it; otherwise the question is embedded here.
    Storing an answer again refreshes its entry; a newer answer to the same question in the same
    context replaces the older one.
    """
    if not settings.ANSWER_CACHE_ENABLED:
        return None
    reason = cacheable_reason(answer, approved=approved)
    if reason:
        logger.debug("answer %s not cached: %s", answer.pk, reason)
        return None
    question = normalize_question(answer.question)
    if not question:
        return None
    history = list(history) if history is not None else _history_of(answer)
    try:
        vector = list(query_vector) if query_vector is not None else _embed(answer.question, history)
    except provider.ProviderError as exc:
        logger.warning("answer %s not cached: %s", answer.pk, exc)
        return None
    chunk_ids, cited, document_ids = _chunk_ids(answer)
    key = context_key(answer.question, history)
    digest = text_hash(exact_key(answer.question))
    scope = scope_key(answer.user, answer.assistant)
    CachedAnswer.objects.filter(
        assistant_id=answer.assistant_id, context_key=key, question_hash=digest, scope_key=scope
    ).exclude(answer=answer).delete()
    existing = CachedAnswer.objects.filter(answer=answer).first()
    entry, _ = CachedAnswer.objects.update_or_create(
        answer=answer,
        defaults={
            "assistant_id": answer.assistant_id,
            "question": question,
            "question_hash": digest,
            "context_key": key,
            "scope_key": scope,
            "embedding": vector,
            "chunk_ids": chunk_ids,
            "cited_chunk_ids": cited,
            "document_ids": document_ids,
            "approved": approved or bool(existing and existing.approved),
            "expires_at": timezone.now() + timedelta(seconds=settings.ANSWER_CACHE_TTL_SECONDS),
        },
    )
    return entry


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


def scope_key(user: object, assistant: Assistant) -> str:
    """Which of the assistant's collections `user` may read, as a hash (see CachedAnswer.scope_key)."""
    collections = list(assistant.collections.values_list("pk", flat=True)) or None
    return _readable_key(knowledge.readable_collection_ids(user, collections))


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


def cache_lookup(
    *,
    user: object,
    assistant: Assistant,
    question: str,
    history: History,
    query_vector: Sequence[float] | None = None,
    vector_out: list[list[float]] | None = None,
    exact_only: bool = False,
    semantic_only: bool = False,
    readable: Sequence[int] | None = None,
    count: bool = True,
) -> CacheHit | None:
    """An earlier answer this user may be given for `question`, or None.

    First the exact key (`answer_cache.text.exact_key`, no embedding needed), then the nearest
    few cached questions by cosine similarity, the nearest one `MatchRule` accepts (cosine alone
    at or above settings.ANSWER_CACHE_SIMILARITY, or above ANSWER_CACHE_SIMILARITY_FLOOR with
    shared content words); both within the same
    assistant and context key, unexpired, and only entries whose every source chunk still exists
    and is readable by `user` within the assistant's collections. `query_vector` is the
    question's embedding if the caller has one (as `query_text` builds it); a vector embedded
    here is appended to `vector_out` for reuse by retrieval. `exact_only` tries the exact text
    alone and counts no miss: the pipeline's fast path before it embeds anything, followed by a
    full lookup when it misses, which passes `semantic_only` to skip the exact key it already
    tried. `readable` is knowledge.selectors.readable_collection_ids(user,
    the assistant's collections) when the caller already has it. Without `count` the lookup is
    not counted in the statistics: the caller counts it with `cache_lookup_count` once it knows
    whether the answer is served (the pipeline looks up before the input checks decide).
    """
    started = time.perf_counter()
    if not settings.ANSWER_CACHE_ENABLED:
        return None
    normalized = normalize_question(question)
    if not normalized:
        return None
    if readable is None:
        collections = list(assistant.collections.values_list("pk", flat=True)) or None
        readable = knowledge.readable_collection_ids(user, collections)
    scope = _Scope(
        assistant_id=assistant.pk,
        context_key=context_key(question, history),
        now=timezone.now(),
        readable=list(readable),
    )
    if not scope.readable:
        if count:
            _count(assistant, None)
        return None
    rule = MatchRule.from_settings()
    found: Candidate | None = None
    digest = None if semantic_only else text_hash(exact_key(question))
    if digest is not None and (query_vector is None or exact_only):
        # The exact key first, so an exact hit never waits for an embedding.
        found, digest = _find_exact(scope, digest), None
        if found is None and exact_only:
            return None
    if found is None:
        vector = query_vector
        if vector is None:
            try:
                vector = _embed(question, history)
            except provider.ProviderError as exc:
                logger.warning("cache lookup skipped: %s", exc)
                if count:
                    _count(assistant, None)
                return None
            if vector_out is not None:
                vector_out.append(list(vector))
        # With the vector at hand, the exact key (unless already tried) and the nearest together.
        candidates = _candidates(scope, digest, vector, floor=rule.floor, limit=rule.candidates)
        found = rule.choose(question, candidates)
    entry = _load(found.entry_id) if found is not None else None
    if entry is None or found is None:
        if count:
            _count(assistant, None)
        return None
    kind, similarity = ("exact", 1.0) if found.exact else ("semantic", found.similarity)
    hit = CacheHit(
        entry=entry,
        answer=entry.answer,
        kind=kind,
        similarity=round(similarity, 4),
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    if count:
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


# --- invalidation ----------------------------------------------------------------------------


def cache_invalidate(
    *,
    document_ids: Sequence[int] | None = None,
    assistant: Assistant | None = None,
    answer: Answer | None = None,
    answer_id: int | None = None,
) -> int:
    """Drop entries built from any of `document_ids`, of `assistant`, or of `answer`; the count.

    With no argument nothing is dropped (use `cache_clear` for everything).
    """
    entries = CachedAnswer.objects.all()
    if document_ids is None and assistant is None and answer is None and answer_id is None:
        return 0
    if answer_id is not None:
        entries = entries.filter(answer_id=answer_id)
    if document_ids is not None:
        entries = entries.filter(document_ids__overlap=list(document_ids))
    if assistant is not None:
        entries = entries.filter(assistant=assistant)
    if answer is not None:
        entries = entries.filter(answer=answer)
    deleted, _ = entries.delete()
    return deleted


def cache_clear() -> int:
    deleted, _ = CachedAnswer.objects.all().delete()
    return deleted


def cache_purge(*, now: datetime | None = None) -> int:
    """Delete entries that can no longer be served to anyone; returns how many.

    Expired ones, ones with a source chunk that no longer exists (its document was re-indexed
    or deleted), and unapproved ones whose answer was flagged since.
    """
    table, answers, flags, chunks = (
        CachedAnswer._meta.db_table,
        Answer._meta.db_table,
        Flag._meta.db_table,
        Chunk._meta.db_table,
    )
    sql = (
        f"DELETE FROM {table} e WHERE e.expires_at <= %(now)s "  # noqa: S608
        f"OR EXISTS (SELECT 1 FROM unnest(e.chunk_ids) AS wanted(id) WHERE NOT EXISTS "
        f"(SELECT 1 FROM {chunks} c WHERE c.id = wanted.id)) "
        f"OR (NOT e.approved AND (EXISTS (SELECT 1 FROM {answers} a WHERE a.id = e.answer_id "
        f"AND a.flagged) OR EXISTS (SELECT 1 FROM {flags} f WHERE f.answer_id = e.answer_id)))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"now": now or timezone.now()})
        return int(cursor.rowcount)

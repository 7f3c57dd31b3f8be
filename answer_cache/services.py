"""The RAG-aware answer cache: store good answers, serve them again, drop them when stale.

- Store: `cache_store(answer=..., query_vector=..., history=...)` caches a saved answer when it
  qualifies (`cacheable_reason`: grounded, unflagged, with sources, not an abstention, fallback,
  replay or cache hit; staff approval is enough otherwise), under its normalised question, the
  context key of its conversation, the scope of collections its asker could read, and the
  vector retrieval searched with. Storing again refreshes the entry; a newer answer to the same
  question in the same context and scope replaces the older one. Only redacted questions are
  stored.
- Look up: `cache_lookup_exact`, `cache_lookup_similar` and `cache_lookup_count`, in
  `answer_cache.lookup` (re-exported here). A hit becomes a new Answer from
  `CacheHit.answer_fields()` (cache_hit=True, cached_from=the source answer), shown with the
  earlier question (`source_question_for`) and its date.
- Drop: `cache_invalidate` for given documents, an assistant or an answer at once (a flag on a
  served copy drops its source's entry); `cache_purge`, from the `purge_answer_cache` beat task,
  deletes what can no longer be served to anyone.

Correctness does not depend on the purge: a lookup serves an entry only while every chunk it was
built from still exists (re-indexing a document replaces its chunks, deleting it removes them)
and the asking user may read every one of them, checked in the lookup's SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from answer_cache.lookup import CacheHit as CacheHit
from answer_cache.lookup import Candidate as Candidate
from answer_cache.lookup import MatchRule as MatchRule
from answer_cache.lookup import cache_lookup as cache_lookup
from answer_cache.lookup import cache_lookup_count as cache_lookup_count
from answer_cache.lookup import cache_lookup_exact as cache_lookup_exact
from answer_cache.lookup import cache_lookup_similar as cache_lookup_similar
from answer_cache.lookup import embed_query
from answer_cache.lookup import hit_notice as hit_notice
from answer_cache.lookup import scope_key as scope_key
from answer_cache.models import CachedAnswer
from answer_cache.text import History, exact_key, normalize_question, text_hash
from answer_cache.text import context_key as context_key
from assistant.models import Answer, Assistant, Flag
from gateway import provider
from knowledge.models import Chunk

logger = logging.getLogger(__name__)


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
        vector = list(query_vector) if query_vector is not None else embed_query(answer.question, history)
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

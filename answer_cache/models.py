from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from pgvector.django import HnswIndex, VectorField


class CachedAnswer(models.Model):
    """An answer that may be served again for the same or a closely similar question.

    The key is the assistant, the context key (empty for a question that stands alone) and
    either the normalised question's hash (exact match) or its embedding (nearest neighbour).
    `chunk_ids` are every chunk the answer was made from: the entry is served only while all of
    them still exist (re-indexing or deleting a document replaces or removes its chunks) and
    the asking user may read every one of them.
    """

    assistant = models.ForeignKey("assistant.Assistant", on_delete=models.CASCADE, related_name="+")
    answer = models.ForeignKey(
        "assistant.Answer", on_delete=models.CASCADE, related_name="+", help_text="The answer served."
    )
    question = models.TextField(help_text="The normalised question.")
    question_hash = models.CharField(max_length=64)
    context_key = models.CharField(
        max_length=64, blank=True, help_text="Hash of the conversation context of a follow-up; empty if none."
    )
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS)
    scope_key = models.CharField(
        max_length=64,
        blank=True,
        help_text="A hash of the collections the asker could read: an answer is served again only to "
        "people who read the same ones, so nobody gets an answer made from less than they may see.",
    )
    chunk_ids = ArrayField(models.BigIntegerField(), default=list, help_text="Retrieved chunks.")
    cited_chunk_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    document_ids = ArrayField(models.BigIntegerField(), default=list)
    approved = models.BooleanField(default=False, help_text="Staff approved it for reuse.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["answer"], name="cachedanswer_one_per_answer")]
        indexes = [
            models.Index(fields=["assistant", "context_key", "question_hash"], name="cachedanswer_exact"),
            models.Index(fields=["expires_at"], name="cachedanswer_expires"),
            GinIndex(fields=["document_ids"], name="cachedanswer_documents"),
            HnswIndex(
                name="cachedanswer_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"Cached answer {self.answer_id}: {self.question[:40]}"


class CacheCounter(models.Model):
    """Lookups per assistant and day: the denominator of the hit rate (hits are Answer rows)."""

    day = models.DateField()
    assistant = models.ForeignKey("assistant.Assistant", on_delete=models.CASCADE, related_name="+")
    lookups = models.PositiveIntegerField(default=0)
    exact_hits = models.PositiveIntegerField(default=0)
    semantic_hits = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["day", "assistant"], name="cachecounter_one_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.assistant_id}: {self.lookups} lookups"

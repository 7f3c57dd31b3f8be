from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

from common.users import AnyUser

# English stemming for recall on English text, plus the language-neutral "simple" configuration
# so words in any other language still match exactly.
SEARCH_CONFIGS = ("english", "simple")
# The text both configurations index. PostgreSQL's parser keeps a run of Chinese or Japanese
# characters as one word (a whole clause), which no question matches; this SQL function
# (migration 0007) rewrites each such run as its overlapping character pairs, as
# common.text.terms cuts them, and leaves text without CJK characters as it is.
CJK_PAIRS_FUNCTION = "groundwork_cjk_pairs"


class CollectionQuerySet(models.QuerySet["Collection"]):
    def readable_by(self, user: AnyUser) -> CollectionQuerySet:
        """Collections `user` may read: public ones, ones shared with them or their groups.

        Superusers read everything; anonymous users read only public collections.
        """
        if not getattr(user, "is_authenticated", False):
            return self.filter(is_public=True)
        if getattr(user, "is_superuser", False):
            return self.all()
        return self.filter(
            models.Q(is_public=True) | models.Q(reader_users=user) | models.Q(reader_groups__user=user)
        ).distinct()


class Collection(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    is_public = models.BooleanField(default=False, help_text="Every signed-in user may read it.")
    reader_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="readable_collections"
    )
    reader_groups = models.ManyToManyField(Group, blank=True, related_name="readable_collections")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = CollectionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        PDF = "pdf", "PDF"
        DOCX = "docx", "Word"
        HTML = "html", "HTML"
        MARKDOWN = "markdown", "Markdown"
        TEXT = "text", "Text"
        UNKNOWN = "", "Not yet detected"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to="documents/%Y/%m/")
    size_bytes = models.BigIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=Kind.choices, blank=True, default=Kind.UNKNOWN)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, help_text="Why ingestion failed, in words a person understands.")
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent of chunks embedded.")
    # What parsing left out of the indexed version ("2 hidden passages ... were left out"), kept so
    # whoever uploaded it can see why some of the file's text is not searchable.
    parse_notes = models.JSONField(
        default=list, blank=True, help_text="What parsing left out of the indexed text, one sentence each."
    )
    version = models.PositiveIntegerField(default=1)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    page_count = models.PositiveIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life while processing."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "filename"], name="document_unique_filename"),
        ]
        indexes = [
            models.Index(fields=["collection", "sha256"]),
            models.Index(fields=["status", "heartbeat_at"]),
            # Every search sums its reader's chunks per collection (knowledge.selectors._plan):
            # with chunk_count in the index that is an index-only scan (20,000 documents: 14 ->
            # 4 ms, bench/chat_overhead.py --scale-rows).
            models.Index(fields=["collection"], include=["chunk_count"], name="document_collection_chunks"),
        ]

    def __str__(self) -> str:
        return f"{self.title} (v{self.version})"

    @property
    def is_terminal(self) -> bool:
        return self.status in {self.Status.READY, self.Status.FAILED}


# The HNSW graph's links per node and build-time candidate list, for the table's index and each
# collection's own (knowledge.indexes.collection_indexes_sync). pgvector's defaults (16, 64) built
# a graph in which, at a million clustered chunks, no ef_search found more than 0.92 of the true
# ten nearest; with (32, 128) ef_search 100 finds 0.96 and 200 finds 0.98, at a third of the
# latency, for a build three times as long (bench/search_scale.py, docs/benchmarks-knowledge.md).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Denormalised from the document so the permission filter is a plain indexed column.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()
    text = models.TextField()
    heading_path = models.JSONField(default=list, blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    token_count = models.PositiveIntegerField()
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS)
    search_vector = models.GeneratedField(
        expression=SearchVector(
            models.Func("text", function=CJK_PAIRS_FUNCTION, output_field=models.TextField()),
            config=SEARCH_CONFIGS[0],
        )
        + SearchVector(
            models.Func("text", function=CJK_PAIRS_FUNCTION, output_field=models.TextField()),
            config=SEARCH_CONFIGS[1],
        ),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="chunk_unique_position"),
        ]
        indexes = [
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=HNSW_M,
                ef_construction=HNSW_EF_CONSTRUCTION,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.document.title} #{self.position}"

    @property
    def heading(self) -> str:
        return " › ".join(self.heading_path)

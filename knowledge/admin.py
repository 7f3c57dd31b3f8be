from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from knowledge import services
from knowledge.models import Chunk, Collection, Document


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin[Collection]):
    list_display = ["name", "is_public", "document_count", "reader_count", "created_at"]
    list_filter = ["is_public"]
    search_fields = ["name", "description"]
    filter_horizontal = ["reader_users", "reader_groups"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Collection]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                documents_total=Count("documents", distinct=True),
                readers_total=Count("reader_users", distinct=True),
            )
        )

    @admin.display(description="Documents", ordering="documents_total")
    def document_count(self, obj: Collection) -> int:
        return getattr(obj, "documents_total", 0)

    @admin.display(description="Named readers", ordering="readers_total")
    def reader_count(self, obj: Collection) -> int:
        return getattr(obj, "readers_total", 0)

    # Django's confirmation page would list every chunk (a query each) and ask for permission to
    # delete chunks, which are read-only here; counts say enough.
    def get_deleted_objects(
        self, objs: Sequence[Collection] | QuerySet[Collection], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        collections = list(objs)
        documents = Document.objects.filter(collection__in=collections)
        summary = [f"{c.name}: {_count(c.documents.count(), 'document')}" for c in collections]
        counts = {
            str(Collection._meta.verbose_name_plural): len(collections),
            str(Document._meta.verbose_name_plural): documents.count(),
            str(Chunk._meta.verbose_name_plural): Chunk.objects.filter(collection__in=collections).count(),
        }
        return summary, counts, set(), []

    # Deleting a collection cascades to its documents; go through the service so the stored
    # files go too.
    def delete_model(self, request: HttpRequest, obj: Collection) -> None:
        with transaction.atomic():
            for document in obj.documents.all():
                services.document_delete(document=document)
            obj.delete()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        for collection in queryset:
            self.delete_model(request, collection)


DOCUMENT_FIELDS: tuple[str, ...] = (
    "title",
    "collection",
    "filename",
    "file",
    "kind",
    "size_bytes",
    "sha256",
    "version",
    "status",
    "progress",
    "error",
    "parse_notes",
    "attempts",
    "heartbeat_at",
    "page_count",
    "token_count",
    "chunk_count",
    "uploaded_by",
    "created_at",
    "updated_at",
    "indexed_at",
)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin[Document]):
    list_display = ["title", "collection", "status", "version", "kind", "chunk_count", "created_at"]
    list_filter = ["status", "kind", "collection"]
    list_select_related = ["collection"]
    search_fields = ["title", "filename"]
    date_hierarchy = "created_at"
    actions = ["reindex"]
    # Files come in through the upload page or `manage.py ingest`, which hash, version and queue
    # them; here only the title is edited. The collection is fixed: chunks carry it too.
    fields = DOCUMENT_FIELDS
    readonly_fields = tuple(name for name in DOCUMENT_FIELDS if name != "title")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Re-index the selected documents")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        ids = services.document_reindex(document_ids=list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - len(ids)
        message = f"Queued {_count(len(ids), 'document')} for re-indexing."
        if skipped:
            message += f" {skipped} being indexed right now left as they are."
        self.message_user(request, message, messages.SUCCESS)

    # As for collections: counts, not a listing of every chunk.
    def get_deleted_objects(
        self, objs: Sequence[Document] | QuerySet[Document], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        documents = list(objs)
        counts = {
            str(Document._meta.verbose_name_plural): len(documents),
            str(Chunk._meta.verbose_name_plural): sum(d.chunk_count for d in documents),
        }
        return [f"{d} — {_count(d.chunk_count, 'chunk')}" for d in documents], counts, set(), []

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        services.document_delete(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        with transaction.atomic():
            for document in queryset:
                services.document_delete(document=document)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin[Chunk]):
    """Read-only: chunks are written by indexing only."""

    list_display = ["document", "position", "page", "token_count", "heading"]
    list_select_related = ["document"]
    list_filter = ["collection"]
    search_fields = ["text"]
    exclude = ["embedding"]
    readonly_fields = [
        "document",
        "collection",
        "position",
        "heading_path",
        "page",
        "char_start",
        "char_end",
        "token_count",
        "text",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

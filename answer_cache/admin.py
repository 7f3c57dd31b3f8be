from __future__ import annotations

from django.contrib import admin

from answer_cache.models import CacheCounter, CachedAnswer


@admin.register(CachedAnswer)
class CachedAnswerAdmin(admin.ModelAdmin[CachedAnswer]):
    list_display = ["question", "assistant", "approved", "hits", "last_hit_at", "created_at", "expires_at"]
    list_filter = ["approved", "assistant"]
    search_fields = ["question"]
    raw_id_fields = ["answer"]
    readonly_fields = ["question_hash", "context_key", "chunk_ids", "cited_chunk_ids", "document_ids"]
    exclude = ["embedding"]


@admin.register(CacheCounter)
class CacheCounterAdmin(admin.ModelAdmin[CacheCounter]):
    list_display = ["day", "assistant", "lookups", "exact_hits", "semantic_hits"]
    list_filter = ["assistant"]

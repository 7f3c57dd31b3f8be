from __future__ import annotations

import json
import textwrap
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.users import User
from gateway import provider
from knowledge import selectors
from knowledge.models import Collection
from knowledge.selectors import SearchHit, SearchPlan


def operator() -> User:
    """Whoever runs manage.py: they already hold the database credentials, so they read everything.

    An unsaved superuser rather than "the first superuser" so the command works on a fresh install
    and does not depend on which accounts exist; use --user to see what one person would get.
    """
    return User(username="manage.py", is_superuser=True)


class Command(BaseCommand):
    help = "Search the knowledge base from the shell and show the scores behind each result."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", nargs="+", help="The query; several words need no quotes.")
        parser.add_argument(
            "--collection", action="append", help="Only this collection (by name); may be repeated."
        )
        parser.add_argument("-k", type=int, default=8, help="How many results (default 8).")
        parser.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid")
        parser.add_argument("--json", action="store_true", help="Print a JSON array instead of a table.")
        parser.add_argument("--user", help="Search with this user's permissions (default: every collection).")

    def handle(self, *args: Any, **options: Any) -> None:
        query = " ".join(options["query"]).strip()
        if not query:
            raise CommandError("The query is empty.")
        if not 1 <= options["k"] <= 200:
            raise CommandError("-k must be between 1 and 200.")
        user: User = operator()
        if options["user"]:
            try:
                user = User.objects.get_by_natural_key(options["user"])
            except User.DoesNotExist as exc:
                raise CommandError(f"No user named {options['user']!r}.") from exc
        names: list[str] | None = options["collection"]
        if names:
            missing = sorted(
                set(names) - set(Collection.objects.filter(name__in=names).values_list("name", flat=True))
            )
            if missing:
                raise CommandError(f"No collection named {', '.join(map(repr, missing))}.")

        plans: list[SearchPlan] = []
        try:
            hits = selectors.search(
                user, query, options["k"], collections=names, mode=options["mode"], plan_out=plans
            )
        except provider.ProviderError as exc:
            hint = " (--mode keyword works without the embedding model)" if exc.retryable else ""
            raise CommandError(f"The embedding model failed: {exc}{hint}") from exc

        if options["json"]:
            self.stdout.write(json.dumps([_as_json(hit) for hit in hits], ensure_ascii=False, indent=2))
            return
        self._table(hits, plans[0] if plans else None)

    def _table(self, hits: list[SearchHit], plan: SearchPlan | None) -> None:
        if not hits:
            self.stdout.write("No results.")
        for rank, hit in enumerate(hits, start=1):
            chunk = hit.chunk
            where = f"p.{hit.page}" if hit.page else ""
            self.stdout.write(
                f"{rank:>2}. {hit.score:.4f}  vector {_score(hit.vector_score, hit.vector_rank)}  "
                f"keyword {_score(hit.keyword_score, hit.keyword_rank)}"
            )
            document = hit.document
            self.stdout.write(
                f"    {document.title} [{document.collection.name}] {document.filename} {where}".rstrip()
            )
            if chunk.heading:
                self.stdout.write(f"    § {chunk.heading}")
            snippet = textwrap.shorten(" ".join(chunk.text.split()), width=300, placeholder=" …")
            self.stdout.write(textwrap.indent(textwrap.fill(snippet, width=100), "    "))
        if plan is not None:
            strategy = plan.strategy or "none"
            self.stdout.write(
                f"plan: vector strategy {strategy}, {len(plan.collection_ids)} collection(s), "
                f"{'filtered' if plan.filtered else 'unfiltered'}"
            )


def _score(score: float | None, rank: int | None) -> str:
    return f"{score:.3f} (#{rank})" if score is not None and rank is not None else "—"


def _as_json(hit: SearchHit) -> dict[str, object]:
    chunk = hit.chunk
    return {
        "chunk_id": chunk.pk,
        "document_id": chunk.document_id,
        "collection": hit.document.collection.name,
        "filename": hit.document.filename,
        "title": hit.document.title,
        "score": hit.score,
        "vector_score": hit.vector_score,
        "vector_rank": hit.vector_rank,
        "keyword_score": hit.keyword_score,
        "keyword_rank": hit.keyword_rank,
        "page": hit.page,
        "heading": chunk.heading,
        "heading_path": hit.heading_path,
        "text": chunk.text,
    }

"""`manage.py guard --jsonl FILE`: run the input checks over lines of {"text": ...}.

Prints one JSON line per input line, in order: action, categories, scores, rewrite, reason and
the redacted text. A line that is not a JSON object with a string "text" gets a JSON line with
an "error" instead, and the run goes on. Embeddings are computed in batches.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import provider
from guardrails import checks

BATCH = 32


class Command(BaseCommand):
    help = 'Check lines of {"text": ...} (JSON Lines) with the input guardrails; print one JSON line each.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--jsonl", required=True, help="The input file, or - for standard input.")
        parser.add_argument("--scope", default="", help="An assistant scope, to enable the off-topic check.")
        parser.add_argument("--config", default="", help="Guardrail settings as a JSON object (GuardConfig).")
        parser.add_argument("--verbose", action="store_true", help="Include every check's verdict.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = checks.GuardConfig.from_dict(
                json.loads(options["config"]) if options["config"] else None
            )
        except (ValueError, json.JSONDecodeError) as exc:
            raise CommandError(f"--config: {exc}") from exc
        path = options["jsonl"]
        if path != "-" and not Path(path).is_file():
            raise CommandError(f"{path}: no such file")
        handle: IO[str] = sys.stdin if path == "-" else Path(path).open(encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            batch: list[tuple[int, dict[str, Any]]] = []
            for number, parsed in _lines(handle):
                if "error" in parsed:
                    self._flush(batch, options, config)
                    batch = []
                    self._write({"line": number, **parsed})
                    continue
                batch.append((number, parsed))
                if len(batch) >= BATCH:
                    self._flush(batch, options, config)
                    batch = []
            self._flush(batch, options, config)
        finally:
            if handle is not sys.stdin:
                handle.close()

    def _flush(
        self, batch: list[tuple[int, dict[str, Any]]], options: dict[str, Any], config: checks.GuardConfig
    ) -> None:
        if not batch:
            return
        vectors: list[list[float] | None] = [None] * len(batch)
        loaded = checks.models() if config.classifiers else checks.Models()
        if loaded.harm or loaded.injection or (config.topic and options["scope"]):
            texts = [checks.sanitize(record["text"], config) for _, record in batch]
            try:
                vectors = list(provider.embed(texts, kind="query").vectors)
            except provider.ProviderError as exc:
                self.stderr.write(f"embedding failed ({exc}); checking with rules only")
        for (number, record), vector in zip(batch, vectors, strict=True):
            scope = record["scope"] if isinstance(record.get("scope"), str) else str(options["scope"])
            result = checks.check_input(record["text"], scope=scope, query_vector=vector, config=config)
            line: dict[str, Any] = {"line": number}
            if "id" in record:
                line["id"] = record["id"]
            payload = result.as_json()
            if not options["verbose"]:
                payload.pop("verdicts")
            line.update(payload)
            line["text"] = result.text
            self._write(line)

    def _write(self, record: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(record, ensure_ascii=False))


def _lines(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; a bad line yields {"error": ...}."""
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, {"error": f"not JSON: {exc.msg} at column {exc.colno}"}
            continue
        if not isinstance(record, dict):
            yield number, {"error": 'expected a JSON object with a "text" field'}
        elif not isinstance(record.get("text"), str):
            yield number, {"error": 'the "text" field is missing or not a string'}
        else:
            yield number, record

"""Health checks for /healthz: one entry per component, each ok or an error, with its latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, connections

from config.celery import app as celery_app
from gateway import provider


@dataclass(frozen=True)
class Check:
    ok: bool
    latency_ms: float
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "error",
            "latency_ms": round(self.latency_ms, 1),
            ("detail" if self.ok else "error"): self.detail,
        }


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version')")
        return f"PostgreSQL {cursor.fetchone()[0]}"


def _pgvector() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the vector extension is not installed: run manage.py migrate")
    return f"pgvector {row[0]}"


def _broker() -> str:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return f"{conn.transport_cls} reachable"


def _worker() -> str:
    # limit=1: return on the first reply instead of waiting out the timeout for more workers.
    replies = celery_app.control.ping(timeout=1.0, limit=1)
    if not replies:
        raise RuntimeError("no Celery worker answered a ping within 1 s")
    return f"{len(replies)} worker(s) answered"


def _chat_model() -> str:
    models = provider.served_models("chat")
    if settings.CHAT_MODEL not in models:
        raise RuntimeError(f"{settings.CHAT_MODEL} is not served (server lists: {', '.join(models[:5])})")
    return settings.CHAT_MODEL


HEALTH_PURPOSE = "health"


def _embeddings_model() -> str:
    with provider.purpose(HEALTH_PURPOSE):  # a probe, not usage: no ModelCall row per poll
        result = provider.embed(["health check"], kind="query")
    return f"{result.model}, {len(result.vectors[0])} dimensions"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _database,
    "pgvector": _pgvector,
    "broker": _broker,
    "worker": _worker,
    "chat_model": _chat_model,
    "embeddings_model": _embeddings_model,
}


def _timed(check: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # a health check reports every failure instead of raising it
        detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
    finally:
        connections.close_all()  # checks run in pool threads; do not leak their connections
    return Check(ok=ok, latency_ms=(time.perf_counter() - started) * 1000, detail=detail)


def run_checks() -> dict[str, Check]:
    """Every component's check, run concurrently so the slowest one sets the latency."""
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        futures = {name: pool.submit(_timed, check) for name, check in CHECKS.items()}
        return {name: future.result() for name, future in futures.items()}

"""`/v1/chat/completions` under concurrent clients, served by gunicorn, answered by the real model.

    python bench/api_load.py [--requests 48] [--clients 8] [--timeout 120] [--rounds plain,stream]
                             [--out FILE]

Ingests the small travel-policy document from ttft.py into `bench-api`, makes a reader user
with an API token, points the default assistant at the collection with min_similarity 0 (every
question reaches the model), starts gunicorn on 127.0.0.1:$WEB_PORT (2 workers, gthread, 8
threads) and fires the requests from a thread pool with the official openai client
(max_retries 0, so every failure is counted). One round without streaming, one with
stream=true (which also gives time to the first content chunk), each against a freshly started
gunicorn that is stopped when the round ends; the assistant's settings are restored at the end.

The local chat server (llama-cpp-python) answers one request at a time, so throughput is bound
by the model and latency by the queue in front of it; the figures show whether the web tier
adds errors or time on top.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REPO_ROOT,
    collection_reset,
    emit,
    environment,
    latency_summary,
    log,
    setup_django,
)
from bench.ttft import DOCUMENT, QUESTIONS  # noqa: E402

COLLECTION = "bench-api"
USERNAME = "bench-api-reader"


def ingest() -> Any:
    from django.core.files.base import ContentFile

    from knowledge import services
    from knowledge.models import Document

    collection = collection_reset(COLLECTION)
    outcome = services.document_upload(
        collection=collection,
        file=ContentFile(DOCUMENT.encode(), name="travel-policy.md"),
        filename="travel-policy.md",
        title="Travel policy",
        enqueue=False,
    )
    services.document_ingest(document_id=outcome.document.pk)
    document = Document.objects.get(pk=outcome.document.pk)
    if document.status != Document.Status.READY:
        raise SystemExit(f"ingest failed: {document.status} {document.error}")
    return collection


def start_gunicorn(port: int) -> subprocess.Popen[bytes]:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [
        str(gunicorn), "config.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--worker-class", "gthread", "--threads", "8",
    ]  # fmt: skip
    log("starting " + " ".join(command))
    log_file = (REPO_ROOT / "bench" / "results" / "api_load-gunicorn.log").open("ab")
    # Its own process group, so that stopping it can never leave workers behind.
    return subprocess.Popen(  # noqa: S603
        command,
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )


def wait_ready(client: Any, server: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(
                f"gunicorn exited with {server.returncode}; see bench/results/api_load-gunicorn.log"
            )
        try:
            client.with_options(timeout=5).models.list()
            return
        except Exception:  # noqa: BLE001, S112 - not up yet
            time.sleep(0.5)
    raise SystemExit("gunicorn did not answer /v1/models in time")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn: its master waits up to 30 s (graceful_timeout) for busy workers, then the
    whole process group is killed, so no worker keeps a model request going after the run."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=45)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def one_request(client: Any, question: str, stream: bool, deadline: float) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    try:
        if stream:
            text: list[str] = []
            extra: dict[str, Any] = {}
            response = client.chat.completions.create(
                model="groundwork", messages=[{"role": "user", "content": question}], stream=True
            )
            for chunk in response:
                # The SDK's timeout is per read; a stream that keeps trickling would never end.
                if time.perf_counter() - started > deadline:
                    response.close()
                    raise TimeoutError(f"the answer was not complete after {deadline:.0f} s")
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        if first is None:
                            first = time.perf_counter() - started
                        text.append(choice.delta.content)
                extra = (chunk.model_extra or {}).get("groundwork") or extra
            content = "".join(text)
        else:
            completion = client.chat.completions.create(
                model="groundwork", messages=[{"role": "user", "content": question}]
            )
            content = completion.choices[0].message.content or ""
            extra = (completion.model_extra or {}).get("groundwork") or {}
        return {
            "ok": True,
            "seconds": time.perf_counter() - started,
            "first": first,
            "chars": len(content),
            "abstained": bool(extra.get("abstained")),
            "grounded": extra.get("grounded"),
        }
    except Exception as exc:  # noqa: BLE001 - every failure is a result here
        return {
            "ok": False,
            "seconds": time.perf_counter() - started,
            "error": f"{type(exc).__name__}: {str(exc)[:300]}",
        }


def run_round(client: Any, n: int, clients: int, stream: bool) -> dict[str, Any]:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    done = 0
    lock = threading.Lock()

    def task(question: str) -> dict[str, Any]:
        nonlocal done
        result = one_request(
            client, question, stream, float(getattr(client.timeout, "read", client.timeout) or 120)
        )
        with lock:
            done += 1
            if done % 8 == 0 or not result["ok"]:
                log(f"{'stream' if stream else 'plain'}: {done}/{n} ({result.get('error', 'ok')})")
        return result

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(task, questions))
    wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    errors: dict[str, int] = {}
    for r in results:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    out = {
        "stream": stream,
        "requests": n,
        "clients": clients,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(ok) / wall, 3) if wall else None,
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "error_messages": errors,
        "latency": latency_summary([r["seconds"] for r in ok]),
        "abstained": sum(1 for r in ok if r["abstained"]),
        "grounded": sum(1 for r in ok if r["grounded"]),
        "empty_answers": sum(1 for r in ok if not r["chars"]),
    }
    if stream:
        out["first_content_chunk"] = latency_summary([r["first"] for r in ok if r["first"] is not None])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--rounds", default="plain,stream")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    import openai
    from django.conf import settings
    from django.contrib.auth.models import User

    from assistant import services
    from assistant.models import Answer

    port = int(os.environ.get("WEB_PORT", "8000"))
    collection = ingest()
    user, _ = User.objects.get_or_create(username=USERNAME)
    user.readable_collections.set([collection])
    token, raw = services.api_token_create(user=user, name="api_load.py")
    assistant = services.assistant_default()
    saved = (assistant.min_similarity, assistant.tools_enabled, list(assistant.collections.all()))
    assistant.min_similarity, assistant.tools_enabled = 0.0, False
    assistant.save(update_fields=["min_similarity", "tools_enabled"])
    assistant.collections.set([collection])
    answers_before = Answer.objects.filter(user=user).count()

    rounds: list[dict[str, Any]] = []
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=raw, timeout=args.timeout, max_retries=0
    )
    try:
        for name in args.rounds.split(","):
            # A fresh server per round: requests a client gave up on are still being answered
            # inside gunicorn, and would queue in front of the next round at the model.
            server = start_gunicorn(port)
            try:
                wait_ready(client, server)
                log(f"round {name}: {args.requests} requests from {args.clients} clients")
                rounds.append(run_round(client, args.requests, args.clients, stream=name.strip() == "stream"))
                done = rounds[-1]
                log(f"round {name}: {done['requests_per_s']} req/s, p95 {done['latency']['p95_ms']} ms")
            finally:
                stop(server)
    finally:
        token.delete()
        assistant.min_similarity, assistant.tools_enabled = saved[0], saved[1]
        assistant.save(update_fields=["min_similarity", "tools_enabled"])
        assistant.collections.set([c for c in saved[2] if type(c).objects.filter(pk=c.pk).exists()])

    result = {
        "benchmark": "api_load",
        "server": "gunicorn config.wsgi --workers 2 --worker-class gthread --threads 8",
        "chat_model": settings.CHAT_MODEL,
        "client_timeout_s": args.timeout,
        "answers_saved": Answer.objects.filter(user=user).count() - answers_before,
        "rounds": rounds,
        "errors_total": sum(r["errors"] for r in rounds),
        "target_no_errors_met": all(r["errors"] == 0 for r in rounds),
        "environment": environment(),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

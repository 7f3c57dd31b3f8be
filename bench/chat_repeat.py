"""What evaluating every prompt from the start costs, and how often a seeded answer changed.

    python bench/chat_repeat.py [--repeats 3] [--questions 3] [--seeds 6] [--ports A,B] [--out FILE]

Starts two local chat servers side by side with the launcher's options
(`ChatModel.server_arguments`): llama-cpp-python's stock server (`python -m llama_cpp.server`),
which keeps the previous request's KV cache and evaluates only the part of a prompt that
differs, and ours (`embedded/chat_server.py`), which evaluates every prompt from the start.
Each request goes to both, in alternating order, so both see the same background load.

Cost: app-shaped prompts (the default system prompt and instructions, six SQuAD 2.0 paragraphs
of one article as sources, the JSON answer schema, temperature 0.8, seed 42), streamed; the
clock stops at the first streamed chunk:

- same_prompt: one prompt `--repeats` times (a regenerate, a replay, a repeated eval case); the
  stock server evaluates only its last token from the second time on;
- same_sources: `--questions` questions over the same sources (a follow-up that retrieves the
  same chunks); the stock server reuses everything before the question;
- new_sources: `--questions` questions with the sources rotated each time (what retrieval
  usually gives); the stock server reuses about the system prompt.

For the stock server it also reports how many prompt tokens each request evaluated (its own
verbose log line, "prefix-match hit, remaining N"); ours evaluates the whole prompt every time.
On a busy machine the times swing widely; the token counts do not.

Repeat: for `--seeds` seeds, "Name a colour." at temperature 0.8 right after another prompt (so
it is evaluated whole) and then again (the stock server's cached path); counts the seeds whose
two answers differ, and checks one plain (not streamed) answer against the streamed one.

The two ports must be free (default: CHAT_PORT and EMBEDDINGS_PORT, so stop the stack first
with `python -m embedded stop`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SQUAD_DEV, emit, latency_summary, load_json, log  # noqa: E402

SEED = 42
TEMPERATURE = 0.8
VARIANTS = ("stock", "from_start")
# llama-cpp-python's verbose line when it reuses a cached prefix (Llama.generate).
PREFIX_HIT = re.compile(r"Llama\.generate: \d+ prefix-match hit, remaining (\d+) prompt tokens to eval")


def squad_article(sources: int) -> tuple[list[str], list[str]]:
    """Paragraphs and answerable questions of the first SQuAD dev article with enough of both."""
    for article in load_json(SQUAD_DEV)["data"]:
        paragraphs = article["paragraphs"][:sources]
        questions = [qa["question"] for p in paragraphs for qa in p["qas"] if not qa.get("is_impossible")]
        if len(paragraphs) == sources and len(questions) >= 10:
            title = article["title"].replace("_", " ")
            return [f"({title})\n{p['context']}" for p in paragraphs], questions
    raise SystemExit("no SQuAD article with enough paragraphs")


def messages(sources: list[str], question: str) -> list[dict[str, str]]:
    from assistant.prompts import DEFAULT_INSTRUCTIONS, DEFAULT_SYSTEM

    system = DEFAULT_SYSTEM.format(assistant_name="Groundwork", scope="")
    context = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(sources, 1))
    user = DEFAULT_INSTRUCTIONS.format(context=context, history="", question=question)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def start(command: list[str], port: int, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    from embedded.services import http_json, wait_until

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"the chat server exited; see {log_file}")
        try:
            return bool(http_json(f"http://127.0.0.1:{port}/v1/models"))
        except (OSError, ValueError):
            return False

    if not wait_until(ready, timeout=600, interval=0.5):
        raise SystemExit(f"the chat server did not start; see {log_file}")


class Client:
    """One server, asked through the official openai client."""

    def __init__(self, port: int, max_tokens: int, log_file: Path) -> None:
        import openai

        from assistant.prompts import ANSWER_SCHEMA

        self.log_file = log_file
        self.client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0, timeout=1800
        )
        self.answer: dict[str, Any] = {
            "model": "smollm2-135m-instruct",
            "temperature": TEMPERATURE,
            "seed": SEED,
            "max_tokens": max_tokens,
            "response_format": {"type": "json_object", "schema": ANSWER_SCHEMA},
        }

    def streamed(self, prompt: list[dict[str, str]], **overrides: Any) -> tuple[float, str]:
        """Seconds to the first streamed chunk, and the whole text."""
        request = {**self.answer, **overrides}
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        for chunk in self.client.chat.completions.create(messages=prompt, stream=True, **request):
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    first = first if first is not None else time.perf_counter() - started
                    parts.append(choice.delta.content)
        return (first if first is not None else time.perf_counter() - started), "".join(parts)

    def plain(self, prompt: list[dict[str, str]], **overrides: Any) -> Any:
        return self.client.chat.completions.create(messages=prompt, **{**self.answer, **overrides})


def both(step: int, call: Callable[[str], Any]) -> dict[str, Any]:
    """`call` for each variant, the stock server first on even steps and second on odd ones."""
    order = VARIANTS if step % 2 == 0 else tuple(reversed(VARIANTS))
    return {name: call(name) for name in order}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens per answer in the cost part")
    parser.add_argument("--ports", help="two free ports, A,B (default: CHAT_PORT,EMBEDDINGS_PORT)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")

    from config.runtime import runtime
    from embedded.services import ChatModel, port_in_use, stop_process_group

    rt = runtime()
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [rt.chat_port, rt.embeddings_port]
    for port in ports:
        if port_in_use(port):
            raise SystemExit(f"port {port} is in use: stop the stack (python -m embedded stop), or --ports")
    rt.log_dir.mkdir(parents=True, exist_ok=True)
    sources, questions = squad_article(6)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch_rt = replace(rt, data_dir=Path(scratch))
        stock = ChatModel("chat", ports[0], "OPENAI_BASE_URL", scratch_rt)
        ours = ChatModel("chat", ports[1], "OPENAI_BASE_URL", scratch_rt)
        commands = {
            "stock": [sys.executable, "-m", "llama_cpp.server", *stock.server_arguments()],
            "from_start": ours.command(),
        }
        try:
            for name, port in zip(VARIANTS, ports, strict=True):
                log_file = rt.log_dir / f"bench-chat-{name}.log"
                processes.append(start(commands[name], port, log_file))
            for name, port, process in zip(VARIANTS, ports, processes, strict=True):
                wait_ready(process, port, rt.log_dir / f"bench-chat-{name}.log")
            log(f"servers ready: stock on {ports[0]}, from_start on {ports[1]}")
            clients = {
                name: Client(port, args.max_tokens, rt.log_dir / f"bench-chat-{name}.log")
                for name, port in zip(VARIANTS, ports, strict=True)
            }
            result = measure(clients, sources, questions, args)
        finally:
            for process in processes:
                stop_process_group(process.pid)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    emit(
        {
            "benchmark": "chat_repeat",
            "settings": {
                "repeats": args.repeats,
                "questions": args.questions,
                "seeds": args.seeds,
                "max_tokens": args.max_tokens,
                "temperature": TEMPERATURE,
                "sources": "6 paragraphs of one SQuAD 2.0 dev article",
                "chat_context": os.environ.get("CHAT_CONTEXT", "8192"),
            },
            "environment": {
                "git_commit": commit,
                "cpus": os.cpu_count(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            },
            **result,
        },
        args.out,
    )
    return 0


def measure(
    clients: dict[str, Client], sources: list[str], questions: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    warm = [{"role": "user", "content": "Say hello."}]
    for name in VARIANTS:
        clients[name].streamed(warm, max_tokens=1, response_format=None)
    timings: dict[str, dict[str, list[float]]] = {name: {} for name in VARIANTS}

    evaluated: dict[str, list[int]] = {}

    def timed(workload: str, step: int, prompt: list[dict[str, str]]) -> None:
        def one(name: str) -> None:
            offset = clients[name].log_file.stat().st_size
            seconds, _ = clients[name].streamed(prompt)
            timings[name].setdefault(workload, []).append(seconds)
            if name == "stock":
                # The stock server says how much of the prompt it took from the cache.
                with clients[name].log_file.open("rb") as log_file:
                    log_file.seek(offset)
                    hits = PREFIX_HIT.findall(log_file.read().decode(errors="replace"))
                evaluated.setdefault(workload, []).append(int(hits[-1]) if hits else -1)
            log(f"{workload} #{step + 1} {name}: first chunk {seconds * 1000:.0f} ms")

        both(step, one)

    same = messages(sources, questions[0])
    for step in range(args.repeats):
        timed("same_prompt", step, same)
    for step, question in enumerate(questions[1 : args.questions + 1]):
        timed("same_sources", step, messages(sources, question))
    for step, question in enumerate(questions[args.questions + 1 : 2 * args.questions + 1]):
        rotated = sources[step + 1 :] + sources[: step + 1]
        timed("new_sources", step, messages(rotated, question))
    prompt_tokens = clients["stock"].plain(same, max_tokens=1).usage.prompt_tokens

    colour = [{"role": "user", "content": "Name a colour."}]
    changed: dict[str, list[int]] = {name: [] for name in VARIANTS}
    stream_vs_plain: dict[str, bool] = {}
    for seed in range(1, args.seeds + 1):

        def pair(name: str, seed: int = seed) -> None:
            options = {"seed": seed, "max_tokens": 16, "response_format": None}
            clients[name].streamed(warm, max_tokens=1, response_format=None)  # evaluated whole next
            _, first = clients[name].streamed(colour, **options)
            _, again = clients[name].streamed(colour, **options)
            if first != again:
                changed[name].append(seed)
            if seed == 1:
                plain = clients[name].plain(colour, **options).choices[0].message.content or ""
                stream_vs_plain[name] = plain == again
            log(f"seed {seed} {name}: {'same' if first == again else 'CHANGED'}: {first!r} / {again!r}")

        both(seed, pair)

    cost = {}
    for workload in ("same_prompt", "same_sources", "new_sources"):
        values = {name: timings[name][workload][1:] if workload == "same_prompt" else timings[name][workload]
                  for name in VARIANTS}  # fmt: skip
        cost[workload] = {
            **{name: latency_summary(values[name]) for name in VARIANTS},
            "added_p50_ms": round(
                latency_summary(values["from_start"])["p50_ms"] - latency_summary(values["stock"])["p50_ms"],
                1,
            ),
        }
    return {
        "prompt_tokens": prompt_tokens,
        # -1: the stock server reused nothing and evaluated the whole prompt. Ours always does.
        "stock_prompt_tokens_evaluated": evaluated,
        "first_chunk": cost,
        "first_chunk_same_prompt_first_call_ms": {
            name: round(timings[name]["same_prompt"][0] * 1000, 1) for name in VARIANTS
        },
        "repeat": {
            name: {
                "seeds": args.seeds,
                "seeds_whose_second_answer_changed": changed[name],
                "plain_equals_streamed": stream_vs_plain.get(name),
            }
            for name in VARIANTS
        },
    }


if __name__ == "__main__":
    sys.exit(main())

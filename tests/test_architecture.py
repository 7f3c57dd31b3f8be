"""The app dependency graph, read from the code: no cycle between apps, and `common` imports no app.

Every import counts, at module level or inside a function (a function-level import is still a
dependency, only a late one). Tests and migrations are left out: tests may reach into any app,
and migrations name the apps their models point at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's own top-level packages: the Django apps, the leaf, and the configuration.
APPS = (
    "answer_cache",
    "assistant",
    "common",
    "config",
    "embedded",
    "evals",
    "gateway",
    "guardrails",
    "knowledge",
    "ops",
    "review",
    "routing",
    "usage",
)
# Edges of the one cycle left, each the answer pipeline calling a feature app that itself builds on
# the assistant's models (answer_cache's rows point at Answer; routing's fine-tuning runs the
# pipeline). They go when the orchestration (assistant.pipeline, the answer views and API, the
# services that store to and invalidate the cache, the admin's routing check) sits above those
# apps instead of inside `assistant`; see docs/architecture.md, "App dependencies". No edge may be
# added here: the test below fails when one listed is gone, so the list only shrinks.
PENDING = frozenset({("assistant", "answer_cache"), ("assistant", "routing")})


def _modules(app: str) -> Iterator[Path]:
    for path in sorted((ROOT / app).rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if "migrations" in parts or "tests" in parts or path.name.startswith("test_"):
            continue
        yield path


def _imported_apps(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside their own package
        out |= {name.split(".")[0] for name in names}
    return out & set(APPS)


def app_graph() -> dict[str, set[str]]:
    """Each app and the other apps its modules import."""
    graph: dict[str, set[str]] = {}
    for app in APPS:
        edges: set[str] = set()
        for path in _modules(app):
            edges |= _imported_apps(path)
        graph[app] = edges - {app}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it began, or None (a depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def without_pending(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {app: {dep for dep in deps if (app, dep) not in PENDING} for app, deps in graph.items()}


def mermaid(graph: dict[str, set[str]]) -> str:
    """The graph as the mermaid block docs/architecture.md carries (pending edges dotted).

    Edges to `common` are left out: every app may use the leaf, and it imports none of them.
    """
    lines = ["```mermaid", "graph TD"]
    for app in sorted(graph):
        for dep in sorted(graph[app] - {"common"}):
            arrow = "-. pending .->" if (app, dep) in PENDING else "-->"
            lines.append(f"    {app} {arrow} {dep}")
    lines.append("```")
    return "\n".join(lines)


def test_no_cycle_between_apps() -> None:
    cycle = find_cycle(without_pending(app_graph()))
    assert cycle is None, "apps import each other in a cycle: " + " -> ".join(cycle or [])


def test_pending_edges_still_exist() -> None:
    """An edge that is gone comes off PENDING, so it cannot come back unnoticed."""
    graph = app_graph()
    assert {(app, dep) for app, dep in PENDING if dep not in graph[app]} == set()


def test_common_imports_no_app() -> None:
    assert app_graph()["common"] == set()


def test_find_cycle_names_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_architecture_doc_draws_this_graph() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert mermaid(app_graph()) in doc, (
        "docs/architecture.md's app graph is stale: paste `python -m tests.test_architecture`'s output"
    )


if __name__ == "__main__":
    print(mermaid(app_graph()))

"""Off-topic requests: how close a question is to what the assistant is for.

The scope text (the assistant's stated scope plus its collections' descriptions) is embedded
once per distinct text, as a passage, and compared with the question's query embedding. A good
retrieval match also counts as on topic. Deliberately permissive: a question is off topic only
when both are far, and short messages ("thanks!") are never judged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

from gateway import provider

MIN_WORDS = 3


@lru_cache(maxsize=256)
def _scope_vector(scope: str, model: str) -> tuple[float, ...]:
    return tuple(provider.embed([scope], kind="passage", model=model).vectors[0])


def scope_vector(scope: str, model: str) -> tuple[float, ...]:
    """The scope's embedding, cached in-process by text (an edited scope is embedded again)."""
    return _scope_vector(" ".join(scope.split()), model)


def clear_cache() -> None:
    _scope_vector.cache_clear()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


def judged(text: str) -> bool:
    """Whether the message is long enough to judge its topic."""
    return len(re.findall(r"\w+", text)) >= MIN_WORDS

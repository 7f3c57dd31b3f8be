"""How a question becomes a cache key: normalised text, its hash, and the follow-up context key."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")
# Punctuation at either end changes nothing about what is asked ("Refund policy?" is "refund policy").
_EDGE = re.compile(r"^[\s\"'“”‘’«»¿¡.,;:!?…-]+|[\s\"'“”‘’«».,;:!?…-]+$")


def normalize_question(text: str) -> str:
    """The question as the cache compares it: NFKC, case-folded, single spaces, no edge punctuation."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return _EDGE.sub("", _SPACE.sub(" ", folded)).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

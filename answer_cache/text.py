"""How a question becomes a cache key, and how two questions are compared word by word.

- `normalize_question`: the text that is stored and shown (NFKC, case-folded, single spaces).
- `exact_key`: what the exact-match hash is taken of; also drops what never changes what is asked
  (contractions spelled out, sentence punctuation, "please" and "thanks" at either end).
- `content_terms` and `word_overlap`: the lexical check a semantic candidate must pass when its
  cosine similarity alone is not high enough (see answer_cache.lookup.MatchRule).
- `context_key` and `query_text`: a follow-up question is keyed and embedded with the one before
  it, by the rule retrieval follows (`common.text.is_follow_up`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from common.text import NUMBER, is_follow_up, search_text
from common.text import content_terms as content_words

_SPACE = re.compile(r"\s+")
# Punctuation at either end changes nothing about what is asked ("Refund policy?" is "refund policy").
_EDGE = re.compile(r"^[\s\"'“”‘’«»¿¡.,;:!?…-]+|[\s\"'“”‘’«».,;:!?…-]+$")
_APOSTROPHE = re.compile(r"[‘’ʼ`´]")
# Sentence punctuation inside the question, followed by a space: "hi, when is it" is "hi when is it".
# "c++", "c#", "3.5", "3 - 2" and "e-mail" keep theirs.
_INNER = re.compile(r"\s*[,;:!?…]+(?=\s)|\.(?=\s)")
_CONTRACTIONS = (
    (re.compile(r"\bcan(?:'t|not)\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\b(\w+)n't\b"), r"\1 not"),
    (re.compile(r"\b(what|where|when|who|how|why|that|there|it|he|she)'s\b"), r"\1 is"),
    (re.compile(r"\b(\w+)'re\b"), r"\1 are"),
    (re.compile(r"\b(\w+)'ve\b"), r"\1 have"),
    (re.compile(r"\b(\w+)'ll\b"), r"\1 will"),
    (re.compile(r"\b(\w+)'d\b"), r"\1 would"),
    (re.compile(r"\bi'm\b"), "i am"),
)
# Politeness at either end of a question; "please" inside ("please send ...") is kept by the
# trailing rule, dropped by the leading one only when something follows.
_POLITE_START = re.compile(r"^(?:(?:hi|hello|hey|ok|okay)\s+)?(?:please\s+)+(?=\S)")
_POLITE_END = re.compile(r"(?:\s+(?:please|thanks|thank\s+you|thx|pls))+$")

# Words that change what is asked although grounding's stop list drops them: "what do I get
# paid" and "when do I get paid" are different questions, as are "how much" and "how long".
_QUESTION_WORDS = re.compile(
    r"\b(how (?:much|many|long|often|far|old|soon)|what|when|where|who|whose|why|which|how"
    r"|not|no|never)\b"
)
_POLITE_WORDS = re.compile(r"\b(?:please|pls|thanks|thank you|thx|kindly)\b")


def normalize_question(text: str) -> str:
    """The question as the cache stores it: NFKC, case-folded, single spaces, no edge punctuation."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return _EDGE.sub("", _SPACE.sub(" ", folded)).strip()


def exact_key(text: str) -> str:
    """The text whose hash is the exact-match key: the normalised question without what never
    changes its meaning. "What's the refund policy, please?" and "what is the refund policy"
    share a key."""
    key = _APOSTROPHE.sub("'", normalize_question(text))
    for pattern, replacement in _CONTRACTIONS:
        key = pattern.sub(replacement, key)
    key = _INNER.sub("", key)
    key = _EDGE.sub("", _SPACE.sub(" ", key)).strip()
    for _ in range(2):  # "hi please, ... thanks please"
        key = _POLITE_END.sub("", _POLITE_START.sub("", key)).strip()
        key = _EDGE.sub("", key)
    return key or normalize_question(text)


def content_terms(text: str) -> frozenset[str]:
    """The words that carry what a question asks: stemmed content words, numbers, and the question
    words and negations ("how_much", "when", "not") that the grounding stop list would drop."""
    key = _POLITE_WORDS.sub(" ", exact_key(text))
    terms = set(content_words(key))
    terms.update(m.replace(" ", "_") for m in _QUESTION_WORDS.findall(key))
    terms.update(NUMBER.findall(key))
    return frozenset(terms)


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two questions' `content_terms`, 0..1 (1 when both have none)."""
    left, right = content_terms(a), content_terms(b)
    if not left and not right:
        return 1.0
    return len(left & right) / len(left | right)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- keys of a question in a conversation ----------------------------------------------------

History = Sequence[tuple[str, str]]


def context_key(question: str, history: History) -> str:
    """Empty for a question that stands alone; the previous question's hash for a follow-up.

    It follows retrieval's rule (`common.text.search_text`): a follow-up is retrieved together
    with the previous question, so "and for GPL?" after two different questions are two
    different keys; a full question retrieves the same sources in any conversation and shares
    its key.
    """
    if not is_follow_up(question, history):
        return ""
    return text_hash(normalize_question(history[-1][0]))


def query_text(question: str, history: History) -> str:
    """What is embedded: the text retrieval embeds, so the pipeline's vector can be shared."""
    return search_text(question, history)

"""The keyword side of search: full-text SQL, which words of a question are worth looking up, BM25.

`knowledge.selectors.search` asks `keyword_sides` for a query's two keyword passes and fuses them
with the vector side. Everything here reads the full-text index (`Chunk.search_vector`) and its
statistics.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection

from common.text import CJK_RANGES
from knowledge.models import CJK_PAIRS_FUNCTION

if TYPE_CHECKING:
    from knowledge.selectors import SearchPlan

# websearch syntax that narrows a search (a quoted phrase, an excluded -word): such a query is run
# as written and never widened with chunks holding any of its words. A plain "or" is left to
# websearch in the every-word pass; it is mostly English in a question ("paid or unpaid?"), and
# treating it as an operator cost 1.2 points of keyword recall@5 on SQuAD 2.0.
_OPERATORS = re.compile(r'"|(^|\s)-\w')

# websearch's "-" excludes the one word after it, and a CJK run becomes several pairs: a run
# excluded outside quotes ("-中華民國") is quoted first, so that websearch excludes its pairs as
# one phrase rather than the first pair alone. The lookbehind counts the quotes before it.
_NEGATED_CJK_RUN = rf'(?<=^[^"]*(?:"[^"]*"[^"]*)*)(^|\s)-([{CJK_RANGES}]+)'


def indexed_text_sql(text: str, *, websearch: bool = False) -> str:
    """SQL for the text `text` (an SQL expression) as the index holds it: each run of CJK
    characters as its overlapping pairs (knowledge.models.CJK_PAIRS_FUNCTION), so that a
    question's Chinese or Japanese words match the chunks' own. Text without CJK characters is
    unchanged. For websearch syntax, an excluded CJK run is quoted first."""
    if websearch:
        text = f"regexp_replace({text}, '{_NEGATED_CJK_RUN}', '\\1-\"\\2\"', 'g')"
    return f"{CJK_PAIRS_FUNCTION}({text})"


def keyword_query_sql() -> str:
    """SQL for the tsquery of %(q)s: websearch syntax, matched in English and language-neutrally.

    Used as written when the user typed operators. A question in plain words would AND every
    word under websearch rules, which finds nothing for most questions, so plain questions
    instead OR their informative lexemes (`informative_lexemes`) and ranking decides. The
    neutral side drops English stopwords (migration 0002). CJK text is matched by character
    pairs (`indexed_text_sql`): a run's pairs are all required, and a quoted run is a phrase.
    """
    text = indexed_text_sql("%(q)s", websearch=True)
    return f"(websearch_to_tsquery('english', {text}) || websearch_to_tsquery('groundwork_simple', {text}))"


# A word in more than this share of all chunks says almost nothing about relevance (BM25 gives it
# an IDF near zero) yet costs a lookup of every chunk holding it, so it is left out of the
# any-word pass. On SQuAD 2.0 keeping every word changed keyword recall@5 by -0.001.
COMMON_LEXEME_SHARE = 0.05
# Looking a word up costs 1-3 µs a matching chunk (its row is read for the permission filter and
# the length), so in a large table words are kept rarest first while the readable chunks
# estimated to hold any of them stay within this budget; a question whose rarest word alone is
# over it gets no any-word pass (at a million chunks such a word is in 8,000 or more and its
# IDF is low), and the vector side carries it. Below 100,000 readable chunks the 5% rule binds
# first. Each word's lookup is also capped at this many chunks, in case the statistics are stale.
KEYWORD_RANK_BUDGET = 5_000
# Below this many chunks ranking every match is cheap, and frequencies from so few are noise.
COMMON_LEXEME_MIN_ROWS = 2_000
_LEXEME_STATS_SECONDS = 300.0


@dataclass(frozen=True)
class _LexemeStats:
    frequencies: dict[str, float]  # share of chunks holding each of the most common lexemes
    floor: float  # a lexeme not listed is at most this common
    rows: float


_lexeme_stats: tuple[float, _LexemeStats] = (-math.inf, _LexemeStats({}, 0.0, 0.0))


def _lexeme_statistics() -> _LexemeStats:
    """Shares of chunks holding the table's most common lexemes, from ANALYZE.

    PostgreSQL keeps the most common elements of a tsvector column (about a thousand with the
    default statistics target) with their frequencies; autovacuum refreshes them as documents
    come and go. Reading them costs nothing per query; they are cached in the process for a
    few minutes. Without statistics yet, or in a small table, nothing counts as common.
    """
    global _lexeme_stats
    fetched_at, stats = _lexeme_stats
    if time.monotonic() - fetched_at < _LEXEME_STATS_SECONDS:
        return stats
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs, "
            "(SELECT reltuples FROM pg_class WHERE oid = 'knowledge_chunk'::regclass) FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'knowledge_chunk' "
            "AND attname = 'search_vector'"
        )
        row = cursor.fetchone()
    stats = _LexemeStats({}, 0.0, 0.0)
    if row and row[0] and row[2] >= COMMON_LEXEME_MIN_ROWS:
        # most_common_elem_freqs holds one frequency per element, then min, max and null share.
        frequencies = dict(zip(row[0], row[1], strict=False))
        stats = _LexemeStats(frequencies, min(frequencies.values()), float(row[2]))
    _lexeme_stats = (time.monotonic(), stats)
    return stats


def informative_lexemes(query: str, readable_rows: float | None = None) -> list[str]:
    """The query's lexemes (English and language-neutral) worth ranking chunks by, rarest first.

    Common ones (in more than COMMON_LEXEME_SHARE of chunks) are dropped, and when many chunks
    are readable the rarer ones are kept only while the readable chunks estimated to hold any of
    them fit KEYWORD_RANK_BUDGET (the table's word frequencies applied to `readable_rows`, the
    whole table by default). When every word is common ("what is it"), the two least common are
    kept if they fit, so that a small table still has something to rank. A CJK run's lexemes are
    its character pairs.
    """
    text = indexed_text_sql("%(q)s")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT unnest(tsvector_to_array("  # noqa: S608 (our own SQL, the text a parameter)
            f"to_tsvector('english', {text}) || to_tsvector('groundwork_simple', {text})))",
            {"q": query},
        )
        lexemes = [row[0] for row in cursor.fetchall()]
    stats = _lexeme_statistics()

    def share(lexeme: str) -> float:
        return stats.frequencies.get(lexeme, stats.floor)

    by_rarity = sorted(lexemes, key=lambda lexeme: (share(lexeme), lexeme))
    rows = stats.rows if readable_rows is None else min(stats.rows, readable_rows)
    kept: list[str] = []
    estimated = 0.0
    for lexeme in by_rarity:
        if share(lexeme) > COMMON_LEXEME_SHARE:
            break
        estimated += share(lexeme) * rows
        if estimated > KEYWORD_RANK_BUDGET:
            break
        kept.append(lexeme)
    if kept or not by_rarity:
        return kept
    least_common = by_rarity[:2]
    return least_common if sum(share(lexeme) for lexeme in least_common) * rows <= KEYWORD_RANK_BUDGET else []


# A reader of more than KEYWORD_RANK_CAP_FROM_ROWS chunks gets at most KEYWORD_RANK_MAX_ROWS
# matching chunks ranked per statement. Ranking detoasts each one's tsvector (~10 µs a chunk with
# everything in shared buffers at a million chunks), and even the rarest word of a question can
# be in thousands of chunks of a large table; past the cap the keyword side ranks the first
# matches it reads and leaves the rest to the vector side. A smaller reader gets every match
# ranked: capping COVID-QA's 2,530 chunks cost 1.2 points of hybrid recall@5.
KEYWORD_RANK_MAX_ROWS = 1_000
KEYWORD_RANK_CAP_FROM_ROWS = 20_000


def _ranked_matches(
    tsquery: str, params: dict[str, Any], limit: int, readable_rows: int | None = None
) -> list[tuple[int, float]]:
    capped = readable_rows is None or readable_rows > KEYWORD_RANK_CAP_FROM_ROWS
    # Only our own SQL fragments are formatted in; the user's text is a parameter.
    sql = (
        "SELECT m.id, ts_rank_cd(m.search_vector, q.query, 32) AS rank "  # noqa: S608
        f"FROM (SELECT {tsquery} AS query) AS q, LATERAL (SELECT id, search_vector FROM knowledge_chunk "
        "WHERE collection_id = ANY(%(ids)s) AND search_vector @@ q.query LIMIT %(cap)s) AS m "
        "ORDER BY rank DESC, m.id LIMIT %(limit)s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "limit": limit, "cap": KEYWORD_RANK_MAX_ROWS if capped else None})
        return cursor.fetchall()


# BM25 (Robertson and Zaragoza's Okapi weighting) over the question's informative words, each
# counted once per chunk: a chunk's score is the sum, over the words it holds, of the word's
# inverse document frequency among the reader's chunks, damped for long chunks. Word counts
# within a chunk would need its tsvector read (~14 µs a chunk); membership comes from the GIN
# index alone (~1 µs). Against ts_rank_cd, which has no IDF, keyword recall@5 went from 0.81 to
# 0.94 on SQuAD 2.0 and from 0.62 to 0.74 on COVID-QA (bench/retrieval_quality.py).
BM25_K1 = 1.2
BM25_B = 0.75


def _bm25_sql(split: tuple[list[int], list[int]] | None) -> str:
    """The statement scoring chunks by `_bm25_matches`; with the reader's (indexed, rest) split
    (`SearchPlan.indexed_split`) each word is looked up in each indexed collection's own GIN index."""

    def lookup(collections: str) -> str:
        return (
            "SELECT id, token_count FROM knowledge_chunk "  # noqa: S608
            f"WHERE collection_id {collections} AND search_vector @@ quote_literal(w.lexeme)::tsquery"
        )

    if split is None:
        branches = [lookup("= ANY(%(ids)s)")]
    else:
        indexed, rest = split
        # Constants, so that the planner matches each partial index's predicate.
        branches = [lookup(f"= {int(cid)}") for cid in indexed]
        if rest:
            branches.append(lookup("= ANY(%(rest)s)"))
    lookups = " UNION ALL ".join(branches)
    return (
        "WITH matches AS MATERIALIZED (SELECT w.lexeme, c.id, c.token_count "  # noqa: S608
        "FROM unnest(%(lexemes)s::text[]) AS w(lexeme), "
        f"LATERAL (SELECT id, token_count FROM ({lookups}) AS lookup LIMIT %(cap)s) AS c), "
        "df AS (SELECT w.lexeme, count(m.id) AS n, "
        "ln(1 + (greatest(%(rows)s, count(m.id)) - count(m.id) + 0.5::float8) / (count(m.id) + 0.5::float8)) "
        "AS idf FROM unnest(%(lexemes)s::text[]) AS w(lexeme) LEFT JOIN matches AS m USING (lexeme) "
        "GROUP BY w.lexeme), "
        "mass AS (SELECT sum(idf) AS idf FROM df), "
        "average AS (SELECT greatest(avg(token_count), 1)::float8 AS tokens FROM matches) "
        "SELECT m.id, sum(df.idf * (%(k1)s::float8 + 1) / (1 + %(k1)s::float8 * (1 - %(b)s::float8 "
        "+ %(b)s::float8 * m.token_count / average.tokens))) AS score, mass.idf "
        "FROM matches AS m JOIN df USING (lexeme), average, mass "
        "GROUP BY m.id, mass.idf ORDER BY score DESC, m.id LIMIT %(limit)s"
    )


def _bm25_matches(lexemes: list[str], plan: SearchPlan, limit: int) -> tuple[list[tuple[int, float]], float]:
    """Chunks holding any of `lexemes`, best BM25 score first, and the sum of the lexemes' IDF.

    Document frequencies are counted among the reader's own chunks in the same statement, so a
    word common in one team's collection weighs little there whatever the rest of the table
    holds. The average chunk length is that of the matching chunks, an estimate of the reader's.
    The IDF sum is what a chunk of average length holding every lexeme scores: a match's share
    of it says how much of the question the match covers (a lexeme no chunk holds counts fully).
    """
    split = plan.indexed_split
    params: dict[str, Any] = {
        "lexemes": lexemes,
        "ids": plan.collection_ids,
        "rest": split[1] if split else [],
        "rows": plan.readable_rows or 0,
        "k1": BM25_K1,
        "b": BM25_B,
        "limit": limit,
        "cap": KEYWORD_RANK_BUDGET,
    }
    with connection.cursor() as cursor:
        cursor.execute(_bm25_sql(split), params)
        rows = cursor.fetchall()
    return [(chunk_id, float(score)) for chunk_id, score, _ in rows], float(rows[0][2]) if rows else 0.0


@dataclass(frozen=True)
class KeywordSides:
    """The keyword side's two passes for one query, each best first."""

    every_word: list[tuple[int, float]]  # ts_rank_cd; the typed query as written when `typed`
    bm25: list[tuple[int, float]]  # BM25 over `lexemes` (every-word chunks included)
    lexemes: list[str]  # the informative lexemes the BM25 pass ranked by
    typed: bool = False  # websearch syntax that narrows: no BM25 pass
    idf_mass: float = 0.0  # the lexemes' summed IDF (`_bm25_matches`)

    def merged(self, limit: int) -> list[tuple[int, float]]:
        """The keyword ranking: every-word chunks first, then the rest by BM25."""
        seen = {chunk_id for chunk_id, _ in self.every_word}
        return (self.every_word + [hit for hit in self.bm25 if hit[0] not in seen])[:limit]

    def coverage(self) -> dict[int, float]:
        """Each matching chunk's share of the question: its BM25 score over the lexemes' summed
        IDF (what a chunk of average length holding all of them scores), at most 1. A chunk
        matching a typed query matches all of it."""
        if self.typed:
            return {chunk_id: 1.0 for chunk_id, _ in self.every_word}
        if self.idf_mass <= 0:
            return {}
        return {chunk_id: min(score / self.idf_mass, 1.0) for chunk_id, score in self.bm25}


def keyword_sides(query: str, plan: SearchPlan, limit: int) -> KeywordSides:
    """Full-text matches in two passes.

    Typed websearch syntax that narrows (phrases, exclusions) is run as written and ranked by
    ts_rank_cd.
    A plain question first asks for chunks holding all its words, ranked by ts_rank_cd; then
    chunks holding any of its informative words are ranked by BM25 (`_bm25_matches`), unless
    the first pass already filled the list (its words are then common, and BM25 has little to
    tell apart).
    """
    params = {"q": query, "ids": plan.collection_ids}
    every_word = _ranked_matches(keyword_query_sql(), params, limit, plan.readable_rows)
    if _OPERATORS.search(query):
        return KeywordSides(every_word, [], [], typed=True)
    if len(every_word) >= limit:
        return KeywordSides(every_word, [], [])
    lexemes = informative_lexemes(query, plan.readable_rows)
    if not lexemes:
        return KeywordSides(every_word, [], [])
    ranked, mass = _bm25_matches(lexemes, plan, limit)
    return KeywordSides(every_word, ranked, lexemes, idf_mass=mass)

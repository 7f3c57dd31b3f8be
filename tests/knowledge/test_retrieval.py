"""Retrieval quality and behaviour: hybrid fusion, websearch syntax, other languages, the plan."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from knowledge import keywords
from knowledge.keywords import KeywordSides
from knowledge.models import Collection
from knowledge.selectors import (
    EVERY_WORD_BONUS,
    KEYWORD_WEIGHT,
    SearchPlan,
    fuse,
    ranked,
    search,
)
from tests import factories

pytestmark = pytest.mark.django_db

# A small labelled set. Titles come from the file names and are embedded with the text, but only
# the text is indexed for keyword search; keyword search stems words, the fake embeddings do not.
# So some queries are found only by their stems (keyword wins: the vector side prefers a document
# whose title shares the exact word) and some mostly by their titles (vector wins: the keyword side
# prefers a document that repeats one of the words).
CORPUS = {
    "backup-schedule.txt": (
        "The server backup runs every night at two. Configure the backup window in the admin panel."
    ),
    "nightly-build-status.txt": "The build pipeline posts failures to the developers channel.",
    "travel-insurance.txt": "Every employee who travels to another country is covered by our insurance.",
    "abroad-offices.txt": "We have offices in Lisbon and Berlin with desks for visitors.",
    "parental-leave-policy.txt": (
        "New parents receive sixteen weeks of paid time off. Leave can start before the due date."
    ),
    "sick-days.txt": (
        "Sick leave: tell your manager before ten in the morning by phone or chat, rest at home until you "
        "feel well again, and bring a doctor's note when the leave lasts longer than three working days."
    ),
    "expense-policy.txt": "Receipts are due monthly.",
    "remote-work-policy.txt": "Staff may work from home two days a week.",
    "password-reset-guide.txt": "Forgot it? Use the self-service portal, or ask IT for help.",
    "help-desk-hours.txt": (
        "The help desk answers questions from nine to five on weekdays; outside those hours, urgent help is "
        "available by phone, and every other request waits for the next morning in the shared queue."
    ),
    "password-rules.txt": "Use at least twelve characters and never reuse one.",
    "cafeteria-menu.txt": "Lunch is served from noon, with soup on Mondays and fish on Fridays.",
}
LABELLED = {
    "configuring nightly backups": "backup-schedule.txt",
    "employees travelling abroad": "travel-insurance.txt",
    "parental leave policy": "parental-leave-policy.txt",
    "password reset help": "password-reset-guide.txt",
    "help with a password": "password-reset-guide.txt",
    "password rules": "password-rules.txt",  # in its title only: no text holds either word
}


@pytest.fixture
def corpus(db: None) -> Collection:
    collection = factories.collection(name="Labelled")
    for filename, text in CORPUS.items():
        factories.document(collection=collection, text=text, filename=filename)
    return collection


def reciprocal_ranks(user: Any, mode: str) -> dict[str, float]:
    ranks = {}
    for query, expected in LABELLED.items():
        filenames = [hit.document.filename for hit in search(user, query, k=10, mode=mode)]
        ranks[query] = 1 / (filenames.index(expected) + 1) if expected in filenames else 0.0
    return ranks


@pytest.fixture
def fake_cosine_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fusion's keyword weights are in units of cosine similarity, set for e5, whose first
    and tenth neighbours lie ~0.02-0.05 apart (bench/retrieval_quality.py). The fake embedder's
    hashed bags of words spread documents about five times as widely (0.0 to 0.5 on this
    corpus), so its weights are scaled with it."""
    from knowledge import selectors

    monkeypatch.setattr(selectors, "KEYWORD_WEIGHT", 5 * selectors.KEYWORD_WEIGHT)
    monkeypatch.setattr(selectors, "EVERY_WORD_BONUS", 5 * selectors.EVERY_WORD_BONUS)


@pytest.mark.usefixtures("fake_cosine_scale")
def test_hybrid_ranks_better_than_either_method_alone(corpus: Collection, admin_user: Any) -> None:
    per_mode = {mode: reciprocal_ranks(admin_user, mode) for mode in ("hybrid", "vector", "keyword")}
    mrr = {mode: sum(ranks.values()) / len(ranks) for mode, ranks in per_mode.items()}

    # Each single method misses the top spot on some query, so the set tests what fusion adds.
    assert min(per_mode["vector"].values()) < 1, per_mode
    assert min(per_mode["keyword"].values()) < 1, per_mode
    assert mrr["hybrid"] >= max(mrr["vector"], mrr["keyword"]), per_mode
    assert mrr["hybrid"] > min(mrr["vector"], mrr["keyword"]), per_mode


def _order(fused: dict[int, Any]) -> list[int]:
    return [chunk_id for chunk_id, _ in ranked(fused)]


def test_a_weak_keyword_match_does_not_demote_the_dense_top_hit() -> None:
    """Cosines as e5 gives them. The keyword side's only match holds one word of the question
    (a fifth of its IDF) and is the vector side's second: reciprocal-rank fusion (k 5) put it
    first (1/6 + 1/7 against 1/6); here it gains a fifth of the keyword weight and stays second."""
    vector = [(1, 0.875), (2, 0.851), (3, 0.840)]
    weak = KeywordSides(every_word=[], bm25=[(2, 2.0)], lexemes=["leav"], idf_mass=10.0)

    fused = fuse(vector, weak, 40)

    assert _order(fused) == [1, 2, 3]
    assert fused[2].score == pytest.approx(0.851 + KEYWORD_WEIGHT * 0.2)
    assert fused[2].keyword_rank == 1 and fused[1].keyword_rank is None


def test_a_keyword_match_holding_the_whole_question_lifts_its_chunk() -> None:
    """A chunk holding every word of the question outranks slightly closer vector hits, and a
    match the vector side did not return starts from the lowest similarity it did return."""
    vector = [(1, 0.862), (2, 0.851), (3, 0.840), (5, 0.780)]
    strong = KeywordSides(
        every_word=[(3, 0.1)], bm25=[(3, 10.0), (4, 6.0)], lexemes=["a", "b"], idf_mass=10.0
    )

    fused = fuse(vector, strong, 40)

    assert _order(fused) == [3, 1, 2, 4, 5]
    assert fused[3].score == pytest.approx(0.840 + KEYWORD_WEIGHT + EVERY_WORD_BONUS)
    assert fused[3].vector_score == pytest.approx(0.840)  # cosine similarity, untouched
    assert fused[4].score == pytest.approx(0.780 + KEYWORD_WEIGHT * 0.6)
    assert fused[4].vector_score is None and fused[4].keyword_score == 6.0
    # Without a vector side (keyword mode) scores start from 0, and the keyword order stands.
    assert _order(fuse([], strong, 40)) == [3, 4]


def test_a_question_without_keyword_matches_is_ranked_by_cosine(admin_user: Any) -> None:
    """No chunk holds a word of the question: hybrid search ranks as vector search does, and the
    scores are cosines."""
    collection = factories.collection(name="Leave")
    factories.document(collection=collection, text="Annual leave is twenty-five days.", filename="a.txt")
    factories.document(collection=collection, text="Parking is free on weekends.", filename="b.txt")
    question = "Who maintains the coffee machines?"

    hybrid = search(admin_user, question, k=2)
    vector = search(admin_user, question, k=2, mode="vector")

    assert [h.chunk.pk for h in hybrid] == [h.chunk.pk for h in vector]
    assert all(h.keyword_rank is None and h.score == h.vector_score for h in hybrid)


@pytest.fixture
def cjk_corpus(db: None) -> Collection:
    collection = factories.collection(name="CJK")
    texts = {
        "sanskrit.txt": "梵語的學術研究由德國學者開創，後來傳到歐洲各地。",
        "calcutta.txt": "亞洲協會在加爾各答舉行會議，討論梵文文獻的保存。",
        "europe.txt": "歐洲的大學設有梵語課程，學生人數逐年增加。",
        "capital.txt": "臺北是中華民國的首都，也是臺灣最大的都市。",
        "tokyo.txt": "東京タワーは東京都港区にある電波塔です。",
        "osaka.txt": "大阪城は豊臣秀吉が築いた城です。",
        "install.txt": "安裝Python之前，請先確認作業系統的版本。",
        "upgrade.txt": "升級作業系統需要重新啟動電腦。",
        "seoul.txt": "서울은 대한민국의 수도입니다.",
        "english.txt": "The capital of Taiwan is Taipei.",
    }
    for filename, text in texts.items():
        factories.document(collection=collection, text=text, filename=filename)
    return collection


def _keyword_found(user: Any, query: str) -> list[str]:
    return [hit.document.filename for hit in search(user, query, k=10, mode="keyword")]


@pytest.mark.usefixtures("cjk_corpus")
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("誰開創了梵語的學術研究？", "sanskrit.txt"),  # Chinese: no space in the question
        ("中華民國的首都是哪裡", "capital.txt"),
        ("東京タワーはどこにありますか", "tokyo.txt"),  # Japanese: kanji and kana in one run
        ("大阪城を築いたのは誰ですか", "osaka.txt"),
        ("如何安裝Python", "install.txt"),  # mixed: a Latin word inside a Chinese run
        ("python 作業系統版本", "install.txt"),
        ("대한민국의 수도", "seoul.txt"),  # Korean: pairs within each spaced word
    ],
)
def test_cjk_questions_find_their_chunk_by_keyword_alone(
    admin_user: Any, question: str, expected: str
) -> None:
    """Chinese, Japanese and Korean text is indexed and asked by overlapping character pairs
    (migration 0007), so a question finds its chunk with vector search switched off."""
    found = _keyword_found(admin_user, question)

    assert found[:1] == [expected], found


@pytest.mark.usefixtures("cjk_corpus")
def test_cjk_questions_get_both_keyword_passes(admin_user: Any) -> None:
    from knowledge import selectors

    plan = selectors._plan(selectors.readable_collection_ids(admin_user))
    # Every pair of the question in one chunk: the every-word pass finds it...
    every_word = selectors.keyword_sides("梵語課程", plan, 10)
    assert [_filename(c) for c, _ in every_word.every_word] == ["europe.txt"]
    # ...and a longer question's pairs are ranked by BM25, rarest first among the lexemes.
    sides = selectors.keyword_sides("德國學者研究什麼語言", plan, 10)
    assert sides.every_word == [] and {"德國", "學者", "研究", "什麼"} <= set(sides.lexemes)
    assert _filename(sides.bm25[0][0]) == "sanskrit.txt"
    assert 0 < sides.coverage()[sides.bm25[0][0]] < 1  # 什麼 and 語言 are in no chunk


def _filename(chunk_id: int) -> str:
    from knowledge.models import Chunk

    return Chunk.objects.select_related("document").get(pk=chunk_id).document.filename


@pytest.mark.usefixtures("cjk_corpus")
def test_websearch_operators_on_cjk_text(admin_user: Any) -> None:
    # A quoted run is a phrase: its pairs adjacent and in order.
    assert _keyword_found(admin_user, '"梵語課程"') == ["europe.txt"]
    assert _keyword_found(admin_user, '"課程梵語"') == []
    assert set(_keyword_found(admin_user, '"作業系統"')) == {"install.txt", "upgrade.txt"}
    assert _keyword_found(admin_user, '"安裝Python"') == ["install.txt"]
    # An excluded run excludes the chunks holding all of it, not those holding its first pair.
    assert _keyword_found(admin_user, "作業系統 -安裝") == ["upgrade.txt"]
    assert set(_keyword_found(admin_user, "作業系統 -安裝軟體")) == {"install.txt", "upgrade.txt"}
    assert _keyword_found(admin_user, '"作業系統" -"安裝Python"') == ["upgrade.txt"]
    # Chinese and English words in one question, each matched as the index holds it.
    assert set(_keyword_found(admin_user, "Taiwan 首都")) == {"english.txt", "capital.txt"}


def _sql(query: str, *params: object) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, list(params))
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "text",
    [
        "臺北是中華民國的首都，也是臺灣最大的都市。",
        "東京タワーは東京都港区にある電波塔です。",
        "서울은 대한민국의 수도입니다.",
        "安裝Python3之前，先讀README。",
        "\u3400\u4db5 \u4e00\u9fa5 \uf900\ufa2d \u3041\u30fe \uac00\ud7a3",  # near the range edges
        "一",
    ],
)
def test_the_index_cuts_cjk_text_into_the_pairs_evidence_uses(text: str) -> None:
    """The search index and common.text.terms (evidence, grounding) agree on what a CJK word is."""
    from common.text import CJK, terms

    indexed = _sql("SELECT groundwork_cjk_pairs(%s)", text)
    lexemes = _sql("SELECT tsvector_to_array(to_tsvector('simple', groundwork_cjk_pairs(%s)))", text)
    cjk_terms = [term for term in terms(text, keep_stopwords=True) if CJK.match(term)]

    assert [word for word in indexed.split() if CJK.match(word)] == cjk_terms  # the same, in order
    assert {lexeme for lexeme in lexemes if CJK.match(lexeme)} == set(cjk_terms)


def test_the_index_pairs_the_characters_common_text_pairs() -> None:
    """The first and last code point of every range (some unassigned, which PostgreSQL's parser
    would drop), then code points just outside them."""
    from common.text import CJK, terms

    text = "\u3400\u4dbf \u4e00\u9fff \uf900\ufaff \u3040\u30ff \uac00\ud7af \u33ff\u4dc0 \ua000\u33ff"
    indexed = _sql("SELECT groundwork_cjk_pairs(%s)", text)

    assert [word for word in indexed.split() if CJK.match(word)] == [
        term for term in terms(text, keep_stopwords=True) if CJK.match(term)
    ]
    assert indexed.split()[-2:] == ["\u33ff\u4dc0", "\ua000\u33ff"]  # left as they were


def test_english_text_is_indexed_as_before(admin_user: Any) -> None:
    """Text without CJK characters goes through groundwork_cjk_pairs unchanged, so its tsvector
    is the one the column held before migration 0007, byte for byte."""
    from knowledge.models import Chunk

    collection = factories.collection(name="English")
    text = "Die Kündigungsfrist: Annual leave (25 days) is paid; naïve “quotes” — e-mail HR@example.com!"
    factories.document(collection=collection, text=text, filename="a.txt")
    chunk = Chunk.objects.get(collection=collection)

    assert _sql("SELECT groundwork_cjk_pairs(%s)", chunk.text) == chunk.text
    before = _sql(
        "SELECT (to_tsvector('english', text) || to_tsvector('simple', text))::text "
        "FROM knowledge_chunk WHERE id = %s",
        chunk.pk,
    )
    assert _sql("SELECT search_vector::text FROM knowledge_chunk WHERE id = %s", chunk.pk) == before


def test_hybrid_scores_are_cosine_plus_the_keyword_bonus(admin_user: Any) -> None:
    collection = factories.collection(name="Leave")
    factories.document(collection=collection, text="Annual leave is twenty-five days.", filename="a.txt")
    factories.document(collection=collection, text="Parking is free on weekends.", filename="b.txt")

    (first, second) = search(admin_user, "annual leave days", k=2)

    assert first.document.filename == "a.txt" and first.keyword_rank == 1
    assert first.vector_score is not None and -1 <= first.vector_score <= 1
    # It holds every word of the question: the whole keyword weight and the every-word bonus.
    assert first.score == pytest.approx(first.vector_score + KEYWORD_WEIGHT + EVERY_WORD_BONUS, abs=0.03)
    assert second.keyword_rank is None and second.score == second.vector_score


def test_websearch_operators_in_keyword_mode(admin_user: Any) -> None:
    collection = factories.collection(name="Leave")
    factories.document(
        collection=collection, text="Annual leave requests go to your manager.", filename="a.txt"
    )
    factories.document(collection=collection, text="Request leave for the annual training.", filename="b.txt")
    factories.document(collection=collection, text="Sick leave needs a doctor's note.", filename="c.txt")

    def found(query: str) -> set[str]:
        return {hit.document.filename for hit in search(admin_user, query, k=10, mode="keyword")}

    assert found("annual leave") == {"a.txt", "b.txt", "c.txt"}  # plain words: any of them
    assert found('"annual leave"') == {"a.txt"}  # a phrase: adjacent, in order
    assert found("leave -sick") == {"a.txt", "b.txt"}  # excluded word
    assert found('"annual leave" or sick') == {"a.txt", "c.txt"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Kündigungsfrist", "kuendigung.txt"),
        ("Quartalsende Monate", "kuendigung.txt"),
        ("période d'essai", "essai.txt"),
        ("renouvelable", "essai.txt"),
    ],
)
def test_non_english_text_is_found_by_keyword_search(admin_user: Any, query: str, expected: str) -> None:
    collection = factories.collection(name="International")
    factories.document(
        collection=collection,
        text="Die Kündigungsfrist beträgt drei Monate zum Quartalsende.",
        filename="kuendigung.txt",
    )
    factories.document(
        collection=collection,
        text="La période d'essai dure deux mois, renouvelable une fois.",
        filename="essai.txt",
    )
    factories.document(
        collection=collection, text="The notice period is three months.", filename="notice.txt"
    )

    hits = search(admin_user, query, k=5, mode="keyword")

    assert [hit.document.filename for hit in hits][:1] == [expected]


def test_filtered_search_of_a_small_collection_is_exact(member: Any, admin_user: Any) -> None:
    mine = factories.collection(name="Mine", readers=[member])
    other = factories.collection(name="Other")
    factories.document(collection=mine, text="Annual leave is twenty-five days.", filename="leave.txt")
    factories.document(collection=other, text="Annual leave for contractors is not paid.", filename="c.txt")

    filtered: list[SearchPlan] = []
    unfiltered: list[SearchPlan] = []
    narrowed: list[SearchPlan] = []
    hits = search(member, "annual leave", k=5, plan_out=filtered)
    search(admin_user, "annual leave", k=5, plan_out=unfiltered)
    search(admin_user, "annual leave", k=5, collections=["Other"], plan_out=narrowed)

    (plan,) = filtered
    assert plan.filtered
    assert plan.strategy == "exact"
    assert plan.collection_ids == [mine.pk]
    assert plan.readable_rows == 1
    assert {hit.document.filename for hit in hits} == {"leave.txt"}
    # Two chunks in all: even unfiltered, an exact scan is cheaper and has perfect recall.
    assert unfiltered[0].filtered is False and unfiltered[0].strategy == "exact"
    assert narrowed[0].strategy == "exact" and narrowed[0].collection_ids == [other.pk]


def test_empty_query_or_no_readable_collection_returns_nothing(outsider: Any) -> None:
    collection = factories.collection(name="Private")
    factories.document(collection=collection, text="Annual leave is twenty-five days.", filename="leave.txt")

    assert search(outsider, "annual leave") == []
    assert search(outsider, "   ") == []


def test_a_large_unfiltered_search_uses_the_hnsw_index(
    admin_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge import selectors

    collection = factories.collection(name="Big")
    factories.document(collection=collection, text="Annual leave is twenty-five days.", filename="leave.txt")
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_ROWS", 0)
    plans: list[SearchPlan] = []
    hits = search(admin_user, "annual leave", k=5, plan_out=plans)
    assert plans[0].strategy == "hnsw" and plans[0].ef_search == 100
    assert [hit.document.filename for hit in hits] == ["leave.txt"]


UNSTEMMED = {"leav": "leave", "annual": "annual", "polici": "policy"}


def _stats(monkeypatch: pytest.MonkeyPatch, frequencies: dict[str, float], rows: float) -> None:
    import math

    # Each word is a stemmed English lexeme and an unstemmed language-neutral one, equally common.
    both = frequencies | {UNSTEMMED[word]: share for word, share in frequencies.items()}
    stats = keywords._LexemeStats(both, min(both.values()), rows)
    monkeypatch.setattr(keywords, "_lexeme_stats", (math.inf, stats))  # never stale


def test_common_words_are_not_ranked_by(monkeypatch: pytest.MonkeyPatch) -> None:
    from knowledge.keywords import informative_lexemes

    _stats(monkeypatch, {"leav": 0.20, "annual": 0.01, "polici": 0.002}, rows=5_000)

    # Rarest first; "leave" is in a fifth of all chunks and says nothing.
    assert informative_lexemes("annual leave policy") == ["polici", "policy", "annual"]
    # Only common words: the two least common are still kept.
    _stats(monkeypatch, {"leav": 0.20, "annual": 0.10, "polici": 0.30}, rows=5_000)
    assert informative_lexemes("annual leave policy") == ["annual", "leav"]
    # ...unless even they are in too many chunks to look up.
    _stats(monkeypatch, {"leav": 0.20, "annual": 0.10, "polici": 0.30}, rows=1_000_000)
    assert informative_lexemes("annual leave policy") == []


def test_the_any_word_pass_weighs_rare_words_more(admin_user: Any) -> None:
    """BM25: one chunk holding the rare word beats chunks holding only a word every chunk has."""
    collection = factories.collection(name="Handbook")
    for n in range(4):
        factories.document(collection=collection, text=f"Office hours, part {n}.", filename=f"{n}.txt")
    factories.document(collection=collection, text="Chess club on Tuesdays.", filename="chess.txt")

    # No chunk holds every word, so the any-word pass ranks them all.
    hits = search(admin_user, "office chess", k=5, mode="keyword")
    assert hits[0].document.filename == "chess.txt"
    assert hits[0].keyword_score is not None and hits[0].keyword_score > hits[1].keyword_score  # type: ignore[operator]


def test_in_a_large_table_words_are_kept_rarest_first_within_the_rank_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    # A million chunks: "annual" is in ~8,000 of them, "polici" (and "policy") in ~2,000 each.
    _stats(monkeypatch, {"leav": 0.03, "annual": 0.008, "polici": 0.002}, rows=1_000_000)
    monkeypatch.setattr(keywords, "KEYWORD_RANK_BUDGET", 10_000)
    assert keywords.informative_lexemes("annual leave policy") == ["polici", "policy"]

    # A reader of a twentieth of that table: the same words cost a twentieth as much.
    assert keywords.informative_lexemes("annual leave policy", readable_rows=50_000) == [
        "polici",
        "policy",
        "annual",
        "leav",
        "leave",
    ]

    # When even the rarest word is over the budget, there is no any-word pass.
    monkeypatch.setattr(keywords, "KEYWORD_RANK_BUDGET", 1_000)
    assert keywords.informative_lexemes("annual leave policy") == []

    # A smaller table: all of them fit.
    _stats(monkeypatch, {"leav": 0.03, "annual": 0.008, "polici": 0.002}, rows=50_000)
    monkeypatch.setattr(keywords, "KEYWORD_RANK_BUDGET", 10_000)
    kept = keywords.informative_lexemes("annual leave policy")
    assert kept == ["polici", "policy", "annual", "leav", "leave"]


def test_the_plan_counts_readable_chunks_in_one_statement(member: Any, admin_user: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from knowledge.selectors import _plan, readable_collection_ids

    mine = factories.collection(name="Mine", readers=[member])
    other = factories.collection(name="Other")
    factories.document(collection=mine, text="Annual leave is twenty-five days.", filename="a.txt")
    factories.document(collection=other, text="Contractors are paid monthly.", filename="b.txt")

    with CaptureQueriesContext(connection) as queries:
        plan = _plan(readable_collection_ids(member))
    assert len(queries) == 2  # the permission query and the plan
    assert plan.filtered and plan.readable_rows == 1
    unfiltered = _plan(readable_collection_ids(admin_user))
    assert not unfiltered.filtered and unfiltered.readable_rows == 2


def _index_names() -> set[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunk_hnsw_collection_%%' "
            "OR indexname LIKE 'chunk_gin_collection_%%'"
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def collection_indexes() -> Iterator[None]:
    """Committed data (indexes are built CONCURRENTLY, outside a transaction); collection indexes
    dropped before (test_migrations' CJK test leaves its collection's behind) and after."""
    from django.db import connection

    def drop() -> None:
        with connection.cursor() as cursor:
            for name in _index_names():
                cursor.execute(f"DROP INDEX IF EXISTS {name}")

    drop()
    yield
    drop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("collection_indexes")
def test_large_collections_get_their_own_indexes_and_lose_them_when_small(settings: Any) -> None:
    from knowledge.indexes import collection_indexes_sync

    big = factories.collection(name="Big")
    small = factories.collection(name="Small")
    for n in range(3):
        factories.document(collection=big, text=f"Policy number {n} covers travel.", filename=f"{n}.txt")
    factories.document(collection=small, text="Lunch is at noon.", filename="lunch.txt")
    settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = 2

    first = collection_indexes_sync()
    assert (first.created, first.dropped) == ([big.pk], [])
    assert _index_names() == {f"chunk_hnsw_collection_{big.pk}", f"chunk_gin_collection_{big.pk}"}
    again = collection_indexes_sync()
    assert (again.created, again.dropped) == ([], [])

    # A collection missing one of its two indexes gets both again.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX chunk_gin_collection_{big.pk}")
    repaired = collection_indexes_sync()
    assert (repaired.created, repaired.dropped) == ([big.pk], [big.pk])
    assert len(_index_names()) == 2

    # Dropped below half the threshold, not at the threshold itself (no flapping).
    settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = 6
    assert collection_indexes_sync().dropped == []
    settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = 8
    assert collection_indexes_sync().dropped == [big.pk]
    assert _index_names() == set()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("collection_indexes")
def test_one_collection_index_sync_runs_at_a_time(settings: Any) -> None:
    """A second sync must not take the first one's index, invalid while it is built, for a failed
    build and drop it: it returns at once instead."""
    import psycopg
    from django.db import connection

    from knowledge.indexes import _SYNC_LOCK, collection_indexes_sync

    big = factories.collection(name="Big")
    for n in range(2):
        factories.document(collection=big, text=f"Policy number {n} covers travel.", filename=f"{n}.txt")
    settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = 2
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as other:  # another worker, mid-sync
        other.execute("SELECT pg_advisory_lock(%s, %s)", list(_SYNC_LOCK))
        busy = collection_indexes_sync()
    assert busy.skipped and busy.created == [] and _index_names() == set()

    # The lock goes with the other session, once the server has ended it: closing the client's
    # socket does not wait for that, so on a loaded machine the lock can outlive it briefly.
    with connection.cursor() as cursor:
        for _ in range(100):
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s",
                list(_SYNC_LOCK),
            )
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
    done = collection_indexes_sync()
    assert not done.skipped and done.created == [big.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("collection_indexes")
def test_a_filtered_search_walks_each_readable_collections_own_index(
    member: Any, outsider: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge import selectors
    from knowledge.indexes import collection_indexes_sync

    mine = factories.collection(name="Mine", readers=[member])
    small = factories.collection(name="Small and mine", readers=[member])
    other = factories.collection(name="Other", readers=[outsider])
    factories.document(collection=mine, text="Annual leave is twenty-five days.", filename="leave.txt")
    factories.document(collection=mine, text="Parking is free on weekends.", filename="parking.txt")
    factories.document(collection=small, text="Annual leave requests go to HR.", filename="hr.txt")
    factories.document(collection=other, text="Annual leave for contractors.", filename="contractors.txt")
    factories.document(collection=other, text="Annual leave carries over.", filename="carry.txt")
    settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = 2
    assert sorted(collection_indexes_sync().created) == sorted([mine.pk, other.pk])
    monkeypatch.setattr(selectors, "_collection_indexes", (float("-inf"), frozenset()))
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_ROWS", 1)  # the small collection's one chunk

    plans: list[SearchPlan] = []
    hits = search(member, "annual leave", k=5, mode="vector", plan_out=plans)

    assert plans[0].strategy == "hnsw-per-collection"
    assert plans[0].rows_by_collection == {mine.pk: 2, small.pk: 1}
    assert {hit.document.filename for hit in hits} == {"leave.txt", "parking.txt", "hr.txt"}

    # The keyword side looks each word up collection by collection, with the collection's id as
    # a constant (which matches the partial GIN index's predicate), and in the rest by filter.
    sql = keywords._bm25_sql(selectors._indexed_split(plans[0]))
    assert f"collection_id = {mine.pk} AND search_vector" in sql and "ANY(%(rest)s)" in sql
    found = search(member, "annual leave days", k=5, mode="keyword")
    assert {hit.document.filename for hit in found} == {"leave.txt", "hr.txt"}

    # More indexed collections than one query should walk: the table's index, filtered.
    monkeypatch.setattr(selectors, "COLLECTION_INDEX_MAX_SCANS", 0)
    plans.clear()
    hits = search(member, "annual leave", k=5, mode="vector", plan_out=plans)
    assert plans[0].strategy == "hnsw-overfetch"
    assert {hit.document.filename for hit in hits} <= {"leave.txt", "parking.txt", "hr.txt"}


def test_the_keyword_side_reads_a_bounded_number_of_matches(
    admin_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge.keywords import _bm25_matches, _ranked_matches, keyword_query_sql
    from knowledge.selectors import _plan

    collection = factories.collection(name="Leave")
    for n in range(3):
        factories.document(collection=collection, text=f"Annual leave rule {n}.", filename=f"{n}.txt")
    params = {"q": "annual leave", "ids": [collection.pk]}

    # The every-word pass: a reader of few chunks gets every match ranked...
    monkeypatch.setattr(keywords, "KEYWORD_RANK_MAX_ROWS", 1)
    assert len(_ranked_matches(keyword_query_sql(), params, 5, readable_rows=3)) == 3
    # ...a reader of many, the first KEYWORD_RANK_MAX_ROWS.
    monkeypatch.setattr(keywords, "KEYWORD_RANK_CAP_FROM_ROWS", 2)
    assert len(_ranked_matches(keyword_query_sql(), params, 5, readable_rows=3)) == 1

    # The any-word pass looks each word up in at most KEYWORD_RANK_BUDGET chunks.
    plan = _plan([collection.pk])
    assert len(_bm25_matches(["annual"], plan, 5)[0]) == 3
    monkeypatch.setattr(keywords, "KEYWORD_RANK_BUDGET", 1)
    assert len(_bm25_matches(["annual"], plan, 5)[0]) == 1

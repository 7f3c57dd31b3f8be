from __future__ import annotations

import random
import re

import pytest

from knowledge.chunking import ChunkDraft, chunk_document, document_text, estimate_tokens
from knowledge.parsing import Block, DocumentKind, ParsedDocument, parse_document

WORDS = [
    "the", "of", "backup", "restore", "database", "nightly", "region", "vault", "ticket",
    "operations", "team", "table", "deployment", "configuration", "über", "straße", "naïve",
    "café", "internationalisation", "a", "an", "is",
]  # fmt: skip


def doc(*blocks: Block) -> ParsedDocument:
    return ParsedDocument(kind=DocumentKind.TEXT, title=None, blocks=blocks, page_count=None)


def sentence(rng: random.Random, low: int = 3, high: int = 18) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + rng.choice([".", ".", "!", "?", "…"])


def generated_document(seed: int) -> ParsedDocument:
    """Paragraphs, lists, CJK, over-long sentences and words, under changing headings/pages."""
    rng = random.Random(seed)
    paths = [(), ("Intro",), ("Intro", "Details"), ("Usage",), ("Usage", "Advanced", "Edge")]
    blocks: list[Block] = []
    page = 1
    for _ in range(rng.randint(8, 25)):
        previous = blocks[-1].heading_path if blocks else ()
        path = rng.choice(paths) if rng.random() < 0.3 else previous
        page += rng.random() < 0.3
        shape = rng.random()
        if shape < 0.5:
            text = " ".join(sentence(rng) for _ in range(rng.randint(1, 12)))
        elif shape < 0.65:
            text = "\n".join(f"- {sentence(rng, 1, 6)}" for _ in range(rng.randint(2, 30)))
        elif shape < 0.75:
            text = "。".join("数据库备份每天晚上运行" * rng.randint(1, 4) for _ in range(5)) + "。"
        elif shape < 0.85:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 400)))
        elif shape < 0.9:
            text = f"See {'x' * rng.randint(300, 700)} for details. " + sentence(rng)
        else:
            text = "  Indented code:\n\n    run --all\n\n\tdone  "
        blocks.append(Block(text, path, page))
    return doc(*blocks)


def assert_valid(parsed: ParsedDocument, chunks: list[ChunkDraft], max_tokens: int) -> None:
    text = document_text(parsed)
    starts: list[int] = []
    offset = 0
    for block in parsed.blocks:
        starts.append(offset)
        offset += len(block.text) + 2

    def block_at(position: int) -> Block:
        index = max(i for i, start in enumerate(starts) if start <= position)
        return parsed.blocks[index]

    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    covered = [False] * len(text)
    for previous, chunk in zip([None, *chunks], chunks, strict=False):
        assert chunk.text.strip()
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.token_count == estimate_tokens(chunk.text)
        if chunk.token_count > max_tokens:
            # Only a lone word too long for any chunk may exceed the budget.
            assert not re.search(r"\s", chunk.text)
        first, last = block_at(chunk.char_start), block_at(chunk.char_end - 1)
        assert chunk.heading_path == first.heading_path == last.heading_path
        assert chunk.page == first.page
        # Never cut inside a word: the neighbouring characters are spaces or CJK.
        for inside, outside in (
            (chunk.char_start, chunk.char_start - 1),
            (chunk.char_end - 1, chunk.char_end),
        ):
            if 0 <= outside < len(text):
                pair = text[inside] + text[outside]
                assert re.search(r"\s|[\u4e00-\u9fff]", pair), (pair, chunk.text[:40])
        if previous is not None:
            assert chunk.char_start > previous.char_start
            assert chunk.char_end > previous.char_end
        for position in range(chunk.char_start, chunk.char_end):
            covered[position] = True
    # Nothing is lost: every visible character ends up in some chunk.
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(40, 10), (120, 30), (300, 40)])
def test_generated_documents_keep_invariants(seed: int, max_tokens: int, overlap_tokens: int) -> None:
    parsed = generated_document(seed)

    chunks = chunk_document(parsed, max_tokens=max_tokens, overlap_tokens=overlap_tokens)

    assert_valid(parsed, chunks, max_tokens)


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 3  # 2 words x 1.3, rounded up
    assert estimate_tokens("Hello, world.") == 5  # punctuation marks count as tokens
    assert estimate_tokens("数据库备份") == 5  # one token per CJK character
    assert estimate_tokens("Donaudampfschifffahrtsgesellschaft") == 9  # long word: chars / 4
    assert estimate_tokens("word " * 100) >= 130


def test_small_blocks_are_packed_together() -> None:
    parsed = doc(Block("One short paragraph."), Block("Another one."), Block("A third."))

    chunks = chunk_document(parsed)

    assert [chunk.text for chunk in chunks] == [document_text(parsed)]
    assert chunks[0].text == "One short paragraph.\n\nAnother one.\n\nA third."


def test_heading_change_starts_a_new_chunk_without_overlap() -> None:
    parsed = doc(
        Block("Install with apt.", ("Install",), 1),
        Block("Then start it.", ("Install",), 1),
        Block("Configure the port.", ("Configure",), 2),
    )

    chunks = chunk_document(parsed, max_tokens=300, overlap_tokens=40)

    assert [(chunk.text, chunk.heading_path, chunk.page) for chunk in chunks] == [
        ("Install with apt.\n\nThen start it.", ("Install",), 1),
        ("Configure the port.", ("Configure",), 2),
    ]


def test_page_change_does_not_split_and_page_is_the_first() -> None:
    parsed = doc(Block("End of page one.", (), 1), Block("Start of page two.", (), 2))

    chunks = chunk_document(parsed)

    assert len(chunks) == 1
    assert chunks[0].page == 1


def test_long_block_is_split_at_sentences() -> None:
    sentences = [f"Sentence number {n} talks about nightly backups." for n in range(40)]
    parsed = doc(Block(" ".join(sentences)))

    chunks = chunk_document(parsed, max_tokens=50, overlap_tokens=0)

    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.token_count <= 50
        assert chunk.text.startswith("Sentence number ")
        assert chunk.text.endswith("backups.")
    assert " ".join(chunk.text for chunk in chunks) == " ".join(sentences)


def test_overlap_repeats_whole_trailing_sentences() -> None:
    sentences = [f"Fact {n} is short." for n in range(60)]
    parsed = doc(Block(" ".join(sentences[:30])), Block(" ".join(sentences[30:])))

    chunks = chunk_document(parsed, max_tokens=60, overlap_tokens=15)

    assert len(chunks) > 3
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.char_start < previous.char_end
        shared = document_text(parsed)[chunk.char_start : previous.char_end]
        assert previous.text.endswith(shared)
        assert chunk.text.startswith(shared)
        assert re.fullmatch(r"(Fact \d+ is short\.\s*)+", shared)
        assert 0 < estimate_tokens(shared) <= 15
        assert chunk.token_count <= 60


def test_over_long_sentence_is_split_at_words() -> None:
    words = [f"word{n}" for n in range(200)]
    parsed = doc(Block(" ".join(words) + "."))

    chunks = chunk_document(parsed, max_tokens=30, overlap_tokens=5)

    assert len(chunks) > 1
    assert all(chunk.token_count <= 30 for chunk in chunks)
    pieces = [word for chunk in chunks for word in chunk.text.rstrip(".").split()]
    assert pieces == words  # no overlap inside a sentence, no word cut in half


def test_unsplittable_word_is_its_own_chunk() -> None:
    blob = "A" * 2000
    parsed = doc(Block(f"Key follows. {blob} End of key."))

    chunks = chunk_document(parsed, max_tokens=50, overlap_tokens=10)

    assert [chunk.text for chunk in chunks] == ["Key follows.", blob, "End of key."]
    assert chunks[1].token_count == 500


def test_chunking_is_deterministic() -> None:
    parsed = generated_document(99)

    first = chunk_document(parsed, max_tokens=80, overlap_tokens=20)
    second = chunk_document(parsed, max_tokens=80, overlap_tokens=20)

    assert first == second
    assert len(first) > 3


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(doc()) == []


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_budgets_are_rejected(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError):
        chunk_document(doc(Block("x")), max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def test_parsed_markdown_chunks_follow_headings() -> None:
    source = "# Guide\n\nIntro text.\n\n## Install\n\n" + "Run the installer now. " * 60
    parsed = parse_document(source.encode(), "guide.md")

    chunks = chunk_document(parsed, max_tokens=100, overlap_tokens=20)

    assert chunks[0].heading_path == ("Guide",)
    assert chunks[0].text == "Intro text."
    assert all(chunk.heading_path == ("Guide", "Install") for chunk in chunks[1:])
    assert_valid(parsed, chunks, 100)

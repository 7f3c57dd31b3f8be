"""Model output becomes safe HTML: Markdown without raw HTML, citation markers as links."""

from __future__ import annotations

import pytest

from assistant.rendering import highlight, markdown_html


def cite_url(n: int) -> str:
    return f"/answers/7/sources/{n}/"


CITED = [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '<a href="/" onclick="steal()">x</a>',
        "<iframe src=https://evil.example></iframe>",
        "<style>body{display:none}</style>",
        '<div hx-get="/logout/" hx-trigger="load">x</div>',
    ],
)
def test_raw_html_from_the_model_is_shown_as_text(hostile: str) -> None:
    html = markdown_html(f"Before {hostile} after")

    assert "<script" not in html and "<img" not in html and "<iframe" not in html and "<style" not in html
    assert "<div" not in html and "<a " not in html
    assert "&lt;" in html  # escaped, so the reader sees what the model wrote


def test_dangerous_links_are_not_links_and_safe_ones_get_rel() -> None:
    html = markdown_html("[a](javascript:alert(1)) [b](data:text/html;base64,xx) [c](https://example.org/x)")

    assert 'href="javascript' not in html and 'href="data:' not in html
    assert '<a href="https://example.org/x" rel="noopener noreferrer nofollow">c</a>' in html


def test_images_become_links_so_nothing_loads_without_a_click() -> None:
    html = markdown_html("![tracking pixel](https://tracker.example/p.png?secret=1)")

    assert "<img" not in html
    assert 'href="https://tracker.example/p.png?secret=1"' in html


def test_markdown_formatting_survives() -> None:
    html = markdown_html(
        "# Title\n\n**bold** and *em* and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )

    for tag in (
        "<h1>",
        "<strong>bold</strong>",
        "<em>em</em>",
        "<code>code</code>",
        "<li>one</li>",
        "<td>1</td>",
    ):
        assert tag in html


def test_citation_markers_link_to_the_cited_sources() -> None:
    html = markdown_html("Due on the 5th [1]. Receipts too [1, 2].", cite_url=cite_url, citations=CITED)

    assert html.count('href="/answers/7/sources/1/"') == 2
    assert html.count('href="/answers/7/sources/2/"') == 1
    assert 'class="cite"' in html and 'data-cite="2"' in html and '<sup class="cites">' in html


def test_markers_for_uncited_numbers_and_in_code_stay_text() -> None:
    html = markdown_html("See [3] and `x[1]` and [a [1]](https://e.org)", cite_url=cite_url, citations=CITED)

    assert "[3]" in html and "sources/3" not in html
    assert "<code>x[1]</code>" in html
    assert "sources/1" not in html  # no link inside a link


def test_without_citations_markers_are_plain_text() -> None:
    assert markdown_html("Stopped mid-way [1]") == "<p>Stopped mid-way [1]</p>\n"


def test_highlight_escapes_and_marks_the_quote() -> None:
    text = "Intro <b>. Expense reports are due on the 5th. Outro"

    html = highlight(text, "Expense reports are due on the 5th.")

    assert html == "Intro &lt;b&gt;. <mark>Expense reports are due on the 5th.</mark> Outro"
    assert highlight("<i>x</i>", "not there") == "&lt;i&gt;x&lt;/i&gt;"

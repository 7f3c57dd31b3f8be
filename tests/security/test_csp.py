"""The Content-Security-Policy: on every response (pages, htmx fragments, the API); markup with no
inline script or style; and, in Chromium, the chat, upload, review, ops and evals pages used as a
person would, with no violation and no console error."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import ConsoleMessage, Page, expect

from assistant import services
from assistant.models import Flag
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "img-src": {"'self'"},
    "connect-src": {"'self'"},
    "object-src": {"'none'"},
    "base-uri": {"'none'"},
    "frame-ancestors": {"'none'"},
    "form-action": {"'self'"},
}
# What a strict policy refuses in markup: a style element or attribute, a script without src, an
# event-handler attribute, htmx's hx-on (evaluated code) and javascript: URLs.
INLINE = re.compile(
    r"<style\b|\sstyle\s*=|<script\b(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\shx-on|javascript:", re.IGNORECASE
)


def directives(response: Any) -> dict[str, set[str]]:
    header = response["Content-Security-Policy"]
    parsed: dict[str, set[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split()
        parsed[name] = set(sources)
    return parsed


@pytest.fixture
def staff(client: Client, admin_user: Any) -> Client:
    """A superuser: every staff page and every admin link shows, so the most markup is checked."""
    client.force_login(admin_user)
    return client


def test_the_login_page_carries_the_policy(client: Client) -> None:
    response = client.get("/login/")

    assert response.status_code == 200
    assert directives(response) == POLICY
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


@pytest.mark.parametrize(
    "url",
    ["/", "/tokens/", "/knowledge/", "/knowledge/retrieval/?q=expense+reports", "/evals/", "/review/",
     "/ops/", "/routing/", "/admin/"],
)  # fmt: skip
def test_pages_and_their_htmx_fragments_carry_the_policy_and_no_inline_code(
    staff: Client, policy: Any, url: str
) -> None:
    page = staff.get(url)
    fragment = staff.get(url, headers={"HX-Request": "true"})

    for response in (page, fragment):
        assert response.status_code == 200
        assert directives(response) == POLICY
        html = response.content.decode()
        assert not INLINE.search(html), INLINE.search(html)


def test_the_chat_answer_its_source_and_the_review_item_have_no_inline_code(
    staff: Client, admin_user: Any, policy: Any, assistant: Any, fake_provider: Any
) -> None:
    from tests.expense_policy import GOOD

    fake_provider.replies.append(GOOD)
    conversation = services.conversation_create(user=admin_user)
    _asked, pending = services.message_send(conversation=conversation, text="When are expense reports due?")
    message = services.answer_complete(message=pending)
    answer = message.answer  # type: ignore[attr-defined]
    services.flag_create(answer=answer, user=admin_user, category="wrong")

    for url in (
        f"/c/{conversation.pk}/",
        f"/messages/{message.pk}/",
        f"/answers/{answer.pk}/sources/1/",
        f"/review/answers/{answer.pk}/",
        f"/admin/assistant/answer/{answer.pk}/change/",
    ):
        response = staff.get(url, headers={"HX-Request": "true"} if "/messages/" in url else {})
        assert response.status_code == 200, url
        assert directives(response) == POLICY, url
        html = response.content.decode()
        assert not INLINE.search(html), (url, INLINE.search(html))


def test_the_api_carries_the_policy(client: Client, outsider: Any) -> None:
    _token, raw = services.api_token_create(user=outsider, name="csp")

    models = client.get("/v1/models", headers={"Authorization": f"Bearer {raw}"})
    refused = client.get("/v1/models")

    assert models.status_code == 200 and refused.status_code == 401
    assert directives(models) == POLICY and directives(refused) == POLICY


def test_charts_colour_their_legend_with_classes() -> None:
    from common.charts import line_chart

    html = line_chart(["a", "b"], {"one": [0.5, 1.0], "two": [0.2, None]}, title="t")

    assert 'class="swatch series-0"' in html and 'class="swatch series-1"' in html
    assert not INLINE.search(html)


def test_htmx_is_told_to_add_no_inline_style_and_evaluate_nothing(staff: Client) -> None:
    html = staff.get("/").content.decode()

    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", html)
    assert config is not None
    assert '"includeIndicatorStyles": false' in config.group(1)
    assert '"allowEval": false' in config.group(1)


# --- in Chromium: nothing the policy refuses is ever attempted ---------------------------------

# Records every violation into window (read with page.evaluate) and hands it to the test through a
# binding, so that one on a page left behind by a navigation is not lost.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
window.addEventListener("securitypolicyviolation", (event) => {
  const seen = {
    page: location.pathname, directive: event.violatedDirective, blocked: event.blockedURI,
    sample: event.sample, source: event.sourceFile + ":" + event.lineNumber,
  };
  window.__cspViolations.push(seen);
  window.reportCspViolation(JSON.stringify(seen));
}, true);
"""
ANSWER = json.dumps(
    {
        "answer": "Expense reports are due on the 5th of each month [1]. Submit them in the portal [1].",
        "citations": [1],
        "confidence": 0.9,
        "not_found": False,
        "follow_ups": ["How do I attach receipts?"],
    }
)


POLICY_TEXT = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""


@pytest.fixture
def problems(page: Page) -> list[str]:
    """CSP violations, console errors and uncaught script errors on `page`, as they happen."""
    seen: list[str] = []
    page.expose_function("reportCspViolation", lambda text: seen.append(f"CSP violation: {text}"))
    page.add_init_script(RECORD_VIOLATIONS)

    def console(message: ConsoleMessage) -> None:
        # Chromium asks every site for /favicon.ico, which Groundwork does not serve: not a page's error.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            seen.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: seen.append(f"script error: {error}"))
    return seen


@pytest.fixture
def boss(transactional_db: None) -> Any:
    """A superuser who can read the finance policies: every staff page and admin link shows."""
    user = factories.user(username="boss", superuser=True)
    collection = factories.collection(name="Finance policies", readers=[user])
    factories.document(collection=collection, text=POLICY_TEXT, filename="expenses.md")
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0  # the fake embeddings are crude
    assistant.save(update_fields=["min_similarity"])
    return user


def log_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"pw-{username}")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#composer textarea")).to_be_visible()


def no_violation_so_far(page: Page, problems: list[str]) -> None:
    page.wait_for_timeout(300)  # lets a violation from the last step arrive through the binding
    assert page.evaluate("window.__cspViolations") == []
    assert problems == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_chat_with_evidence_a_source_and_a_flag_runs_within_the_policy(
    page: Page,
    problems: list[str],
    live_server: Any,
    boss: Any,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.9)
    fake_provider.replies.append(ANSWER)
    log_in(page, live_server.url, "boss")

    composer = page.locator("#composer textarea")
    composer.fill("When are expense reports due?\nAnd where do I send them?")
    # chat.js grows the composer through element.style, which the policy allows (only style
    # attributes and elements in markup are refused).
    expect(composer).to_have_attribute("style", re.compile(r"height: \d+"))
    composer.fill("When are expense reports due?")
    composer.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(answer.locator(".evidence h3")).to_have_text("From your documents")
    expect(answer.locator(".answer-text")).to_contain_text("due on the 5th of each month")

    answer.locator(".answer-text a.cite").first.click()
    panel = page.locator("#source-panel")
    expect(panel.locator(".source-text mark").first).to_contain_text("Expense reports are due")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    answer.locator(".suggestions .chip").first.click()
    expect(composer).to_have_value("How do I attach receipts?")
    answer.locator("[data-flag]").click()
    answer.locator("select[name=category]").select_option("wrong")
    answer.get_by_role("button", name="Send flag").click()
    expect(answer.locator(".flag .thanks")).to_be_visible()
    answer.locator("[data-thumbs-down]").click()
    expect(answer.get_by_label("What was wrong?")).to_be_visible()

    no_violation_so_far(page, problems)
    # The recorder does catch what the policy refuses: an inline style element is one.
    page.evaluate("document.head.insertAdjacentHTML('beforeend', '<style>body { color: red; }</style>')")
    page.wait_for_timeout(300)
    assert [v["directive"] for v in page.evaluate("window.__cspViolations")] == ["style-src-elem"]
    assert any(p.startswith("CSP violation") for p in problems)
    assert any(p.startswith("console") and "Content Security Policy" in p for p in problems)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_staff_pages_run_within_the_policy(
    page: Page,
    problems: list[str],
    live_server: Any,
    boss: Any,
    fake_provider: FakeProvider,
    tmp_path: Path,
) -> None:
    from evals import services as evals_services
    from evals.models import Case, Suite

    base = live_server.url
    fake_provider.replies.append(ANSWER)
    answer = services.answer_for(user=boss, question="When are expense reports due?")
    services.flag_create(answer=answer, user=boss, category=Flag.Category.WRONG, note="It is the 10th now.")
    suite = Suite.objects.create(name="Policies")
    Case.objects.create(suite=suite, question="When are expense reports due?", expected=["5th of each month"])
    fake_provider.replies.append(ANSWER)
    run = evals_services.run_start(suite=suite, enqueue=False)
    for result_id in run.results.values_list("pk", flat=True):
        evals_services.result_execute(result_id=result_id)
    log_in(page, base, "boss")

    # Documents: upload a file through htmx (progress bar, the panel swapped in).
    page.goto(f"{base}/knowledge/")
    upload = tmp_path / "travel.md"
    upload.write_text("# Travel\n\nBook trains at least two weeks ahead.\n")
    page.locator("select[name=collection]").select_option(label="Finance policies")
    page.locator("input[type=file]").set_input_files(upload)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-panel .document-row .filename")).to_have_text("travel.md")
    no_violation_so_far(page, problems)

    # Retrieval: a search swapped in under htmx's indicator.
    page.goto(f"{base}/knowledge/retrieval/")
    page.get_by_label("Query").fill("expense reports")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results")).to_contain_text("expenses.md")
    no_violation_so_far(page, problems)

    # Review: the queue filtered under htmx's indicator, then the item and its actions.
    page.goto(f"{base}/review/")
    rows = page.locator("tr.queue-item")
    expect(rows).to_have_count(1)
    page.get_by_label("Flagged by").select_option("grounding")
    expect(rows).to_have_count(0)
    page.get_by_label("Flagged by").select_option("")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="When are expense reports due?").click()
    expect(page.get_by_text("It is the 10th now.")).to_be_visible()
    page.get_by_text("Correct", exact=True).click()
    expect(page.get_by_label("The right answer")).to_be_visible()
    no_violation_so_far(page, problems)

    # Operations and evals: server-drawn SVG charts whose legend colours come from app.css.
    for url in (f"{base}/ops/", f"{base}/evals/suites/{suite.pk}/"):
        page.goto(url)
        swatch = page.locator(".legend .swatch").first
        expect(swatch).to_be_visible()
        assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(0, 114, 178)"
    for url in ("/evals/", f"/evals/runs/{run.pk}/", "/tokens/", "/routing/", "/admin/",
                f"/admin/assistant/answer/{answer.pk}/change/"):  # fmt: skip
        page.goto(f"{base}{url}")
        expect(page.locator("body")).not_to_be_empty()
    no_violation_so_far(page, problems)

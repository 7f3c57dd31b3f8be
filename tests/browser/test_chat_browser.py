"""The chat page in a real browser: what a person sees while asking, reading and reacting."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from assistant import services
from assistant.models import Feedback, Flag, Message
from gateway import provider
from tests import factories
from tests.fakes import FakeProvider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEADLINES = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""
QUESTION = "When are expense reports due?"
ANSWER = "Expense reports are due on the 5th of each month [1]. Submit them in the finance portal [1]."
FOLLOW_UP = "How do I attach receipts in the finance portal?"


@pytest.fixture
def knowledge(db: None) -> Any:
    """A member who can read one indexed document, and an assistant that answers from it."""
    member = factories.user(username="reader")
    collection = factories.collection(name="Finance policies", readers=[member])
    factories.document(collection=collection, text=DEADLINES, filename="expenses.md")
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0  # the fake embeddings are crude
    assistant.save(update_fields=["min_similarity"])
    return member


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds the fake model after its first sentence until the test opens the gate.

    The fake answers instantly; held like this the page stays in its streaming state long enough
    to be looked at, without any sleep. The output guardrail releases streamed text a sentence at
    a time, so the hold comes once the first sentence has been written.
    """
    opened = threading.Event()
    fake_stream = provider.chat_stream

    def held_stream(messages: Any, **kwargs: Any) -> Iterator[Any]:
        written = ""
        for event in fake_stream(messages, **kwargs):
            if isinstance(event, provider.StreamDelta):
                if re.search(r"[.!?]\s+$", written):
                    opened.wait(timeout=15)
                written += event.text
            yield event

    monkeypatch.setattr(provider, "chat_stream", held_stream)
    yield opened
    opened.set()


def log_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"pw-{username}")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#composer textarea")).to_be_visible()


def test_asking_reading_a_source_and_reacting(
    page: Page, live_server: Any, knowledge: Any, fake_provider: FakeProvider, gate: threading.Event
) -> None:
    fake_provider.replies.append(
        json.dumps(
            {
                "answer": ANSWER,
                "citations": [1],
                "confidence": 0.9,
                "not_found": False,
                "follow_ups": [FOLLOW_UP],
            }
        )
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, live_server.url, "reader")
    expect(page.get_by_text("Finance policies")).to_be_visible()  # the capability notice
    expect(page.locator("#first-run .chip").first).to_be_visible()

    composer = page.locator("#composer textarea")
    composer.fill(QUESTION)
    composer.press("Enter")

    answer = page.locator(".msg-assistant").last
    expect(page.locator(".msg-user .bubble")).to_have_text(QUESTION)
    expect(composer).to_have_value("")  # cleared for the next question
    # While the model is held mid-answer: streamed words and a Stop button.
    expect(answer.locator("[data-stream-text]")).to_contain_text("Expense")
    expect(answer.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.locator("#first-run")).to_have_count(0)
    gate.set()

    expect(answer).to_have_class(re.compile(r"\bstatus-complete\b.*\bstate-grounded\b"))
    expect(answer.locator(".ai-label")).to_have_text("AI-generated")
    expect(answer.locator(".answer-text")).to_contain_text("due on the 5th of each month")
    expect(answer.get_by_role("button", name="Stop")).to_have_count(0)
    page.screenshot(path="/tmp/chat.png")

    # The [1] marker opens the source panel with the quoted passage marked.
    answer.locator(".answer-text a.cite").first.click()
    panel = page.locator("#source-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_contain_text("Expense policy")
    expect(panel.locator(".source-text mark").first).to_contain_text(
        "Expense reports are due on the 5th of each month"
    )
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # A suggestion fills the composer; nothing is sent.
    answer.locator(".suggestions .chip", has_text=FOLLOW_UP).click()
    expect(composer).to_have_value(FOLLOW_UP)
    expect(composer).to_be_focused()
    expect(page.locator(".msg")).to_have_count(2)
    assert Message.objects.count() == 2

    # Thumbs down with a reason, then a flag with a category.
    answer.locator("[data-thumbs-down]").click()
    answer.get_by_label("What was wrong?").fill("It left out the portal link")
    answer.get_by_role("button", name="Send", exact=True).click()
    expect(answer.locator(".feedback .thanks")).to_be_visible()
    answer.locator("[data-flag]").click()
    answer.locator("select[name=category]").select_option("unsupported")
    answer.locator("textarea[name=note]").fill("The portal is not in the source")
    answer.get_by_role("button", name="Send flag").click()
    expect(answer.locator(".flag .thanks")).to_be_visible()

    assert Feedback.objects.filter(rating=-1, reason="It left out the portal link").exists()
    assert Flag.objects.filter(category="unsupported", note="The portal is not in the source").exists()
    assert errors == []  # no script error along the way


def test_stopping_keeps_what_was_written_and_retry_answers_again(
    page: Page, live_server: Any, knowledge: Any, fake_provider: FakeProvider, gate: threading.Event
) -> None:
    fake_provider.replies.extend([reply(), reply()])
    log_in(page, live_server.url, "reader")
    composer = page.locator("#composer textarea")
    composer.fill(QUESTION)
    composer.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator("[data-stream-text]")).to_contain_text("Expense")

    answer.get_by_role("button", name="Stop").click()

    expect(answer.get_by_text("Stopped", exact=True)).to_be_visible()
    expect(answer.locator(".answer-text")).to_contain_text("Expense")  # what was shown stays
    gate.set()
    message = Message.objects.get(role=Message.Role.ASSISTANT)
    for _ in range(50):  # the server stores the partial text once the model's next words arrive
        message.refresh_from_db()
        if message.content:
            break
        page.wait_for_timeout(100)
    assert message.status == Message.Status.STOPPED
    assert message.content and ANSWER.startswith(message.content)

    answer.get_by_role("button", name="Retry").click()
    expect(answer).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(answer.locator(".answer-text")).to_contain_text("Submit them in the finance portal")


def test_an_answer_left_waiting_streams_when_the_page_opens(
    page: Page, live_server: Any, knowledge: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(reply())
    conversation = services.conversation_create(user=knowledge)
    services.message_send(conversation=conversation, text=QUESTION)  # the tab closed before streaming

    log_in(page, live_server.url, "reader")

    answer = page.locator(".msg-assistant")
    expect(answer).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(answer.locator(".answer-text a.cite")).to_have_count(2)


def test_the_notice_stays_hidden_after_a_reload(page: Page, live_server: Any, knowledge: Any) -> None:
    log_in(page, live_server.url, "reader")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()

    with page.expect_response(lambda r: r.url.endswith("/notice/")):
        notice.get_by_role("button", name="Hide this notice").click()
    expect(notice).to_be_hidden()
    page.reload()
    expect(page.locator("#notice")).to_be_hidden()

    page.get_by_role("button", name="About this assistant").click()
    expect(page.locator("#notice")).to_be_visible()


def reply(answer: str = ANSWER, *, confidence: float = 0.9, not_found: bool = False) -> str:
    return json.dumps(
        {
            "answer": answer,
            "citations": [1],
            "confidence": confidence,
            "not_found": not_found,
            "follow_ups": [],
        }
    )


def test_each_kind_of_answer_looks_different(
    page: Page,
    live_server: Any,
    knowledge: Any,
    fake_provider: FakeProvider,
    settings: Any,
    evidence_strength: Callable[[float], None],
) -> None:
    # The same question each time, each answered by the model: no answer from the cache.
    settings.ANSWER_CACHE_ENABLED = False
    conversation = services.conversation_create(user=knowledge)
    unsupported = "Expense reports are due on the 5th [1]. Late reports are forgiven by the board."
    outcomes: list[tuple[float, Any]] = [
        (0.9, reply()),
        (0.9, reply(confidence=0.2)),
        (0.9, reply(unsupported)),  # the evidence is quoted instead, the model's text kept behind it
        (0.1, reply("The sources do not say.", not_found=True)),  # weak evidence: not found
        (
            0.9,
            provider.ProviderError(
                "The chat model server cannot be reached.", kind=provider.ErrorKind.UNAVAILABLE
            ),
        ),
    ]
    for strength, outcome in outcomes:
        evidence_strength(strength)
        fake_provider.replies.append(outcome)
        _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
        services.answer_complete(message=pending)
    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    services.message_stop(message=pending)

    log_in(page, live_server.url, "reader")
    answers = page.locator(".msg-assistant")

    expect(answers).to_have_count(6)
    expect(answers.locator(".ai-label")).to_have_count(6)
    expect(answers.nth(0).locator(".note")).to_have_count(0)
    expect(answers.nth(0).locator(".evidence h3")).to_have_text("From your documents")
    expect(answers.nth(1).locator(".note-uncertain")).to_contain_text("Low confidence")
    quoted = answers.nth(2)
    expect(quoted.locator(".ai-label")).to_have_text("Quoted from your documents")
    expect(quoted.locator(".note-quoted")).to_contain_text("quoted from your documents")
    expect(quoted.locator(".answer-text.quoted")).to_contain_text(
        "Expense reports are due on the 5th of each month."
    )
    expect(quoted.locator(".model-text .claims li")).to_be_hidden()
    quoted.get_by_text("The assistant's own answer, not used").click()
    expect(quoted.locator(".model-text .claims li")).to_contain_text("forgiven by the board")
    expect(answers.nth(3).locator(".note-abstained")).to_contain_text("Not found in your knowledge")
    expect(answers.nth(3).locator(".evidence.related h3")).to_contain_text("Related passages")
    expect(answers.nth(4).locator(".answer-error")).to_contain_text("cannot be reached")
    expect(answers.nth(4).get_by_role("button", name="Retry")).to_be_visible()
    expect(answers.nth(5).get_by_text("Stopped", exact=True)).to_be_visible()
    page.screenshot(path="/tmp/chat-kinds.png", full_page=True)

    # Retry streams the failed answer again, in place.
    fake_provider.replies.append(reply())
    answers.nth(4).get_by_role("button", name="Retry").click()
    expect(answers.nth(4)).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(answers.nth(4).locator(".answer-text")).to_contain_text("due on the 5th")


@pytest.fixture
def held_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds the fake model before it writes a single token, until the test opens the gate."""
    opened = threading.Event()
    fake_stream = provider.chat_stream

    def held_stream(messages: Any, **kwargs: Any) -> Iterator[Any]:
        opened.wait(timeout=15)
        yield from fake_stream(messages, **kwargs)

    monkeypatch.setattr(provider, "chat_stream", held_stream)
    yield opened
    opened.set()


def test_the_evidence_is_on_screen_before_the_models_first_word_and_marked_in_its_source(
    page: Page,
    live_server: Any,
    knowledge: Any,
    fake_provider: FakeProvider,
    held_model: threading.Event,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.9)
    fake_provider.replies.append(reply("Late reports are forgiven by the regional board every winter [1]."))
    log_in(page, live_server.url, "reader")
    page.locator("#composer textarea").fill(QUESTION)
    page.locator("#composer textarea").press("Enter")

    answer = page.locator(".msg-assistant").last
    # The model has not written anything yet: what the documents say is already there.
    block = answer.locator("[data-evidence-slot] .evidence")
    expect(block.locator("h3")).to_have_text("From your documents")
    expect(block.locator("li").first).to_contain_text("Expense reports are due on the 5th of each month.")
    expect(answer.locator("[data-stream-text]")).to_have_text("")
    page.screenshot(path="/tmp/chat-evidence-first.png")
    held_model.set()

    # The model's answer is not supported, so the evidence stands as the answer, quoted.
    expect(answer).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(answer.locator(".ai-label")).to_have_text("Quoted from your documents")
    answer.locator(".answer-text a.cite").first.click()
    panel = page.locator("#source-panel")
    expect(panel.locator(".source-text mark.evidence").first).to_contain_text(
        "Expense reports are due on the 5th of each month."
    )
    expect(panel).to_contain_text("the sentences that best match your question")
    page.screenshot(path="/tmp/chat-evidence-source.png")


def test_on_a_phone_the_composer_is_in_view_and_the_sidebar_folds_away(
    phone: Page, live_server: Any, knowledge: Any, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(reply())
    log_in(phone, live_server.url, "reader")

    composer = phone.locator("#composer textarea")
    expect(composer).to_be_in_viewport()
    box = composer.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844
    expect(phone.locator("#chat-sidebar")).to_be_hidden()

    composer.fill(QUESTION)
    phone.get_by_role("button", name="Send").click()
    expect(phone.locator(".msg-assistant")).to_have_class(re.compile(r"\bstatus-complete\b"))
    expect(composer).to_be_in_viewport()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    phone.screenshot(path="/tmp/chat-phone.png")

    phone.get_by_role("button", name="☰ Conversations").click()
    expect(phone.locator("#chat-sidebar")).to_be_visible()
    expect(phone.locator("#conversation-list")).to_contain_text(QUESTION)

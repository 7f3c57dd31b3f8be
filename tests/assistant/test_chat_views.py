"""The chat page: sending, the streamed answer, its styles, and what people do with an answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils.html import escape

from assistant import services, views
from assistant.models import Answer, Assistant, Conversation, Feedback, Flag, Message
from gateway import provider
from knowledge.models import Collection
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
DEADLINES = """# Expense policy

## Deadlines

Expense reports are due on the 5th of each month.
Submit them in the finance portal with the receipts attached.
"""
QUESTION = "When are expense reports due?"
GOOD_ANSWER = "Expense reports are **due on the 5th** of each month [1]."


def reply(
    answer: str = GOOD_ANSWER,
    citations: list[int] | None = None,
    *,
    confidence: float = 0.9,
    not_found: bool = False,
    follow_ups: list[str] | None = None,
) -> str:
    return json.dumps(
        {
            "answer": answer,
            "citations": [1] if citations is None else citations,
            "confidence": confidence,
            "not_found": not_found,
            "follow_ups": follow_ups or [],
        }
    )


def sse(response: Any) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream; comments are kept as ("comment", text)."""
    body = b"".join(response.streaming_content).decode()
    events: list[tuple[str, str]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(("comment", block[1:].strip()))
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        events.append((name, "\n".join(data)))
    return events


@pytest.fixture
def assistant(db: None) -> Assistant:
    """The default assistant; any match counts, since the fake embeddings are crude."""
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0
    assistant.save(update_fields=["min_similarity"])
    return assistant


@pytest.fixture
def policies(member: Any, assistant: Assistant) -> Collection:
    collection = factories.collection(name="Policies", readers=[member])
    factories.document(collection=collection, text=DEADLINES, filename="expenses.md")
    return collection


@pytest.fixture
def member_client(client: Client, member: Any) -> Client:
    client.force_login(member)
    return client


def ask(client: Client, text: str = QUESTION, conversation: Conversation | None = None) -> Message:
    """Send a question through the composer; returns the pending answer."""
    url = reverse("assistant:send", args=[conversation.pk] if conversation else [])
    response = client.post(url, {"text": text}, headers=HTMX)
    assert response.status_code == 200
    return Message.objects.filter(role=Message.Role.ASSISTANT).latest("pk")


def stream(client: Client, message: Message) -> list[tuple[str, str]]:
    response = client.get(reverse("assistant:message_stream", args=[message.pk]))
    assert response.status_code == 200
    return sse(response)


def answered(client: Client, fake_provider: FakeProvider, text: str = GOOD_ANSWER, **kwargs: Any) -> Message:
    fake_provider.replies.append(reply(text, **kwargs))
    message = ask(client)
    stream(client, message)
    message.refresh_from_db()
    return message


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "method"),
    [
        ("assistant:home", [], "get"),
        ("assistant:new", [], "get"),
        ("assistant:conversation", [1], "get"),
        ("assistant:send", [], "post"),
        ("assistant:message_stream", [1], "get"),
        ("assistant:message_stop", [1], "post"),
        ("assistant:source", [1, 1], "get"),
        ("assistant:feedback", [1], "post"),
        ("assistant:replay", [1], "post"),
        ("assistant:notice", [], "post"),
    ],
)
def test_pages_need_login(client: Client, name: str, args: list[int], method: str) -> None:
    response = getattr(client, method)(reverse(name, args=args))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_first_run_offers_example_questions_and_says_what_the_assistant_can_do(
    member_client: Client, policies: Collection
) -> None:
    response = member_client.get(reverse("assistant:home"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="first-run"' in html
    # Example chips fill the composer: buttons, not links or forms that would send.
    assert 'class="chip" data-fill="What does Expense policy say about Deadlines?"' in html
    assert "answers from:</strong>" in html and "Policies" in html
    assert "no live data or internet access" in html and "not legal, medical or" in html
    assert 'id="composer"' in html and f'hx-post="{reverse("assistant:send")}"' in html
    assert Conversation.objects.count() == 0  # nothing is created by looking


def test_home_shows_the_latest_conversation(member_client: Client, member: Any, assistant: Assistant) -> None:
    older = services.conversation_create(user=member, title="Older")
    services.message_send(conversation=older, text="An older question")
    newer = services.conversation_create(user=member, title="Newer")
    services.message_send(conversation=newer, text="The newer question")

    html = member_client.get(reverse("assistant:home")).content.decode()

    assert "The newer question" in html and "An older question" not in html
    assert f'href="{reverse("assistant:conversation", args=[older.pk])}"' in html  # in the sidebar
    assert 'id="first-run"' not in html


def test_sending_stores_the_question_and_returns_both_messages(
    member_client: Client, member: Any, policies: Collection
) -> None:
    response = member_client.post(reverse("assistant:send"), {"text": QUESTION}, headers=HTMX)

    html = response.content.decode()
    conversation = Conversation.objects.get(user=member)
    asked, pending = conversation.messages.order_by("pk")
    assert response.status_code == 200
    assert (asked.role, asked.content) == (Message.Role.USER, QUESTION)
    assert (pending.status, pending.reply_to) == (Message.Status.PENDING, asked)
    assert f'data-stream-url="{reverse("assistant:message_stream", args=[pending.pk])}"' in html
    assert QUESTION in html and "AI-generated" in html
    # A fresh composer that now posts into the new conversation, and the sidebar lists it.
    assert 'id="composer"' in html and 'hx-swap-oob="true"' in html
    assert reverse("assistant:send", args=[conversation.pk]) in html
    assert conversation.title in html
    assert response["HX-Push-Url"] == reverse("assistant:conversation", args=[conversation.pk])


def test_sending_into_a_conversation_keeps_its_url(
    member_client: Client, member: Any, policies: Collection
) -> None:
    conversation = services.conversation_create(user=member)

    response = member_client.post(
        reverse("assistant:send", args=[conversation.pk]), {"text": QUESTION}, headers=HTMX
    )

    assert response.status_code == 200
    assert "HX-Push-Url" not in response
    assert conversation.messages.count() == 2


def test_sending_without_javascript_redirects_to_the_conversation(
    member_client: Client, member: Any, policies: Collection
) -> None:
    response = member_client.post(reverse("assistant:send"), {"text": QUESTION})

    conversation = Conversation.objects.get(user=member)
    assert response.status_code == 302
    assert response["Location"] == reverse("assistant:conversation", args=[conversation.pk])


@pytest.mark.parametrize(
    ("text", "error"), [("   ", "Type a question first."), ("x" * 4001, "the limit is 4,000")]
)
def test_invalid_input_rerenders_the_composer_with_the_error(
    member_client: Client, assistant: Assistant, text: str, error: str
) -> None:
    response = member_client.post(reverse("assistant:send"), {"text": text}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#composer"
    assert response["HX-Reswap"] == "outerHTML"
    assert error in html and 'role="alert"' in html
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


def test_invalid_input_without_javascript_shows_the_page_with_the_error(
    member_client: Client, member: Any, assistant: Assistant
) -> None:
    conversation = services.conversation_create(user=member)

    response = member_client.post(reverse("assistant:send", args=[conversation.pk]), {"text": ""})

    assert response.status_code == 200
    assert "<html" in response.content.decode() and "Type a question first." in response.content.decode()


def test_new_conversation_page_creates_nothing(member_client: Client, assistant: Assistant) -> None:
    response = member_client.get(reverse("assistant:new"))

    assert response.status_code == 200
    assert 'id="first-run"' in response.content.decode()
    assert Conversation.objects.count() == 0


# --- streaming ------------------------------------------------------------------------------


def test_the_stream_sends_stages_deltas_and_the_rendered_answer(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(reply(follow_ups=["How do I submit receipts in the portal?"]))
    pending = ask(member_client)

    response = member_client.get(reverse("assistant:message_stream", args=[pending.pk]))
    events = sse(response)

    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert events[0] == ("comment", "ping")
    assert [data for name, data in events if name == "stage"] == ["retrieving", "thinking", "checking"]
    streamed = "".join(json.loads(data) for name, data in events if name == "delta")
    assert streamed == GOOD_ANSWER
    name, html = events[-1]
    assert name == "done"
    answer = Answer.objects.get(message=pending)
    assert "AI-generated" in html
    assert f'href="{reverse("assistant:source", args=[answer.pk, 1])}"' in html  # the [1] marker
    assert "<strong>due on the 5th</strong>" in html
    assert 'class="msg msg-assistant status-complete state-grounded"' in html
    assert 'data-fill="How do I submit receipts in the portal?"' in html
    # Each source in the list shows the passage that supports the answer, to tell them apart.
    assert '<q class="source-excerpt">Expense reports are due on the 5th of each month.' in html
    assert "data-stream-url" not in html
    pending.refresh_from_db()
    assert pending.status == Message.Status.COMPLETE


def test_streaming_a_finished_answer_only_sends_it(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    message = answered(member_client, fake_provider)
    calls = len(fake_provider.calls)

    events = stream(member_client, message)

    assert [name for name, _ in events] == ["comment", "done"]
    assert "Expense reports are" in events[-1][1]
    assert len(fake_provider.calls) == calls


def test_an_abstained_answer_is_grey_and_says_not_found(
    member_client: Client, policies: Collection, assistant: Assistant, fake_provider: FakeProvider
) -> None:
    assistant.min_similarity = 0.99
    assistant.save(update_fields=["min_similarity"])
    pending = ask(member_client, "Quantum chromodynamics gluon confinement")

    html = stream(member_client, pending)[-1][1]

    assert "state-abstained" in html
    assert "Not found in your knowledge." in html
    # Outside the assistant's stated scope too: the reason says so.
    assert "outside what this assistant is for" in html
    assert 'class="guard' not in html  # a plain abstention, not a guardrail stop
    assert fake_provider.calls == []


INVENTED = "Late expense reports are forgiven by the regional vice president every December."


def test_an_ungrounded_answer_gives_way_to_the_evidence_and_is_kept_behind_a_disclosure(
    member_client: Client,
    policies: Collection,
    fake_provider: FakeProvider,
    evidence_strength: Callable[[float], None],
) -> None:
    evidence_strength(0.9)
    fake_provider.replies.append(reply(f"Expense reports are due on the 5th of each month [1]. {INVENTED}"))
    message = ask(member_client)

    events = stream(member_client, message)

    # The evidence came before the model wrote anything, then the model's text, then the answer.
    kinds = [kind for kind, _ in events]
    assert kinds.index("evidence") < kinds.index("delta")
    assert "From your documents" in dict(events)["evidence"]
    html = events[-1][1]
    assert "state-grounded" in html and "Quoted from your documents" in html
    assert 'class="bubble answer-text quoted"' in html and "due on the 5th of each month" in html
    assert '<details class="model-text small">' in html and INVENTED in html
    assert f"<li>{INVENTED}</li>" in html  # the statement that failed the check, listed


def test_with_evidence_answers_off_an_ungrounded_answer_warns_and_lists_the_unsupported_statement(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    Assistant.objects.update(evidence_answers=False)
    invented = INVENTED
    message = answered(
        member_client, fake_provider, f"Expense reports are due on the 5th of each month [1]. {invented}"
    )

    html = stream(member_client, message)[-1][1]

    assert "state-ungrounded" in html
    assert (
        "Some statements are not supported by the cited sources — check them before relying on this" in html
    )
    assert f"<li>{invented}</li>" in html


def test_a_low_confidence_answer_is_marked_uncertain(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    message = answered(member_client, fake_provider, confidence=0.2)

    html = stream(member_client, message)[-1][1]

    assert "state-uncertain" in html and "Low confidence" in html


def test_model_output_is_sanitized(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    hostile = (
        "Due on the 5th [1]. <script>alert('x')</script> <img src=x onerror=alert(1)> "
        "[click](javascript:alert(1)) ![pixel](https://tracker.example/p.png)"
    )
    message = answered(member_client, fake_provider, hostile)

    html = stream(member_client, message)[-1][1]

    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript' not in html
    assert 'href="https://tracker.example/p.png" rel="noopener noreferrer nofollow"' in html


def test_a_model_failure_keeps_the_conversation_and_offers_retry(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(
        provider.ProviderError(
            "The chat model server cannot be reached.", kind=provider.ErrorKind.UNAVAILABLE
        )
    )
    pending = ask(member_client)

    name, html = stream(member_client, pending)[-1]

    pending.refresh_from_db()
    assert name == "failed"
    assert pending.status == Message.Status.ERROR
    assert "The chat model server cannot be reached." in html
    assert reverse("assistant:message_retry", args=[pending.pk]) in html
    assert pending.conversation.messages.count() == 2

    fake_provider.replies.append(reply())
    retried = member_client.post(reverse("assistant:message_retry", args=[pending.pk]), headers=HTMX)

    assert (
        f'data-stream-url="{reverse("assistant:message_stream", args=[pending.pk])}"'
        in retried.content.decode()
    )
    assert stream(member_client, pending)[-1][0] == "done"
    pending.refresh_from_db()
    assert pending.status == Message.Status.COMPLETE


def test_stopping_keeps_the_partial_text_and_offers_retry(
    member_client: Client, member: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(reply())
    pending = ask(member_client)
    # Called directly rather than through the test client, so the stream can be closed halfway
    # as a WSGI server closes it when the browser goes away.
    request = RequestFactory().get(reverse("assistant:message_stream", args=[pending.pk]))
    request.user = member
    response = views.message_stream(request, pending.pk)
    events = iter(response.streaming_content)
    while b"event: delta" not in next(events):
        pass

    stopped = member_client.post(reverse("assistant:message_stop", args=[pending.pk]), headers=HTMX)
    request_finished.disconnect(close_old_connections)  # it would close the test's transaction
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)

    pending.refresh_from_db()
    assert pending.status == Message.Status.STOPPED
    assert pending.content and GOOD_ANSWER.startswith(pending.content)
    assert "Stopped" in stopped.content.decode()
    assert reverse("assistant:message_retry", args=[pending.pk]) in stopped.content.decode()
    assert not Answer.objects.filter(message=pending).exists()

    member_client.post(reverse("assistant:message_retry", args=[pending.pk]), headers=HTMX)
    pending.refresh_from_db()
    assert (pending.status, pending.content) == (Message.Status.PENDING, "")


def test_a_message_stopped_before_streaming_does_not_stream(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    pending = ask(member_client)
    member_client.post(reverse("assistant:message_stop", args=[pending.pk]), headers=HTMX)

    events = stream(member_client, pending)

    assert [name for name, _ in events] == ["comment", "done"]
    assert "Stopped" in events[-1][1]
    assert fake_provider.calls == []


def test_a_message_answering_elsewhere_polls_until_done(member_client: Client, policies: Collection) -> None:
    pending = ask(member_client)
    Message.objects.filter(pk=pending.pk).update(status=Message.Status.STREAMING)

    html = member_client.get(reverse("assistant:message", args=[pending.pk]), headers=HTMX).content.decode()

    assert 'hx-trigger="every 2s"' in html and "data-stream-url" not in html


def test_regenerate_adds_a_new_pending_answer_to_the_same_question(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    first = answered(member_client, fake_provider)

    response = member_client.post(reverse("assistant:regenerate", args=[first.pk]), headers=HTMX)

    again = Message.objects.latest("pk")
    assert again.pk != first.pk
    assert (again.status, again.reply_to_id) == (Message.Status.PENDING, first.reply_to_id)
    assert (
        f'data-stream-url="{reverse("assistant:message_stream", args=[again.pk])}"'
        in response.content.decode()
    )
    assert stream(member_client, again)[-1][0] == "done"
    assert Answer.objects.filter(message__reply_to=first.reply_to).count() == 2


# --- what people do with an answer ----------------------------------------------------------


def test_feedback_and_flag_create_rows_and_thank(
    member_client: Client, member: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    answer = answered(member_client, fake_provider).answer

    feedback = member_client.post(
        reverse("assistant:feedback", args=[answer.pk]), {"rating": "-1", "reason": "Too vague"}, headers=HTMX
    )
    flag = member_client.post(
        reverse("assistant:flag", args=[answer.pk]),
        {"category": "wrong", "note": "The date is 10th"},
        headers=HTMX,
    )

    assert Feedback.objects.filter(answer=answer, user=member, rating=-1, reason="Too vague").exists()
    assert Flag.objects.filter(answer=answer, user=member, category="wrong", note="The date is 10th").exists()
    answer.refresh_from_db()
    assert answer.flagged
    assert "Thanks" in feedback.content.decode() and 'role="status"' in feedback.content.decode()
    assert "Flagged" in flag.content.decode()
    # On the next visit the feedback shows as given.
    assert "Thanks — your feedback" in member_client.get(reverse("assistant:home")).content.decode()


def test_an_invalid_flag_shows_the_error_and_stores_nothing(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    answer = answered(member_client, fake_provider).answer

    response = member_client.post(
        reverse("assistant:flag", args=[answer.pk]), {"category": "boring"}, headers=HTMX
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Flag.objects.filter(source=Flag.Source.USER).exists()


def test_the_source_panel_shows_the_chunk_with_the_quote_marked(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    answer = answered(member_client, fake_provider).answer

    response = member_client.get(reverse("assistant:source", args=[answer.pk, 1]), headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert "Expense policy" in html and "expenses.md" in html and "Policies" in html
    assert '<mark class="evidence">Expense reports are due on the 5th of each month.</mark>' in html
    assert "the sentences that best match your question" in html
    assert "<html" not in html
    page = member_client.get(reverse("assistant:source", args=[answer.pk, 1]))
    assert "<html" in page.content.decode() and '<mark class="evidence">' in page.content.decode()


def test_the_source_panel_respects_collection_permissions(
    client: Client, member: Any, owner: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    client.force_login(member)
    answer = answered(client, fake_provider).answer
    url = reverse("assistant:source", args=[answer.pk, 1])
    assert client.get(url, headers=HTMX).status_code == 200

    policies.reader_users.remove(member)  # sharing revoked: the cited chunk is no longer readable
    revoked = client.get(url, headers=HTMX)
    client.force_login(owner)  # staff may read any answer, but not a collection not shared with them
    staff_outsider = client.get(url, headers=HTMX)
    missing_citation = client.get(reverse("assistant:source", args=[answer.pk, 9]), headers=HTMX)

    assert revoked.status_code == 404
    assert staff_outsider.status_code == 404
    assert missing_citation.status_code == 404


def test_other_peoples_chats_are_not_found(
    client: Client, member: Any, outsider: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    client.force_login(member)
    message = answered(client, fake_provider)
    answer = message.answer
    client.force_login(outsider)

    responses = [
        client.get(reverse("assistant:conversation", args=[message.conversation_id])),
        client.post(
            reverse("assistant:send", args=[message.conversation_id]), {"text": "Hi there"}, headers=HTMX
        ),
        client.get(reverse("assistant:message_stream", args=[message.pk])),
        client.get(reverse("assistant:message", args=[message.pk]), headers=HTMX),
        client.post(reverse("assistant:message_stop", args=[message.pk]), headers=HTMX),
        client.post(reverse("assistant:message_retry", args=[message.pk]), headers=HTMX),
        client.post(reverse("assistant:regenerate", args=[message.pk]), headers=HTMX),
        client.get(reverse("assistant:source", args=[answer.pk, 1]), headers=HTMX),
        client.post(reverse("assistant:feedback", args=[answer.pk]), {"rating": "1"}, headers=HTMX),
        client.post(reverse("assistant:flag", args=[answer.pk]), {"category": "wrong"}, headers=HTMX),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert Message.objects.count() == 2 and not Feedback.objects.exists()
    assert "Expense" not in client.get(reverse("assistant:home")).content.decode()


def test_replay_is_for_staff_and_compares_side_by_side(
    client: Client, member: Any, owner: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    client.force_login(member)
    answer = answered(client, fake_provider).answer
    assert "Replay</button>" not in client.get(reverse("assistant:home")).content.decode()

    refused = client.post(reverse("assistant:replay", args=[answer.pk]), headers=HTMX)
    policies.reader_users.add(owner)  # a replay runs with the replaying staff member's permissions
    client.force_login(owner)
    fake_provider.replies.append(reply())
    response = client.post(reverse("assistant:replay", args=[answer.pk]), headers=HTMX)

    html = response.content.decode()
    replay = Answer.objects.get(replay_of=answer)
    assert refused.status_code == 403
    assert response.status_code == 200
    assert "Original" in html and "Replay" in html and f"#{replay.pk}" in html
    assert "Text: <strong>identical</strong>" in html
    assert "Citations: <strong>the same sources</strong>" in html
    assert "<strong>grounded</strong> → <strong>grounded</strong>" in html
    assert "Model configuration: <strong>unchanged</strong>" in html
    assert "temperature 0.0" in html and "v1" in html
    fake_provider.replies.append(reply())
    page = client.post(reverse("assistant:replay", args=[answer.pk]))  # without JavaScript
    assert "<html" in page.content.decode() and "Text: <strong>identical</strong>" in page.content.decode()


def test_replay_reports_a_model_failure(
    client: Client, member: Any, admin_user: Any, policies: Collection, fake_provider: FakeProvider
) -> None:
    client.force_login(member)
    answer = answered(client, fake_provider).answer
    client.force_login(admin_user)
    fake_provider.replies.append(
        provider.ProviderError("The chat model did not answer in time.", kind=provider.ErrorKind.TIMEOUT)
    )

    response = client.post(reverse("assistant:replay", args=[answer.pk]), headers=HTMX)

    assert response.status_code == 200
    assert "The replay could not run: The chat model did not answer in time." in response.content.decode()


def test_a_vague_question_offers_an_editable_rewrite(
    member_client: Client, policies: Collection, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(reply())
    pending = ask(member_client, "deadlines?")

    html = stream(member_client, pending)[-1][1]

    answer = Answer.objects.get(message=pending)
    assert answer.rewrite
    assert "A more specific question:" in html
    assert f'value="{escape(answer.rewrite)}" data-rewrite' in html
    assert f'data-fill-from="#rewrite-{answer.pk}"' in html


def test_the_notice_can_be_hidden_for_the_session(member_client: Client, assistant: Assistant) -> None:
    hidden = member_client.post(reverse("assistant:notice"), {"hidden": "on"}, headers=HTMX)
    page = member_client.get(reverse("assistant:home")).content.decode()
    shown = member_client.post(reverse("assistant:notice"), {"hidden": "", "next": "/new/"})
    again = member_client.get(reverse("assistant:home")).content.decode()

    assert hidden.status_code == 204
    assert "data-notice hidden" in page
    assert shown.status_code == 302 and shown["Location"] == "/new/"
    assert "data-notice hidden" not in again


def test_the_notice_redirect_stays_on_this_site(member_client: Client, assistant: Assistant) -> None:
    response = member_client.post(
        reverse("assistant:notice"), {"hidden": "on", "next": "https://evil.example/"}
    )

    assert response["Location"] == reverse("assistant:home")

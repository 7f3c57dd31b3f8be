"""The chat page: conversations, sending a question, the answer streamed as server-sent events,
and what people do with an answer (open a source, rate it, flag it, regenerate, replay).

Every view renders a fragment of `assistant/chat.html` for htmx and falls back to a full page or
a redirect without JavaScript.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import push_url, reswap, retarget

from answer_cache import services as answer_cache
from assistant import access, pipeline, services
from assistant.forms import FeedbackForm, FlagForm, MessageForm, NoticeForm
from assistant.models import Answer, AnswerSource, Assistant, Conversation, Message
from assistant.rendering import highlight_spans, locate, markdown_html
from common.http import AuthenticatedRequest
from common.sse import sse_comment, sse_event, sse_response
from gateway import provider
from guardrails.injection import defang
from knowledge.selectors import example_questions

logger = logging.getLogger(__name__)

PAGE = "assistant/chat.html"
NOTICE_HIDDEN = "assistant_notice_hidden"  # session key


@dataclass(frozen=True)
class Stop:
    """A message the input guardrails stopped: why, and the safe version offered (if any)."""

    reason: str
    rewrite: str
    categories: list[str]


def guard_stop(answer: Answer) -> Stop | None:
    """How the guardrails stopped this answer's question, or None when they let it through."""
    verdicts = answer.guardrails if isinstance(answer.guardrails, dict) else {}
    if not answer.abstained or verdicts.get("input_action") not in {"rewrite", "block"}:
        return None
    categories = [str(c) for c in verdicts.get("categories") or [] if c != "off_topic"]
    if not categories:
        return None
    return Stop(reason=answer.abstain_reason, rewrite=answer.rewrite, categories=categories)


@dataclass(frozen=True)
class Shown:
    """One message as the page shows it, with its answer's rendered text."""

    message: Message
    answer: Answer | None
    html: SafeString
    unsupported: list[str] = field(default_factory=list)
    timing: str = ""
    guard: Stop | None = None
    rating: int | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)  # each with the source's url
    model_text: SafeString | None = None  # the model's own answer, when another text is shown
    model_problem: str = ""
    cache_notice: str = ""  # for a cache hit: which earlier question it answered, if the reader may know
    guard_notice: str = ""  # a sensitive-sounding question the documents answer: said so beside the answer


def _answer_of(message: Message) -> Answer | None:
    try:
        return message.answer
    except Answer.DoesNotExist:
        return None


def _cite_url(answer: Answer) -> Any:
    return lambda n: reverse("assistant:source", args=[answer.pk, n])


def _timing(latency: Mapping[str, Any]) -> str:
    parts = [
        f"{label} {float(latency[key]):,.0f} ms"
        for key, label in (("total", "total"), ("retrieval", "retrieval"), ("model", "model"))
        if isinstance(latency.get(key), int | float)
    ]
    return " · ".join(parts)


def _cache_notice(answer: Answer, reader: User | None) -> str:
    if not answer.cache_hit or answer.cached_from is None:
        return ""
    question = answer_cache.source_question_for(answer, reader)
    return answer_cache.hit_notice(question=question, asked_at=answer.cached_from.created_at)


def _shown(message: Message, ratings: Mapping[int, int] | None = None, reader: User | None = None) -> Shown:
    answer = _answer_of(message)
    if message.role == Message.Role.USER:
        return Shown(message=message, answer=None, html=SafeString(""))
    if answer is None or message.status != Message.Status.COMPLETE:
        return Shown(message=message, answer=answer, html=markdown_html(message.content))
    claims = answer.grounding.get("claims", []) if isinstance(answer.grounding, dict) else []
    cite_url = _cite_url(answer)
    model = answer.grounding.get("model") if isinstance(answer.grounding, dict) else None
    if answer.answer_source == AnswerSource.EVIDENCE:
        claims = model.get("claims", []) if isinstance(model, dict) else []
    return Shown(
        message=message,
        answer=answer,
        html=markdown_html(answer.text, cite_url=_cite_url(answer), citations=answer.citations),
        unsupported=[
            str(c.get("text", "")) for c in claims if isinstance(c, dict) and not c.get("supported")
        ],
        timing=_timing(answer.latency_ms if isinstance(answer.latency_ms, dict) else {}),
        rating=(ratings or {}).get(answer.pk),
        guard=guard_stop(answer),
        evidence=[
            {**item, "url": cite_url(item["n"])}
            for item in answer.evidence or []
            if isinstance(item, dict) and isinstance(item.get("n"), int)
        ],
        model_text=markdown_html(answer.model_text) if answer.model_text.strip() else None,
        model_problem=str(model.get("problem", "")) if isinstance(model, dict) else "",
        cache_notice=_cache_notice(answer, reader),
        guard_notice=str((answer.guardrails or {}).get("notice") or "")
        if isinstance(answer.guardrails, dict)
        else "",
    )


def _fragment_context(request: AuthenticatedRequest, **extra: Any) -> dict[str, Any]:
    """What every message fragment needs besides the message."""
    return {"flag_form": FlagForm(auto_id=False), **extra}


def _render_message(request: AuthenticatedRequest, message: Message) -> str:
    """The message's fragment as it is now in the database."""
    fresh = access.message_for(request.user, message.pk)
    answer = _answer_of(fresh)
    ratings = access.feedback_given(request.user, [answer] if answer else [])
    context = _fragment_context(request, item=_shown(fresh, ratings, request.user))
    return render_to_string(f"{PAGE}#message", context, request=request)


def _render_evidence(request: AuthenticatedRequest, found: pipeline.EvidenceFound) -> str:
    """The "From your documents" block, shown while the model is still writing."""
    items = [item.as_json() for item in found.items]
    return render_to_string(f"{PAGE}#evidence", {"items": items, "related": False}, request=request)


def _send_url(conversation: Conversation | None) -> str:
    if conversation is None:
        return reverse("assistant:send")
    return reverse("assistant:send", args=[conversation.pk])


def _notice(request: AuthenticatedRequest, assistant: Assistant) -> dict[str, Any]:
    return {
        "name": assistant.name,
        "collections": access.collections_answered_from(request.user, assistant),
        "hidden": bool(request.session.get(NOTICE_HIDDEN)),
    }


def _chat_page(
    request: AuthenticatedRequest, conversation: Conversation | None, *, form: MessageForm | None = None
) -> HttpResponse:
    messages = list(access.messages_of(conversation)) if conversation else []
    answers = [a for a in map(_answer_of, messages) if a is not None]
    ratings = access.feedback_given(request.user, answers)
    assistant = conversation.assistant if conversation else services.assistant_default()
    context = _fragment_context(
        request,
        conversation=conversation,
        conversations=access.conversations_of(request.user),
        shown=[_shown(m, ratings, request.user) for m in messages],
        form=form or MessageForm(),
        send_url=_send_url(conversation),
        examples=[] if messages else example_questions(request.user),
        notice=_notice(request, assistant),
    )
    return render(request, PAGE, context)


def _message_url(message: Message) -> str:
    url = reverse("assistant:conversation", args=[message.conversation_id])
    return f"{url}#message-{message.pk}"


def _answer_url(answer: Answer) -> str:
    """Where an answer is shown: its conversation, or (an API answer) the chat home."""
    return _message_url(answer.message) if answer.message is not None else reverse("assistant:home")


# --- pages ----------------------------------------------------------------------------------


@require_GET
@login_required
def home(request: AuthenticatedRequest) -> HttpResponse:
    """The latest conversation, or the first-run screen for someone who has none."""
    return _chat_page(request, access.conversation_latest(request.user))


@require_GET
@login_required
def conversation_new(request: AuthenticatedRequest) -> HttpResponse:
    """An empty chat; the conversation is created by its first question, so none is left empty."""
    return _chat_page(request, None)


@require_GET
@login_required
def conversation_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    conversation = access.conversation_for(request.user, pk)
    services.messages_orphaned_recover(conversation_id=conversation.pk)
    return _chat_page(request, conversation)


# --- asking and answering -------------------------------------------------------------------


@require_POST
@login_required
def message_send(request: AuthenticatedRequest, pk: int | None = None) -> HttpResponse:
    """Store the question and a pending answer; the answer's fragment then opens its stream."""
    existing = access.conversation_for(request.user, pk) if pk is not None else None
    had_messages = existing is not None and existing.messages.exists()
    form = MessageForm(request.POST)
    sent: tuple[Conversation, Message, Message] | None = None
    if form.is_valid():
        try:
            with transaction.atomic():  # a rejected first question leaves no empty conversation
                conversation = existing or services.conversation_create(user=request.user)
                asked, pending = services.message_send(
                    conversation=conversation, text=form.cleaned_data["text"]
                )
            sent = conversation, asked, pending
        except pipeline.QuestionRejected as exc:
            form.add_error("text", str(exc))
    if sent is None:
        if not request.htmx:
            return _chat_page(request, existing, form=form)
        response = render(request, f"{PAGE}#composer", {"form": form, "send_url": _send_url(existing)})
        return reswap(retarget(response, "#composer"), "outerHTML")

    conversation, asked, pending = sent
    if not request.htmx:
        return redirect("assistant:conversation", conversation.pk)
    context = _fragment_context(
        request,
        shown=[_shown(asked), _shown(pending)],
        form=MessageForm(),
        send_url=_send_url(conversation),
        conversation=conversation,
        conversations=access.conversations_of(request.user),
        first=not had_messages,
    )
    response = render(request, f"{PAGE}#sent", context)
    if existing is None:
        push_url(response, reverse("assistant:conversation", args=[conversation.pk]))
    return response


def _answer_events(request: AuthenticatedRequest, message: Message) -> Iterator[str]:
    # A comment first: proxies and browsers treat the stream as open once bytes arrive.
    yield sse_comment("ping")
    if message.status == Message.Status.PENDING:
        events = services.answer_stream(message=message)
        try:
            for event in events:
                if isinstance(event, pipeline.Stage):
                    yield sse_event(event="stage", data=event.name)
                elif isinstance(event, pipeline.Delta):
                    yield sse_event(event="delta", data=json.dumps(event.text))
                elif isinstance(event, pipeline.EvidenceFound):
                    yield sse_event(event="evidence", data=_render_evidence(request, event))
                elif isinstance(event, services.Failed):
                    yield sse_event(event="failed", data=_render_message(request, message))
                    return
        except Exception:
            # The message keeps its partial text as "stopped"; the final fragment offers a retry.
            logger.exception("streaming the answer to message %s failed", message.pk)
        finally:
            # When the browser goes away, the server closes this generator: close the answer's
            # too, right away, so it records the message as stopped and releases its lock.
            close = getattr(events, "close", None)
            if close is not None:
                close()
    # Finished, or not ours to stream (already answered, stopped, or streaming in another tab).
    yield sse_event(event="done", data=_render_message(request, message))


@require_GET
@login_required
def message_stream(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    """The answer to a pending message as server-sent events: stage, delta, then done or failed."""
    message = access.message_for(request.user, pk)
    if message.role != Message.Role.ASSISTANT:
        raise Http404("Only answers stream.")
    return sse_response(_answer_events(request, message))


def _message_response(request: AuthenticatedRequest, message: Message) -> HttpResponse:
    if not request.htmx:
        return redirect(_message_url(message))  # without JavaScript: back to the chat
    return HttpResponse(_render_message(request, message))


@require_GET
@login_required
def message_detail(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """One message's fragment; a message answering in another tab polls this until it is done."""
    return _message_response(request, access.message_for(request.user, pk))


@require_POST
@login_required
def message_stop(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    message = access.message_for(request.user, pk)
    services.message_stop(message=message)
    return _message_response(request, message)


@require_POST
@login_required
def message_retry(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """A failed or stopped answer goes back to pending; its fragment streams it again."""
    message = access.message_for(request.user, pk)
    services.message_retry(message=message)
    return _message_response(request, message)


@require_POST
@login_required
def answer_regenerate(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """A new answer to the same question, added below; the old one stays."""
    message = access.message_for(request.user, pk)
    if message.role != Message.Role.ASSISTANT or message.reply_to_id is None:
        raise Http404("Only answers can be regenerated.")
    regenerated = services.answer_regenerate(message=message)
    return _message_response(request, regenerated)


# --- what people do with an answer ----------------------------------------------------------


@require_POST
@login_required
def answer_feedback(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    answer = access.answer_asked_by(request.user, pk)
    form = FeedbackForm(request.POST)
    rating = None
    if form.is_valid():
        services.feedback_give(
            answer=answer,
            user=request.user,
            rating=form.cleaned_data["rating"],
            reason=form.cleaned_data["reason"],
        )
        rating = form.cleaned_data["rating"]
    if not request.htmx:
        return redirect(_answer_url(answer))
    return render(request, f"{PAGE}#feedback", {"a": answer, "rating": rating, "feedback_form": form})


@require_POST
@login_required
def answer_flag(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    answer = access.answer_asked_by(request.user, pk)
    form = FlagForm(request.POST, auto_id=False)
    flagged = False
    if form.is_valid():
        services.flag_create(
            answer=answer,
            user=request.user,
            category=form.cleaned_data["category"],
            note=form.cleaned_data["note"],
        )
        flagged = True
    if not request.htmx:
        return redirect(_answer_url(answer))
    return render(request, f"{PAGE}#flag", {"a": answer, "flagged": flagged, "flag_form": form})


@require_GET
@login_required
def answer_source(request: AuthenticatedRequest, pk: int, n: int) -> HttpResponse:
    """The full text of a cited chunk, if the user may still read it, with the quote marked."""
    answer = access.answer_for_user(request.user, pk)
    citation = access.citation_of(answer, n)
    chunk = access.chunk_for(request.user, citation.get("chunk_id"))
    # A quarantined passage is shown with its links made unclickable, as the model read it.
    shown = defang(chunk.text)[0] if citation.get("quarantined") else chunk.text
    context = {
        "answer": answer,
        "citation": citation,
        "chunk": chunk,
        "text": highlight_spans(shown, _marks(answer, citation, shown)),
        "evidence_marked": any(
            isinstance(e, dict) and e.get("chunk_id") == chunk.pk for e in answer.evidence or []
        ),
        "removed": _removed_from(answer, chunk.pk),
        "back_url": _answer_url(answer),
    }
    if request.htmx:
        return render(request, f"{PAGE}#source", context)
    return render(request, "assistant/panel.html", {**context, "fragment": f"{PAGE}#source"})


def _removed_from(answer: Answer, chunk_id: int) -> list[str]:
    """What the injection check cut out of this chunk before the model read it (the trace's record)."""
    verdicts = (answer.guardrails or {}).get("chunks") if isinstance(answer.guardrails, dict) else None
    for verdict in verdicts or []:
        if isinstance(verdict, dict) and verdict.get("chunk_id") == chunk_id:
            return [defang(str(text))[0] for text in verdict.get("removed") or []]
    return []


def _marks(answer: Answer, citation: Mapping[str, Any], text: str) -> list[tuple[int, int, str]]:
    """What to highlight in a source: the evidence found in it, and the quote supporting the answer."""
    marks = []
    for item in answer.evidence or []:
        if isinstance(item, dict) and item.get("chunk_id") == citation.get("chunk_id"):
            found = locate(text, str(item.get("text", "")), item.get("start"), item.get("end"))
            if found:
                marks.append((*found, "evidence"))
    quote = locate(text, str(citation.get("quote") or ""))
    if quote and not any(start <= quote[0] < end for start, end, _ in marks):
        marks.append((*quote, "quote"))
    return marks


def _comparison(old: Answer, new: Answer) -> dict[str, Any]:
    def chunks(answer: Answer) -> list[object]:
        return [c.get("chunk_id") for c in answer.citations if isinstance(c, dict)]

    return {
        "same_text": old.text.strip() == new.text.strip(),
        "same_citations": chunks(old) == chunks(new),
        "before": old.state,
        "after": new.state,
        # Same fingerprint: what determines the output (model file, server, context) is unchanged,
        # so a different text comes from the prompt or the settings; "unknown" when either lacks one.
        "same_fingerprint": (
            None
            if not (old.system_fingerprint and new.system_fingerprint)
            else old.system_fingerprint == new.system_fingerprint
        ),
    }


@require_POST
@login_required
def answer_replay(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """Staff: the same question again with the answer's settings, side by side with the original."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff replay answers.")
    answer = access.answer_for_user(request.user, pk)
    withheld = answer.pk in access.quotes_withheld(request.user, [answer])
    context: dict[str, Any] = {
        "old": answer,
        # An evidence answer's text is passages: not shown to staff who may not read them.
        "old_html": WITHHELD if withheld else _answer_html(answer),
        "back_url": _answer_url(answer),
    }
    try:
        replay = services.answer_replay(answer=answer, user=request.user)
    except provider.ProviderError as exc:
        context["error"] = f"The replay could not run: {exc}"
    else:
        context.update(new=replay, new_html=_answer_html(replay), diff=_comparison(answer, replay))
    if request.htmx:
        return render(request, f"{PAGE}#replay", context)
    return render(request, "assistant/panel.html", {**context, "fragment": f"{PAGE}#replay"})


WITHHELD = SafeString('<p class="muted">(quoted from a collection you may not read)</p>')


def _answer_html(answer: Answer) -> SafeString:
    return markdown_html(answer.text, cite_url=_cite_url(answer), citations=answer.citations)


@require_POST
@login_required
def notice_toggle(request: AuthenticatedRequest) -> HttpResponse:
    """Hide or bring back the notice about what the assistant can do, for this session."""
    form = NoticeForm(request.POST)
    if form.is_valid():
        request.session[NOTICE_HIDDEN] = form.cleaned_data["hidden"]
    if request.htmx:
        return HttpResponse(status=204)
    back = form.cleaned_data.get("next", "") if form.is_valid() else ""
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("assistant:home")
    return redirect(back)

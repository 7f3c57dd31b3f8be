"""Writes for the assistant: conversations, streamed answers, feedback, flags, replays, API tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from answer_cache import services as answer_cache
from assistant import pipeline
from assistant.models import (
    Answer,
    ApiToken,
    Assistant,
    Conversation,
    Feedback,
    Flag,
    Message,
    PromptTemplate,
)
from assistant.prompts import DEFAULT_INSTRUCTIONS, DEFAULT_PROMPT_NAME, DEFAULT_SYSTEM
from assistant.selectors import history_before as history_before  # re-exported: routing.distill reads it here
from gateway import provider
from usage import services as usage

logger = logging.getLogger(__name__)

STOP_CHECK_SECONDS = 0.5
LOCK_WAIT_SECONDS = 120
# A streaming message older than this whose conversation lock is free has lost its writer.
ORPHAN_AFTER_SECONDS = 15
INTERRUPTED_TEXT = "The answer was interrupted (the server restarted). Your question is kept; press retry."


@dataclass(frozen=True)
class Failed:
    """The model could not be reached; the conversation is intact and the message can be retried."""

    message: str


def prompt_default() -> PromptTemplate:
    prompt = PromptTemplate.objects.filter(name=DEFAULT_PROMPT_NAME).order_by("-version").first()
    if prompt is None:
        prompt = PromptTemplate.objects.create(
            name=DEFAULT_PROMPT_NAME,
            version=1,
            system=DEFAULT_SYSTEM,
            instructions=DEFAULT_INSTRUCTIONS,
            notes="The shipped prompt.",
        )
    return prompt


def prompt_new_version(
    *, prompt: PromptTemplate, system: str, instructions: str, notes: str, user: User | None
) -> PromptTemplate:
    """Prompts are never edited in place: a change is a new version, so old answers keep theirs."""
    latest = PromptTemplate.objects.filter(name=prompt.name).order_by("-version").first()
    return PromptTemplate.objects.create(
        name=prompt.name,
        version=(latest.version if latest else 0) + 1,
        system=system,
        instructions=instructions,
        notes=notes,
        created_by=user,
    )


def assistant_default() -> Assistant:
    assistant = Assistant.objects.filter(is_default=True).first() or Assistant.objects.order_by("pk").first()
    if assistant is None:
        assistant = Assistant.objects.create(
            name="Groundwork",
            scope="You answer questions about the documents in this team's knowledge base.",
            prompt=prompt_default(),
            is_default=True,
        )
    return assistant


def conversation_create(*, user: User, assistant: Assistant | None = None, title: str = "") -> Conversation:
    return Conversation.objects.create(
        user=user, assistant=assistant or assistant_default(), title=title[:200]
    )


@transaction.atomic
def message_send(*, conversation: Conversation, text: str) -> tuple[Message, Message]:
    """Store the user's question and a pending answer that `answer_stream` will fill in."""
    question = pipeline.validate_question(text)
    asked = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    pending = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, reply_to=asked
    )
    if not conversation.title:
        conversation.title = question[:80]
    conversation.save(update_fields=["title", "updated_at"])
    return asked, pending


class ConversationBusy(Exception):
    pass


# The first half of the two-int advisory-lock key of a conversation's answer lock (the second is
# the conversation's id): a class of its own, so no other advisory lock can collide with it.
CONVERSATION_LOCK_CLASS = 4242


def _try_lock(cursor: CursorWrapper, conversation_id: int) -> bool:
    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [CONVERSATION_LOCK_CLASS, conversation_id])
    row = cursor.fetchone()
    return bool(row and row[0])


def _unlock(conversation_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [CONVERSATION_LOCK_CLASS, conversation_id])


@contextmanager
def conversation_lock(conversation_id: int, *, wait_seconds: float | None = None) -> Iterator[None]:
    """A session-level advisory lock: two answers in one conversation are made one after the other.

    Waits at most `wait_seconds` (LOCK_WAIT_SECONDS by default; then raises ConversationBusy), so
    a stuck answer cannot hold a web thread forever. The lock belongs to the database session, so
    it is released when the process writing the answer dies; `messages_orphaned_recover` relies
    on that.
    """
    deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    with connection.cursor() as cursor:
        while not _try_lock(cursor, conversation_id):
            if time.monotonic() > deadline:
                raise ConversationBusy("Another answer in this conversation is still being written.")
            time.sleep(0.2)
    try:
        yield
    finally:
        _unlock(conversation_id)


@contextmanager
def conversation_lock_if_free(conversation_id: int) -> Iterator[bool]:
    """The conversation's lock if nobody holds it, without waiting: yields whether it was taken."""
    with connection.cursor() as cursor:
        taken = _try_lock(cursor, conversation_id)
    try:
        yield taken
    finally:
        if taken:
            _unlock(conversation_id)


_TURN_MESSAGES = Message.objects.select_related(
    "reply_to", "conversation__user", "conversation__assistant__prompt"
)


def answer_stream(*, message: Message) -> Iterator[pipeline.Event | Failed]:
    """Fill in a pending assistant message, yielding pipeline events as the answer is made.

    Claims the message first (pending -> streaming), so a second tab gets nothing. A stop
    request (`message_stop`) or a closed connection ends generation and keeps the partial text.
    """
    if not Message.objects.claim(message.pk):
        return
    # One query for everything the turn reads of its message: the question, the conversation, its
    # user, and the assistant with its prompt (lazy loads would be five more).
    message.refresh_from_db(from_queryset=_TURN_MESSAGES)
    conversation = message.conversation
    try:
        usage.budget_check(user=conversation.user)  # before any model call, read fresh each time
    except usage.BudgetExceeded as exc:
        Message.objects.fail(message.pk, exc.message)
        yield Failed(exc.message)
        return
    try:
        with conversation_lock(conversation.pk):
            yield from _answer_written(message)
    except ConversationBusy as exc:
        Message.objects.fail(message.pk, f"{exc} Press retry.")
        yield Failed(str(exc))


def _answer_written(message: Message) -> Iterator[pipeline.Event | Failed]:
    """The claimed message's answer, made under its conversation's lock: streamed, saved with
    its partial text as it goes, and ended as complete, error, or stopped with what was written."""
    conversation = message.conversation
    partial: list[str] = []
    finished = False
    tracker = usage.Tracker(user=conversation.user, purpose=usage.Purpose.ANSWER)
    try:
        last_check = time.monotonic()
        events = pipeline.answer_events(
            assistant=conversation.assistant,
            user=conversation.user,
            question=message.reply_to.content if message.reply_to else "",
            history=history_before(message),
        )
        for event in usage.tracked(tracker, events):
            if isinstance(event, pipeline.Delta):
                partial.append(event.text)
            if isinstance(event, pipeline.Done):
                finished = _answer_save(message=message, done=event, tracker=tracker)
                if not finished:
                    break  # stopped just before the end: the stop wins
            elif time.monotonic() - last_check > STOP_CHECK_SECONDS:
                last_check = time.monotonic()
                if not Message.objects.progress(message.pk, "".join(partial)):
                    break
            yield event
    except provider.ProviderError as exc:
        logger.warning("answer for message %s failed: %s", message.pk, exc)
        finished = True
        yield from _failed(message, f"{exc} Your question is kept; press retry.", str(exc))
    except pipeline.QuestionRejected as exc:
        finished = True
        yield from _failed(message, str(exc), str(exc))
    except Exception:
        logger.exception("answer for message %s crashed", message.pk)
        finished = True
        error = "Something went wrong while answering."
        yield from _failed(message, f"{error} Press retry.", error)
    finally:
        if not finished:
            # Stopped by the user, or the browser went away: keep what was written.
            Message.objects.halt(message.pk, "".join(partial))


def _failed(message: Message, error: str, shown: str) -> Iterator[Failed]:
    Message.objects.fail(message.pk, error)
    yield Failed(shown)


def _answer_save(*, message: Message, done: pipeline.Done, tracker: usage.Tracker | None = None) -> bool:
    """Attach the finished answer to its message; False when the user stopped it meanwhile.

    The answer is saved complete (text, trace, cost, automatic flags) in one transaction; the
    bookkeeping nobody waits for (attaching its model calls, the cache entry) is queued for
    after the commit (`answer_bookkeeping_enqueue`).
    """
    answer = done.answer
    with transaction.atomic():
        if not Message.objects.complete(message.pk, answer.text):
            return False
        answer.message = message
        _save_with_flags(answer, tracker)
        answer_bookkeeping_enqueue(
            answer=answer, tracker=tracker, query_vector=done.query_vector, history=done.history
        )
    return True


def _save_with_flags(answer: Answer, tracker: usage.Tracker | None) -> None:
    """Insert the answer with its cost (known once its model calls are done), then its flags."""
    if tracker is not None:
        answer.cost_usd = tracker.cost_usd
    answer.save()
    _flag_automatically(answer)


def answer_bookkeeping_enqueue(
    *,
    answer: Answer,
    tracker: usage.Tracker | None,
    query_vector: list[float] | None,
    history: list[tuple[str, str]] | None,
) -> None:
    """Once the answer is committed, queue `answer_bookkeeping` (assistant.tasks.answer_bookkeep).

    The user has the answer by then; this is work they need not wait for. When the broker
    cannot take the task, it is done here and now instead, so nothing is lost.
    """
    call_ids = list(tracker.call_ids) if tracker is not None else []
    if not call_ids and (answer.cache_hit or not settings.ANSWER_CACHE_ENABLED):
        return  # nothing to attach, nothing to cache
    arguments: dict[str, Any] = {
        "answer_id": answer.pk,
        "call_ids": call_ids,
        "query_vector": [float(x) for x in query_vector] if query_vector is not None else None,
        "history": [[q, a] for q, a in history] if history is not None else None,
    }

    def enqueue() -> None:
        from assistant.tasks import answer_bookkeep

        try:
            answer_bookkeep.delay(**arguments)
        except Exception:
            logger.exception("could not queue the bookkeeping of answer %s; doing it now", answer.pk)
            try:
                answer_bookkeeping(answer=answer, **{k: v for k, v in arguments.items() if k != "answer_id"})
            except Exception:
                logger.exception("bookkeeping of answer %s failed", answer.pk)

    transaction.on_commit(enqueue)


def answer_bookkeeping(
    *,
    answer: Answer,
    call_ids: list[int],
    query_vector: list[float] | None,
    history: list[list[str]] | list[tuple[str, str]] | None,
) -> None:
    """After an answer is saved: its model calls attached to it, and the answer offered to the cache.

    Idempotent: calls already attached stay where they are, and storing an answer again only
    refreshes its cache entry. The cache keeps only grounded, unflagged answers, stored under what
    the pipeline searched for: the redacted history and the retrieval vector (so nothing is
    embedded again, and nothing personal reaches the cache).
    """
    if call_ids:
        usage.calls_attach_ids(answer=answer, call_ids=call_ids)
    if not answer.cache_hit:
        answer_cache.cache_store(
            answer=answer,
            query_vector=query_vector,
            history=[(q, a) for q, a in history] if history is not None else None,
        )


def _flag_automatically(answer: Answer) -> None:
    """Answers that failed the grounding check, fell back, or were withheld by a guardrail go to
    review, and so do requests a guardrail refused outright (to catch over-refusals)."""
    verdicts = answer.guardrails if isinstance(answer.guardrails, dict) else {}
    if answer.flagged and verdicts.get("output_action") == "block":
        categories = ", ".join(verdicts.get("output_categories") or []) or "output check"
        Flag.objects.create(
            answer=answer,
            category=Flag.Category.HARMFUL,
            source=Flag.Source.GUARDRAIL,
            note=f"Automatic: the answer was withheld by a guardrail ({categories}). "
            f"{verdicts.get('output_reason', '')}".strip(),
        )
        return
    if verdicts.get("input_action") == "block":
        # Refused outright, with no safe version offered: staff check it was not an over-refusal.
        categories = ", ".join(verdicts.get("categories") or []) or "input check"
        Flag.objects.create(
            answer=answer,
            category=Flag.Category.OTHER,
            source=Flag.Source.GUARDRAIL,
            note=f"Automatic: the request was refused by a guardrail ({categories}). "
            "Check that it was not a harmless request.",
        )
        return
    if answer.flagged:
        reason = (
            "the model's output was unusable."
            if answer.fallback
            else "a claim is not supported by its sources."
        )
        Flag.objects.create(
            answer=answer,
            category=Flag.Category.UNSUPPORTED,
            source=Flag.Source.GROUNDING,
            note=f"Automatic: {reason}",
        )


def answer_complete(*, message: Message) -> Message:
    """Run `answer_stream` to the end (for callers that do not stream)."""
    for _event in answer_stream(message=message):
        pass
    message.refresh_from_db()
    return message


def messages_orphaned_recover(*, conversation_id: int | None = None) -> int:
    """Mark answers whose writer died mid-stream (a web process killed or restarted) as interrupted.

    A streaming answer is written under its conversation's advisory lock; when the lock can be
    taken, nobody is writing it. The partial text is kept and the user can retry. Returns how
    many messages were recovered. Runs from beat, and when a conversation is opened.
    """
    cutoff = timezone.now() - timedelta(seconds=ORPHAN_AFTER_SECONDS)
    streaming = Message.objects.streaming_before(cutoff)
    if conversation_id is not None:
        streaming = streaming.filter(conversation_id=conversation_id)
    recovered = 0
    for pk in sorted(set(streaming.values_list("conversation_id", flat=True))):
        with conversation_lock_if_free(pk) as free:
            if free:  # else someone is still writing an answer here
                recovered += streaming.filter(conversation_id=pk).recover(INTERRUPTED_TEXT)
    if recovered:
        logger.info("recovered %s interrupted answer(s)", recovered)
    return recovered


def message_stop(*, message: Message) -> bool:
    """Stop a pending or streaming answer; its writer keeps what was written (`answer_stream`)."""
    return Message.objects.stop(message.pk)


def message_retry(*, message: Message) -> bool:
    """Put a failed or stopped answer back to pending so it can be streamed again."""
    return Message.objects.retry(message.pk)


def answer_regenerate(*, message: Message) -> Message:
    """A new pending answer to the same question; the old one stays in the history."""
    return Message.objects.create(
        conversation=message.conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        reply_to=message.reply_to,
    )


def answer_for(
    *,
    user: Any,
    question: str,
    assistant: Assistant | None = None,
    history: list[tuple[str, str]] | None = None,
) -> Answer:
    """A saved answer without a chat conversation (the API and the CLI).

    Raises usage.BudgetExceeded, before any model call, when the user's budget is used up.
    """
    usage.budget_check(user=user)
    with usage.tracking(user=user, purpose=usage.Purpose.ANSWER) as tracker:
        done = pipeline.run_to_done(
            assistant=assistant or assistant_default(), user=user, question=question, history=history
        )
    return answer_save(
        answer=done.answer, tracker=tracker, query_vector=done.query_vector, history=done.history
    )


@transaction.atomic
def answer_save(
    *,
    answer: Answer,
    tracker: usage.Tracker | None = None,
    query_vector: list[float] | None = None,
    history: list[tuple[str, str]] | None = None,
) -> Answer:
    """Save an answer made outside a chat message (API, CLI), flagging it when it needs review.

    With `tracker`, the answer's cost is set and, once it is committed, its model calls are
    attached to it; `query_vector` and `history` (from the pipeline's Done) let the cache store
    it as searched, also after the commit (`answer_bookkeeping_enqueue`).
    """
    _save_with_flags(answer, tracker)
    answer_bookkeeping_enqueue(answer=answer, tracker=tracker, query_vector=query_vector, history=history)
    return answer


def answer_replay(*, answer: Answer, user: Any) -> Answer:
    """The same question with the same settings, prompt version and retrieved chunks, for comparison.

    It runs with the permissions of the staff member who replays it, not the asker's: chunks in
    collections they may not read are left out, so a replay never shows them what they could not
    read themselves. They pay for it too.
    """
    with usage.tracking(user=user, purpose=usage.Purpose.ANSWER) as tracker:
        replay = pipeline.run_to_answer(
            assistant=answer.assistant,
            user=user,
            question=answer.question,
            config=pipeline.Settings.of_answer(answer),
            pinned_chunk_ids=[r["chunk_id"] for r in answer.retrieved if not r.get("via_tool")],
        )
    replay.replay_of = answer
    # A replay is a staff comparison, not an answer anyone relied on: keep it out of the queue.
    replay.flagged = False
    replay.save()
    usage.answer_account(answer=replay, tracker=tracker)
    return replay


def feedback_give(*, answer: Answer, user: User, rating: int, reason: str = "") -> Feedback:
    feedback, _ = Feedback.objects.update_or_create(
        answer=answer, user=user, defaults={"rating": 1 if rating > 0 else -1, "reason": reason[:500]}
    )
    return feedback


@transaction.atomic
def flag_create(
    *, answer: Answer, user: User | None, category: str, note: str = "", source: str = Flag.Source.USER
) -> Flag:
    flag = Flag.objects.create(answer=answer, user=user, category=category, note=note[:2000], source=source)
    if not answer.flagged:
        answer.flagged = True
        answer.save(update_fields=["flagged"])
    if answer.cached_from_id is not None:
        # Flagged where the cache served it: the earlier answer is not given to anyone else again
        # (the review queue decides about it from here).
        answer_cache.cache_invalidate(answer_id=answer.cached_from_id)
    return flag


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token; the raw value is returned once and only its hash is kept."""
    raw = ApiToken.generate()
    token = ApiToken.objects.create(
        user=user, name=name[:100] or "API token", prefix=raw[:10], digest=ApiToken.hash(raw)
    )
    return token, raw


def api_token_revoke(*, token: ApiToken) -> None:
    """Only the hash is stored, so deleting the row revokes the token for good."""
    token.delete()


def assistants_use_prompt(*, prompt: PromptTemplate) -> int:
    """Point every assistant at `prompt`; returns how many changed. Their cached answers go."""
    changing = list(Assistant.objects.exclude(prompt=prompt))
    for assistant in changing:
        assistant_settings_changed(assistant=assistant)
    return Assistant.objects.filter(pk__in=[a.pk for a in changing]).update(prompt=prompt)


def assistant_settings_changed(*, assistant: Assistant) -> int:
    """An assistant's prompt, model, retrieval or guardrail settings changed: answers cached under
    the old settings are no longer what it would say, so they are dropped. Returns how many."""
    return answer_cache.cache_invalidate(assistant=assistant)


def api_token_authenticate(raw: str) -> User | None:
    token = ApiToken.objects.select_related("user").filter(digest=ApiToken.hash(raw)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user

"""What a user may see of the assistant's rows: each helper returns the object or raises Http404.

Someone else's conversation, message or answer is "not found" rather than "forbidden", so ids
reveal nothing about other people's chats.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import Http404

from assistant.models import Answer, AnswerSource, Assistant, Conversation, Feedback, Message
from knowledge.models import Chunk, Collection
from knowledge.selectors import chunks_readable_by


def conversations_of(user: User, *, limit: int = 50) -> list[Conversation]:
    """The user's conversations, most recently active first."""
    return list(Conversation.objects.filter(user=user).order_by("-updated_at", "-pk")[:limit])


def conversation_for(user: User, pk: int) -> Conversation:
    conversation = Conversation.objects.select_related("assistant").filter(pk=pk, user=user).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def conversation_latest(user: User) -> Conversation | None:
    return (
        Conversation.objects.select_related("assistant")
        .filter(user=user)
        .order_by("-updated_at", "-pk")
        .first()
    )


def messages_of(conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.select_related("answer", "answer__prompt").order_by("created_at", "pk")


def message_for(user: User, pk: int) -> Message:
    """A message of one of the user's own conversations (staff included: chats are private)."""
    message = (
        Message.objects.select_related("conversation", "answer", "answer__prompt")
        .filter(pk=pk, conversation__user=user)
        .first()
    )
    if message is None:
        raise Http404("No such message.")
    return message


def answer_for_user(user: User, pk: int) -> Answer:
    """An answer the user asked for (in a chat or through the API); staff may read any answer."""
    answers = Answer.objects.select_related("prompt", "message", "assistant")
    if not user.is_staff:
        answers = answers.filter(Q(message__conversation__user=user) | Q(user=user))
    answer = answers.filter(pk=pk).first()
    if answer is None:
        raise Http404("No such answer.")
    return answer


def answer_asked_by(user: User, pk: int) -> Answer:
    """An answer the user asked for themselves, for what only the asker does: rating and flagging.

    Staff are no exception. A flag puts the answer and the conversation before it in front of
    every reviewer, so someone else's flag would expose a private chat; a rating speaks for the
    person who asked.
    """
    answers = Answer.objects.select_related("prompt", "message", "assistant")
    answer = answers.filter(Q(message__conversation__user=user) | Q(user=user), pk=pk).first()
    if answer is None:
        raise Http404("No such answer.")
    return answer


def citation_of(answer: Answer, n: int) -> dict[str, object]:
    """Source `n` of the answer: a citation, or a source its evidence quotes (which the model may
    not have cited). Any other number is not the answer's to show."""
    for citation in answer.citations:
        if isinstance(citation, dict) and citation.get("n") == n:
            return citation
    for item in answer.evidence or []:
        if isinstance(item, dict) and item.get("n") == n:
            retrieved = [r for r in answer.retrieved or [] if isinstance(r, dict)]
            quarantined = any(r.get("n") == n and r.get("quarantined") for r in retrieved)
            return {"n": n, "chunk_id": item.get("chunk_id"), "quote": "", "quarantined": quarantined}
    raise Http404("The answer has no such citation.")


def chunk_for(user: User, chunk_id: object) -> Chunk:
    """A cited chunk, only if the user may read its collection now (sharing can be revoked)."""
    if not isinstance(chunk_id, int):
        raise Http404("No such source.")
    chunk = chunks_readable_by(user).select_related("document__collection").filter(pk=chunk_id).first()
    if chunk is None:
        raise Http404("No such source.")
    return chunk


def quotes_withheld(user: User, answers: Iterable[Answer]) -> set[int]:
    """Ids of the answers whose text quotes a chunk `user` may not read, to show a note instead.

    An evidence answer's text is sentences of its sources, verbatim: showing it to staff outside
    a collection's group would show them the passage (a model's answer, in its own words, stays
    visible to reviewers). A chunk deleted since is not counted: its collection is unknown.
    """
    quoted: dict[int, set[int]] = {}
    for answer in answers:
        if answer.answer_source != AnswerSource.EVIDENCE:
            continue
        items = [*(answer.citations or []), *(answer.evidence or [])]
        quoted[answer.pk] = {
            item["chunk_id"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("chunk_id"), int)
        }
    ids = set().union(*quoted.values())
    if not ids:
        return set()
    readable = set(chunks_readable_by(user).filter(pk__in=ids).values_list("pk", flat=True))
    unreadable = set(Chunk.objects.filter(pk__in=ids - readable).values_list("pk", flat=True))
    return {pk for pk, chunks in quoted.items() if chunks & unreadable}


def feedback_given(user: User, answers: Iterable[Answer]) -> dict[int, int]:
    """Answer id -> the user's rating, for the answers on a page."""
    ids = [a.pk for a in answers]
    rows = Feedback.objects.filter(user=user, answer_id__in=ids).values_list("answer_id", "rating")
    return dict(rows)


def collections_answered_from(user: User, assistant: Assistant) -> list[str]:
    """Names of the collections `assistant` answers this user from (none chosen: every readable one)."""
    readable = Collection.objects.readable_by(user)
    chosen = list(assistant.collections.values_list("pk", flat=True))
    if chosen:
        readable = readable.filter(pk__in=chosen)
    return list(readable.order_by("name").values_list("name", flat=True))

"""Reads for the staff review queue, and what other apps may ask about reviewed answers.

For other apps:
- `answer_is_approved(answer)` and `approved_answer_ids()`: answers staff approved or corrected.
  The semantic cache may serve these (for a corrected one, serve `corrections()`'s text, not the
  model's).
- `corrections()`: (answer, corrected text) pairs, oldest decision first; fine-tuning candidates.
- `open_count()`: flagged answers nobody has decided or escalated yet (the staff navigation shows it).

The queue is every answer with at least one flag (a person's or an automatic one); an answer
without a Review row is open and unassigned.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.shortcuts import get_object_or_404

from assistant import access as assistant_access
from assistant.models import Answer, Feedback, Flag, Message
from knowledge import selectors as knowledge_selectors
from knowledge.selectors import SearchHit
from review.models import Review, ReviewEvent

APPROVED_STATUSES = (Review.Status.APPROVED, Review.Status.CORRECTED)
MINE, UNASSIGNED, ANY_STATUS = "mine", "unassigned", "all"


def _flagged() -> QuerySet[Answer]:
    return Answer.objects.filter(Exists(Flag.objects.filter(answer=OuterRef("pk"))))


def _open(prefix: str = "") -> Q:
    """An answer (or, with prefix, a related answer) whose review is open or not started."""
    return Q(**{f"{prefix}review__isnull": True}) | Q(**{f"{prefix}review__status": Review.Status.OPEN})


def queue(
    *,
    viewer: User,
    category: str = "",
    source: str = "",
    assistant_id: int | None = None,
    since: date | None = None,
    until: date | None = None,
    status: str = Review.Status.OPEN,
    assignee: str = "",
) -> QuerySet[Answer]:
    """Flagged answers, newest first, narrowed by the queue page's filters.

    `category` and `source` match any one of an answer's flags; `since` and `until` are the days
    the answer was made (inclusive); `status` is a Review.Status or "all"; `assignee` is "mine",
    "unassigned", a user id, or empty for anyone.
    """
    answers = _flagged()
    if category or source:
        flags = Flag.objects.filter(answer=OuterRef("pk"))
        flags = flags.filter(category=category) if category else flags
        flags = flags.filter(source=source) if source else flags
        answers = answers.filter(Exists(flags))
    if assistant_id is not None:
        answers = answers.filter(assistant_id=assistant_id)
    if since is not None:
        answers = answers.filter(created_at__date__gte=since)
    if until is not None:
        answers = answers.filter(created_at__date__lte=until)
    if status == Review.Status.OPEN:
        answers = answers.filter(_open())
    elif status and status != ANY_STATUS:
        answers = answers.filter(review__status=status)
    if assignee == MINE:
        answers = answers.filter(review__assignee=viewer)
    elif assignee == UNASSIGNED:
        answers = answers.filter(Q(review__isnull=True) | Q(review__assignee__isnull=True))
    elif assignee:
        answers = answers.filter(review__assignee_id=int(assignee))
    return (
        answers.select_related("assistant", "user", "review", "review__assignee")
        .prefetch_related("flags")
        .annotate(flag_count=Count("flags", distinct=True))
        .order_by("-created_at", "-pk")
    )


def queued_answer_or_404(pk: int) -> Answer:
    """A flagged answer with what its page shows; 404 for an answer that is not in the queue."""
    return get_object_or_404(
        _flagged().select_related(
            "assistant", "prompt", "user", "message__conversation", "review__assignee", "review__decided_by"
        ),
        pk=pk,
    )


def review_of(answer: Answer) -> Review | None:
    """The answer's review, or None while nobody has acted on it."""
    try:
        return answer.review
    except Review.DoesNotExist:
        return None


def status_of(answer: Answer) -> str:
    review = review_of(answer)
    return review.status if review else Review.Status.OPEN


def open_count() -> int:
    """Flagged answers still open: no decision, not escalated."""
    return _flagged().filter(_open()).count()


def answer_is_approved(answer: Answer) -> bool:
    """True when staff approved the answer or corrected it."""
    return Review.objects.filter(answer_id=answer.pk, status__in=APPROVED_STATUSES).exists()


def approved_answer_ids() -> set[int]:
    """Ids of every answer staff approved or corrected."""
    return set(Review.objects.filter(status__in=APPROVED_STATUSES).values_list("answer_id", flat=True))


@dataclass(frozen=True)
class Correction:
    answer: Answer
    text: str  # what staff wrote the answer should have been
    decided_at: Any


def corrections() -> Iterator[Correction]:
    """Corrected answers with the staff's text, oldest decision first (for a fine-tuning export)."""
    reviews = (
        Review.objects.filter(status=Review.Status.CORRECTED)
        .exclude(correction="")
        .select_related("answer", "answer__assistant", "answer__message")
        .order_by("decided_at", "pk")
    )
    for review in reviews.iterator(chunk_size=200):
        yield Correction(answer=review.answer, text=review.correction, decided_at=review.decided_at)


def staff_users() -> QuerySet[User]:
    """Who a review can be assigned to."""
    return User.objects.filter(is_staff=True, is_active=True).order_by("username")


# --- the item page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievedChunk:
    """One retrieved chunk as the trace recorded it, with its text when it still exists."""

    n: int | None
    chunk_id: int
    score: float | None
    vector_score: float | None
    keyword_score: float | None
    via_tool: bool
    quarantined: bool
    cited: bool
    hit: SearchHit | None  # None: deleted since, or in a collection the reviewer may not read
    restricted: bool = False  # it exists, in a collection the reviewer may not read


@dataclass(frozen=True)
class GuardSection:
    """The verdicts of one guardrail stage (input, output, chunks...)."""

    stage: str
    action: str
    categories: list[str]
    reason: str
    verdicts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    answer: Answer
    review: Review | None
    status: str
    conversation: list[Message]
    chunks: list[RetrievedChunk]
    evidence: list[dict[str, Any]]  # the evidence the answer found, each readable by the reviewer or not
    guardrails: list[GuardSection]
    guardrails_json: str
    grounding_json: str
    flags: list[Flag]
    feedback: list[Feedback]
    events: list[ReviewEvent]
    # The answer's text quotes a passage the reviewer may not read (an evidence answer), and so
    # do the messages of these ids in the conversation: each shows a note instead.
    text_withheld: bool = False
    withheld_messages: frozenset[int] = frozenset()

    @property
    def restricted(self) -> bool:
        """Some of what the answer was made from lies in collections the reviewer may not read."""
        return any(c.restricted for c in self.chunks) or self.text_withheld


def _quarantined(entry: dict[str, Any]) -> bool:
    return bool(entry.get("quarantined") or entry.get("quarantine"))


def retrieved_chunks(answer: Answer, viewer: User) -> list[RetrievedChunk]:
    """The answer's retrieved chunks with their scores and, where the reviewer may read them, texts.

    Staff act within what they may read: a passage in a collection the reviewer cannot read is
    marked restricted and not shown (superusers read every collection).
    """
    entries = [e for e in answer.retrieved or [] if isinstance(e, dict) and e.get("chunk_id") is not None]
    citations = [c for c in answer.citations or [] if isinstance(c, dict)]
    cited_ids = {c.get("chunk_id") for c in citations}
    quarantined_ids = {c.get("chunk_id") for c in citations if _quarantined(c)}
    ids = [int(e["chunk_id"]) for e in entries]
    hits = {hit.chunk.pk: hit for hit in knowledge_selectors.hits_for_chunks(viewer, ids)}
    existing = knowledge_selectors.existing_chunk_ids(ids)
    return [
        RetrievedChunk(
            n=e.get("n"),
            chunk_id=int(e["chunk_id"]),
            score=e.get("score"),
            vector_score=e.get("vector_score"),
            keyword_score=e.get("keyword_score"),
            via_tool=bool(e.get("via_tool")),
            quarantined=_quarantined(e) or e["chunk_id"] in quarantined_ids,
            cited=e["chunk_id"] in cited_ids,
            hit=hits.get(int(e["chunk_id"])),
            restricted=int(e["chunk_id"]) in existing and int(e["chunk_id"]) not in hits,
        )
        for e in entries
    ]


def _section(stage: str, data: dict[str, Any]) -> GuardSection:
    verdicts = [v for v in data.get("verdicts") or [] if isinstance(v, dict)]
    return GuardSection(
        stage=stage,
        action=str(data.get("action", "")),
        categories=[str(c) for c in data.get("categories") or []],
        reason=str(data.get("reason", "")),
        verdicts=verdicts,
    )


def guardrail_sections(data: Any) -> list[GuardSection]:
    """Guardrail verdicts grouped by stage, from whichever shape the answer record holds.

    Either one result ({"action", "verdicts", ...}) or stages of them ({"input": {...},
    "output": {...}}); anything else is shown as raw JSON only.
    """
    if not isinstance(data, dict):
        return []
    if "verdicts" in data or "action" in data:
        return [_section("checks", data)]
    return [_section(str(stage), value) for stage, value in data.items() if isinstance(value, dict)]


def conversation_until(answer: Answer) -> list[Message]:
    """The conversation's messages up to and including this answer's."""
    if answer.message is None:
        return []
    return list(
        Message.objects.filter(
            conversation_id=answer.message.conversation_id, created_at__lte=answer.message.created_at
        ).order_by("created_at", "pk")
    )


def events_of(review: Review | None) -> list[ReviewEvent]:
    return list(review.events.select_related("actor")) if review else []


def item(answer: Answer, *, viewer: User) -> Item:
    """Everything the item page shows about a flagged answer, within what the reviewer may read."""
    review = review_of(answer)
    chunks = retrieved_chunks(answer, viewer)
    readable = {c.chunk_id for c in chunks if c.hit is not None}
    conversation = conversation_until(answer)
    answers = [answer, *Answer.objects.filter(message__in=[m.pk for m in conversation]).exclude(pk=answer.pk)]
    withheld = assistant_access.quotes_withheld(viewer, answers)
    text_withheld = answer.pk in withheld
    return Item(
        answer=answer,
        review=review,
        status=review.status if review else Review.Status.OPEN,
        conversation=conversation,
        chunks=chunks,
        evidence=[
            {**e, "restricted": e.get("chunk_id") not in readable}
            for e in answer.evidence or []
            if isinstance(e, dict)
        ],
        guardrails=guardrail_sections(answer.guardrails),
        guardrails_json=json.dumps(answer.guardrails, indent=2, ensure_ascii=False)
        if answer.guardrails is not None
        else "",
        # An evidence answer's claims are the quoted sentences.
        grounding_json=json.dumps(answer.grounding, indent=2, ensure_ascii=False)
        if answer.grounding and not text_withheld
        else "",
        flags=list(answer.flags.select_related("user")),
        feedback=list(answer.feedback.select_related("user")),
        events=events_of(review),
        text_withheld=text_withheld,
        withheld_messages=frozenset(a.message_id for a in answers if a.pk in withheld and a.message_id),
    )


def queue_withheld(answers: list[Answer], viewer: User) -> set[int]:
    """Ids of the queue's answers whose text quotes a passage `viewer` may not read."""
    return assistant_access.quotes_withheld(viewer, answers)

"""Staff decisions on flagged answers. Each one creates the answer's Review if it has none yet,
changes it, and writes a ReviewEvent to the audit log, in one transaction."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from answer_cache import services as answer_cache
from assistant.models import Answer
from evals import services as evals_services
from review.models import Review, ReviewEvent


def _review_for_update(*, answer: Answer, actor: User) -> Review:
    """The answer's review, locked for this transaction; created open on the first action."""
    if not actor.is_staff:
        raise PermissionDenied("Only staff review answers.")
    if not answer.flags.exists():
        raise ValidationError("This answer is not in the review queue: nobody has flagged it.")
    review, _ = Review.objects.select_for_update().get_or_create(answer=answer)
    return review


def _decide(
    review: Review, *, actor: User, status: str, action: str, note: str = "", fields: tuple[str, ...] = ()
) -> Review:
    review.status = status
    review.decided_by = actor
    review.decided_at = timezone.now()
    review.save(update_fields=["status", "decided_by", "decided_at", "updated_at", *fields])
    ReviewEvent.objects.create(review=review, actor=actor, action=action, note=note)
    return review


def _required(text: str, what: str) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise ValidationError(f"{what} is required.")
    return cleaned


@transaction.atomic
def review_approve(*, answer: Answer, actor: User, note: str = "") -> Review:
    """The answer is right as it stands: the semantic cache may serve it from now on."""
    review = _review_for_update(answer=answer, actor=actor)
    decided = _decide(
        review,
        actor=actor,
        status=Review.Status.APPROVED,
        action=ReviewEvent.Action.APPROVED,
        note=note.strip(),
    )
    answer_cache.cache_store(answer=answer, approved=True)
    return decided


@transaction.atomic
def review_correct(*, answer: Answer, actor: User, text: str, note: str = "") -> Review:
    """Staff wrote the right answer: kept on the review and made into an eval case.

    The case goes to the "Reviewed answers" suite (evals.services.case_from_answer); correcting
    the same answer again updates that case.
    """
    correction = _required(text, "The corrected answer")
    review = _review_for_update(answer=answer, actor=actor)
    review.correction = correction
    case = evals_services.case_from_answer(answer, correction)
    detail = f"Eval case {case.pk} in “{case.suite.name}”."
    return _decide(
        review,
        actor=actor,
        status=Review.Status.CORRECTED,
        action=ReviewEvent.Action.CORRECTED,
        note=f"{note.strip()}\n{detail}".strip(),
        fields=("correction",),
    )


@transaction.atomic
def review_reject(*, answer: Answer, actor: User, reason: str) -> Review:
    """The answer is wrong or unacceptable and will not be corrected here; the reason is required."""
    reason = _required(reason, "A reason")
    review = _review_for_update(answer=answer, actor=actor)
    review.rejection_reason = reason
    return _decide(
        review,
        actor=actor,
        status=Review.Status.REJECTED,
        action=ReviewEvent.Action.REJECTED,
        note=reason,
        fields=("rejection_reason",),
    )


@transaction.atomic
def review_escalate(*, answer: Answer, actor: User, note: str) -> Review:
    """Someone else has to decide (a domain expert, legal); the note says why."""
    note = _required(note, "A note")
    review = _review_for_update(answer=answer, actor=actor)
    return _decide(
        review, actor=actor, status=Review.Status.ESCALATED, action=ReviewEvent.Action.ESCALATED, note=note
    )


@transaction.atomic
def review_assign(*, answer: Answer, actor: User, assignee: User) -> Review:
    """Give the review to a staff member (the actor or another); does not change its status."""
    review = _review_for_update(answer=answer, actor=actor)
    if not assignee.is_staff or not assignee.is_active:
        raise ValidationError("Reviews can only be assigned to active staff.")  # rolls the row back
    review.assignee = assignee
    review.save(update_fields=["assignee", "updated_at"])
    note = "to themselves" if assignee.pk == actor.pk else f"to {assignee.get_username()}"
    ReviewEvent.objects.create(review=review, actor=actor, action=ReviewEvent.Action.ASSIGNED, note=note)
    return review

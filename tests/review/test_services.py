"""Review decisions: each one, its audit event, the lazily made Review, and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from assistant.models import Answer
from evals.models import Case
from review import selectors, services
from review.models import Review, ReviewEvent
from tests import factories

pytestmark = pytest.mark.django_db


def test_no_review_row_until_someone_acts(flagged: Answer, owner: Any) -> None:
    assert not Review.objects.exists()
    assert selectors.status_of(flagged) == "open"
    services.review_assign(answer=flagged, actor=owner, assignee=owner)
    review = Review.objects.get(answer=flagged)
    assert review.status == "open" and review.assignee == owner
    event = review.events.get()
    assert (event.actor, event.action, event.note) == (owner, "assigned", "to themselves")


def test_assign_to_another_staff_member_but_not_to_a_member(flagged: Answer, owner: Any, member: Any) -> None:
    colleague = factories.user(username="colleague", staff=True)
    review = services.review_assign(answer=flagged, actor=owner, assignee=colleague)
    assert review.assignee == colleague
    assert review.events.get().note == "to colleague"
    with pytest.raises(ValidationError):
        services.review_assign(answer=flagged, actor=owner, assignee=member)
    review.refresh_from_db()
    assert review.assignee == colleague and review.events.count() == 1


def test_approve_records_decision_and_event(flagged: Answer, owner: Any) -> None:
    review = services.review_approve(answer=flagged, actor=owner, note="Checked against the policy.")
    review.refresh_from_db()
    assert (review.status, review.decided_by) == ("approved", owner) and review.decided_at is not None
    event = review.events.get()
    assert (event.action, event.actor, event.note) == ("approved", owner, "Checked against the policy.")
    assert Review.objects.count() == 1


def test_correct_creates_an_eval_case_with_the_corrected_text(flagged: Answer, owner: Any) -> None:
    review = services.review_correct(answer=flagged, actor=owner, text="  Due on the 10th of each month. ")
    assert review.status == "corrected" and review.correction == "Due on the 10th of each month."
    case = Case.objects.get(source_answer=flagged)
    assert case.expected == ["Due on the 10th of each month."]
    assert case.question == flagged.question and case.source == Case.Source.REVIEW
    event = review.events.get()
    assert event.action == "corrected" and f"Eval case {case.pk}" in event.note

    services.review_correct(answer=flagged, actor=owner, text="The 12th.")
    assert Case.objects.get(source_answer=flagged).expected == ["The 12th."]  # updated, not duplicated
    assert review.events.count() == 2


def test_correct_needs_text(flagged: Answer, owner: Any) -> None:
    with pytest.raises(ValidationError):
        services.review_correct(answer=flagged, actor=owner, text="   ")
    assert not Case.objects.exists() and not Review.objects.exists()


def test_reject_needs_a_reason(flagged: Answer, owner: Any) -> None:
    with pytest.raises(ValidationError):
        services.review_reject(answer=flagged, actor=owner, reason=" ")
    assert not Review.objects.exists()
    review = services.review_reject(answer=flagged, actor=owner, reason="Cites the wrong policy.")
    assert (review.status, review.rejection_reason) == ("rejected", "Cites the wrong policy.")
    assert review.events.get().note == "Cites the wrong policy."


def test_escalate_needs_a_note(flagged: Answer, owner: Any) -> None:
    with pytest.raises(ValidationError):
        services.review_escalate(answer=flagged, actor=owner, note="")
    review = services.review_escalate(answer=flagged, actor=owner, note="Finance must confirm.")
    assert review.status == "escalated"
    assert list(review.events.values_list("action", "note")) == [("escalated", "Finance must confirm.")]


def test_only_staff_act(flagged: Answer, member: Any) -> None:
    for call in (
        lambda: services.review_approve(answer=flagged, actor=member),
        lambda: services.review_correct(answer=flagged, actor=member, text="x"),
        lambda: services.review_reject(answer=flagged, actor=member, reason="x"),
        lambda: services.review_escalate(answer=flagged, actor=member, note="x"),
        lambda: services.review_assign(answer=flagged, actor=member, assignee=member),
    ):
        with pytest.raises(PermissionDenied):
            call()
    assert not Review.objects.exists() and not ReviewEvent.objects.exists()


def test_an_unflagged_answer_cannot_be_reviewed(unflagged: Answer, owner: Any) -> None:
    with pytest.raises(ValidationError):
        services.review_approve(answer=unflagged, actor=owner)
    assert not Review.objects.exists()


def test_every_action_is_in_the_audit_log_in_order(flagged: Answer, owner: Any) -> None:
    services.review_assign(answer=flagged, actor=owner, assignee=owner)
    services.review_escalate(answer=flagged, actor=owner, note="Ask finance.")
    services.review_correct(answer=flagged, actor=owner, text="The 10th.")
    review = Review.objects.get(answer=flagged)
    assert [e.action for e in selectors.events_of(review)] == ["assigned", "escalated", "corrected"]

"""The queue and the selectors other apps use: approved answers, corrections, the open count."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from assistant import services as assistant_services
from assistant.models import Answer, Flag
from review import selectors, services
from tests import factories

pytestmark = pytest.mark.django_db


def ids(answers: Any) -> set[int]:
    return {a.pk for a in answers}


def test_the_queue_is_the_flagged_answers(
    flagged: Answer, auto_flagged: Answer, unflagged: Answer, owner: Any
):
    assert ids(selectors.queue(viewer=owner)) == {flagged.pk, auto_flagged.pk}
    assert selectors.open_count() == 2


def test_filters_by_reason_and_source(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    assert ids(selectors.queue(viewer=owner, category="wrong")) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, category="unsupported")) == {auto_flagged.pk}
    assert ids(selectors.queue(viewer=owner, source="grounding")) == {auto_flagged.pk}
    assert ids(selectors.queue(viewer=owner, source="user")) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, category="wrong", source="grounding")) == set()
    assert ids(selectors.queue(viewer=owner, category="harmful")) == set()


def test_filters_by_assistant(flagged: Answer, owner: Any) -> None:
    other = factories.user(username="other")  # noqa: F841 (an unrelated account does not matter)
    assert ids(selectors.queue(viewer=owner, assistant_id=flagged.assistant_id)) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, assistant_id=flagged.assistant_id + 1000)) == set()


def test_filters_by_date(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    Answer.objects.filter(pk=flagged.pk).update(created_at=timezone.now() - datetime.timedelta(days=10))
    today = timezone.localdate()
    assert ids(selectors.queue(viewer=owner, since=today)) == {auto_flagged.pk}
    assert ids(selectors.queue(viewer=owner, until=today - datetime.timedelta(days=5))) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, since=today - datetime.timedelta(days=11), until=today)) == {
        flagged.pk,
        auto_flagged.pk,
    }


def test_filters_by_status(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    services.review_approve(answer=flagged, actor=owner)
    assert ids(selectors.queue(viewer=owner)) == {auto_flagged.pk}  # open by default
    assert ids(selectors.queue(viewer=owner, status="approved")) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, status="rejected")) == set()
    assert ids(selectors.queue(viewer=owner, status="all")) == {flagged.pk, auto_flagged.pk}
    assert selectors.open_count() == 1


def test_an_assigned_but_undecided_answer_is_still_open(flagged: Answer, owner: Any) -> None:
    services.review_assign(answer=flagged, actor=owner, assignee=owner)
    assert ids(selectors.queue(viewer=owner, status="open")) == {flagged.pk}
    assert selectors.open_count() == 1


def test_filters_by_assignee(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    colleague = factories.user(username="colleague", staff=True)
    services.review_assign(answer=flagged, actor=owner, assignee=colleague)
    assert ids(selectors.queue(viewer=colleague, assignee="mine")) == {flagged.pk}
    assert ids(selectors.queue(viewer=owner, assignee="mine")) == set()
    assert ids(selectors.queue(viewer=owner, assignee="unassigned")) == {auto_flagged.pk}
    assert ids(selectors.queue(viewer=owner, assignee=str(colleague.pk))) == {flagged.pk}


def test_a_second_flag_does_not_list_the_answer_twice(flagged: Answer, member: Any, owner: Any) -> None:
    assistant_services.flag_create(answer=flagged, user=member, category=Flag.Category.OTHER)
    listed = list(selectors.queue(viewer=owner))
    assert [a.pk for a in listed] == [flagged.pk] and listed[0].flag_count == 2


def test_approved_selectors(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    assert not selectors.answer_is_approved(flagged) and selectors.approved_answer_ids() == set()
    services.review_approve(answer=flagged, actor=owner)
    services.review_correct(answer=auto_flagged, actor=owner, text="They are paid by bank transfer.")
    assert selectors.answer_is_approved(flagged) and selectors.answer_is_approved(auto_flagged)
    assert selectors.approved_answer_ids() == {flagged.pk, auto_flagged.pk}

    services.review_reject(answer=flagged, actor=owner, reason="On second look, wrong.")
    assert not selectors.answer_is_approved(flagged)
    assert selectors.approved_answer_ids() == {auto_flagged.pk}


def test_escalated_is_neither_approved_nor_open(flagged: Answer, owner: Any) -> None:
    services.review_escalate(answer=flagged, actor=owner, note="Legal.")
    assert not selectors.answer_is_approved(flagged) and selectors.open_count() == 0


def test_corrections_are_the_corrected_answers_with_the_staff_text(
    flagged: Answer, auto_flagged: Answer, owner: Any
) -> None:
    assert list(selectors.corrections()) == []
    services.review_approve(answer=flagged, actor=owner)
    services.review_correct(answer=auto_flagged, actor=owner, text="They are paid by bank transfer.")
    [correction] = selectors.corrections()
    assert correction.answer == auto_flagged and correction.text == "They are paid by bank transfer."


def test_the_item_holds_the_trace(flagged: Answer, owner: Any) -> None:
    item = selectors.item(selectors.queued_answer_or_404(flagged.pk), viewer=owner)
    assert [m.role for m in item.conversation] == ["user", "assistant"]
    assert item.chunks and item.chunks[0].hit is not None and item.chunks[0].cited
    assert "5th of each month" in item.chunks[0].hit.chunk.text
    assert [f.note for f in item.flags] == ["It is the 10th now."]
    assert item.review is None and item.status == "open" and item.events == []


def test_quarantined_chunks_and_guardrail_sections(flagged: Answer, owner: Any) -> None:
    flagged.retrieved = [{**flagged.retrieved[0], "quarantined": True}]
    flagged.guardrails = {
        "input": {"action": "allow", "categories": [], "verdicts": [{"check": "pii", "action": "allow"}]},
        "output": {"action": "rewrite", "categories": ["pii"], "reason": "an e-mail address", "verdicts": []},
    }
    flagged.save(update_fields=["retrieved", "guardrails"])
    item = selectors.item(flagged, viewer=owner)
    assert item.chunks[0].quarantined
    assert [(s.stage, s.action) for s in item.guardrails] == [("input", "allow"), ("output", "rewrite")]
    assert item.guardrails[0].verdicts == [{"check": "pii", "action": "allow"}]
    assert selectors.guardrail_sections(None) == [] and selectors.guardrail_sections(["odd"]) == []
    assert [s.stage for s in selectors.guardrail_sections({"action": "block", "verdicts": []})] == ["checks"]


def test_an_unquarantined_chunk_is_not_marked(flagged: Answer, owner: Any) -> None:
    assert not any(chunk.quarantined for chunk in selectors.item(flagged, viewer=owner).chunks)

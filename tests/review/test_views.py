"""The review pages: who may see and act, filters, htmx fragments, actions and their errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from assistant.models import Answer
from evals.models import Case
from review.models import Review, ReviewEvent
from tests import factories

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
ACTIONS = {
    "approve": {"note": ""},
    "correct": {"text": "The 10th.", "note": ""},
    "reject": {"reason": "Wrong."},
    "escalate": {"note": "Finance."},
}


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_visitors_are_sent_to_log_in(flagged: Answer) -> None:
    for url in (reverse("review:queue"), reverse("review:item", args=[flagged.pk])):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = Client().post(reverse("review:approve", args=[flagged.pk]))
    assert response.status_code == 302 and not Review.objects.exists()


@pytest.mark.parametrize("persona", ["member", "outsider"])
def test_people_who_are_not_staff_cannot_see_or_act(flagged: Answer, persona: str, request: Any) -> None:
    client = client_for(request.getfixturevalue(persona))
    assert client.get(reverse("review:queue")).status_code == 403
    assert client.get(reverse("review:item", args=[flagged.pk])).status_code == 403
    for action, data in ACTIONS.items():
        assert client.post(reverse(f"review:{action}", args=[flagged.pk]), data).status_code == 403
    assert client.post(reverse("review:assign", args=[flagged.pk]), {"assignee": 1}).status_code == 403
    assert not Review.objects.exists() and not Case.objects.exists()


def test_the_nav_shows_staff_the_queue_with_its_count(flagged: Answer, owner: Any, member: Any) -> None:
    page = client_for(owner).get("/").content.decode()
    assert 'href="/review/"' in page and 'id="nav-review"' in page and ">1</span>" in page
    assert 'href="/review/"' not in client_for(member).get("/").content.decode()


def test_staff_see_the_queue_and_its_open_count(
    flagged: Answer, auto_flagged: Answer, unflagged: Answer, owner
):
    response = client_for(owner).get(reverse("review:queue"))
    assert response.status_code == 200
    page = response.content.decode()
    assert '<strong id="open-count">2</strong>' in page
    assert reverse("review:item", args=[flagged.pk]) in page
    assert reverse("review:item", args=[auto_flagged.pk]) in page
    assert reverse("review:item", args=[unflagged.pk]) not in page
    assert "<html" in page


def test_filters_come_back_as_an_htmx_fragment(flagged: Answer, auto_flagged: Answer, owner: Any) -> None:
    response = client_for(owner).get(reverse("review:queue"), {"source": "grounding"}, **HTMX)
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page and 'id="open-count"' in page
    assert reverse("review:item", args=[auto_flagged.pk]) in page
    assert reverse("review:item", args=[flagged.pk]) not in page
    assert "HX-Request" in response["Vary"]


def test_filter_by_status_and_assignee_through_the_page(flagged: Answer, auto_flagged: Answer, owner) -> None:
    client = client_for(owner)
    client.post(reverse("review:assign", args=[flagged.pk]), {"assignee": owner.pk})
    mine = client.get(reverse("review:queue"), {"assignee": "mine"}).content.decode()
    assert reverse("review:item", args=[flagged.pk]) in mine
    assert reverse("review:item", args=[auto_flagged.pk]) not in mine
    client.post(reverse("review:approve", args=[flagged.pk]), {"note": ""})
    open_page = client.get(reverse("review:queue")).content.decode()
    assert reverse("review:item", args=[flagged.pk]) not in open_page
    approved = client.get(reverse("review:queue"), {"status": "approved"}).content.decode()
    assert reverse("review:item", args=[flagged.pk]) in approved


def test_bad_filters_show_errors_not_a_500(flagged: Answer, owner: Any) -> None:
    client = client_for(owner)
    for params in (
        {"since": "not a date"},
        {"status": "nonsense"},
        {"assignee": "9999"},
        {"since": "2025-02-01", "until": "2025-01-01"},
        {"page": "x"},
    ):
        response = client.get(reverse("review:queue"), params)
        assert response.status_code == 200, params
    page = client.get(
        reverse("review:queue"), {"since": "2025-02-01", "until": "2025-01-01"}
    ).content.decode()
    assert "The end date is before the start date." in page


def test_pagination(flagged: Answer, owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from review import views

    monkeypatch.setattr(views, "PER_PAGE", 1)
    second = Answer.objects.get(pk=flagged.pk)
    second.pk = None
    second.message = None
    second.save()
    second.flags.create(category="other", source="user")
    client = client_for(owner)
    first_page = client.get(reverse("review:queue")).content.decode()
    assert "Page 1 of 2" in first_page and "?page=2" in first_page
    assert "Page 2 of 2" in client.get(reverse("review:queue"), {"page": 2}, **HTMX).content.decode()


def test_the_item_page_shows_the_trace(flagged: Answer, owner: Any) -> None:
    flagged.guardrails = {
        "input": {"action": "allow", "categories": [], "verdicts": [{"check": "injection"}]}
    }
    flagged.retrieved = [{**flagged.retrieved[0], "quarantined": True}]
    flagged.save(update_fields=["guardrails", "retrieved"])
    page = client_for(owner).get(reverse("review:item", args=[flagged.pk])).content.decode()
    assert "When are expense reports due?" in page  # the conversation
    assert "Expense reports are due on the 5th of each month [1]." in page  # the answer
    assert "expense-policy.md" in page  # citation and chunk
    assert "Submit them in the finance portal" in page  # the chunk's text
    assert "quarantined" in page and "injection" in page
    assert "It is the 10th now." in page  # the flag's note
    assert "grounded-answer v1" in page and "Temperature" in page and "Seed" in page
    assert "Nobody has acted on this answer yet." in page


def test_an_answer_without_flags_has_no_page(unflagged: Answer, owner: Any) -> None:
    client = client_for(owner)
    assert client.get(reverse("review:item", args=[unflagged.pk])).status_code == 404
    assert client.post(reverse("review:approve", args=[unflagged.pk]), {"note": ""}).status_code == 404
    assert client.get(reverse("review:item", args=[999999])).status_code == 404


@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_action_by_htmx_returns_the_panel_with_its_event(
    flagged: Answer, owner: Any, action: str
) -> None:
    response = client_for(owner).post(reverse(f"review:{action}", args=[flagged.pk]), ACTIONS[action], **HTMX)
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page and 'id="review-panel"' in page
    status = {"approve": "approved", "correct": "corrected", "reject": "rejected", "escalate": "escalated"}[
        action
    ]
    assert Review.objects.get(answer=flagged).status == status
    event = ReviewEvent.objects.get()
    assert (event.action, event.actor) == (status, owner)
    assert re.search(rf"<strong>owner</strong>\s+{status}", page)  # the audit log line


def test_an_action_without_htmx_redirects_to_the_item(flagged: Answer, owner: Any) -> None:
    client = client_for(owner)
    response = client.post(reverse("review:approve", args=[flagged.pk]), {"note": "Fine."})
    assert response.status_code == 302 and response["Location"] == reverse("review:item", args=[flagged.pk])
    page = client.get(response["Location"]).content.decode()
    assert "Approved." in page and "Fine." in page


def test_correcting_through_the_page_makes_an_eval_case(flagged: Answer, owner: Any) -> None:
    client_for(owner).post(
        reverse("review:correct", args=[flagged.pk]), {"text": "Due on the 10th.", "note": "Policy changed."}
    )
    assert Case.objects.get(source_answer=flagged).expected == ["Due on the 10th."]
    assert Review.objects.get(answer=flagged).correction == "Due on the 10th."


@pytest.mark.parametrize(
    ("action", "data", "message"),
    [
        ("reject", {"reason": "  "}, "Say why it is rejected."),
        ("correct", {"text": ""}, "Write the answer it should have given."),
        ("escalate", {}, "Say why, and for whom."),
        ("assign", {"assignee": "abc"}, "Select a valid choice."),
    ],
)
@pytest.mark.parametrize("htmx", [True, False])
def test_invalid_input_re_renders_with_errors(
    flagged: Answer, owner: Any, action: str, data: dict[str, str], message: str, htmx: bool
) -> None:
    extra = HTMX if htmx else {}
    response = client_for(owner).post(reverse(f"review:{action}", args=[flagged.pk]), data, **extra)
    page = response.content.decode()
    assert response.status_code == 200 and message in page
    assert ("<html" in page) is not htmx
    assert not Review.objects.exists() and not ReviewEvent.objects.exists()


def test_assigning_to_someone_who_is_not_staff_is_refused(flagged: Answer, owner: Any, member: Any) -> None:
    response = client_for(owner).post(
        reverse("review:assign", args=[flagged.pk]), {"assignee": member.pk}, **HTMX
    )
    assert response.status_code == 200 and "Select a valid choice." in response.content.decode()
    assert not Review.objects.exists()


def test_assign_to_another_staff_member(flagged: Answer, owner: Any) -> None:
    colleague = factories.user(username="colleague", staff=True)
    response = client_for(owner).post(
        reverse("review:assign", args=[flagged.pk]), {"assignee": colleague.pk}, **HTMX
    )
    assert "Assigned to <strong>colleague</strong>" in response.content.decode()
    assert Review.objects.get(answer=flagged).assignee == colleague


def test_get_on_an_action_is_not_allowed(flagged: Answer, owner: Any) -> None:
    assert client_for(owner).get(reverse("review:approve", args=[flagged.pk])).status_code == 405


def test_the_admin_lists_reviews_read_only(flagged: Answer, owner: Any, admin_user: Any) -> None:
    from review import services

    review = services.review_approve(answer=flagged, actor=owner)
    client = client_for(admin_user)
    assert client.get("/admin/review/review/").status_code == 200
    assert client.get(f"/admin/review/review/{review.pk}/change/").status_code == 200
    assert client.get("/admin/review/review/add/").status_code == 403

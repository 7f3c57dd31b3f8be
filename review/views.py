"""The staff review queue: a filtered list of flagged answers, each answer's trace, and decisions."""

from __future__ import annotations

from typing import Any

from django import forms as django_forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from assistant.models import Answer
from common.access import StaffRequest, staff_required
from review import selectors, services
from review.forms import ApproveForm, AssignForm, CorrectForm, EscalateForm, QueueFilterForm, RejectForm
from review.models import Review

QUEUE_PAGE = "review/queue.html"
ITEM_PAGE = "review/item.html"
PER_PAGE = 25


@require_GET
@staff_required
def queue(request: StaffRequest) -> HttpResponse:
    data = request.GET.copy()
    data.setdefault("status", Review.Status.OPEN)
    form = QueueFilterForm(data)
    answers = (
        selectors.queue(viewer=request.user, **form.queue_filters())
        if form.is_valid()
        else Answer.objects.none()
    )
    page = Paginator(answers, PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "open_count": selectors.open_count(),
        "withheld": selectors.queue_withheld(list(page), request.user),
    }
    fragment = request.htmx and not request.htmx.history_restore_request
    response = render(request, f"{QUEUE_PAGE}#results" if fragment else QUEUE_PAGE, context)
    patch_vary_headers(response, ["HX-Request"])  # the same URL serves the page and the fragment
    return response


def _forms(
    request: StaffRequest, review: Review | None, bound: tuple[str, django_forms.Form] | None
) -> dict[str, Any]:
    forms: dict[str, django_forms.Form] = {
        "approve": ApproveForm(),
        "correct": CorrectForm(initial={"text": review.correction if review else ""}),
        "reject": RejectForm(),
        "escalate": EscalateForm(),
        "assign": AssignForm(initial={"assignee": request.user.pk}),
    }
    if bound is not None:
        forms[bound[0]] = bound[1]
    return forms


def _render_item(
    request: StaffRequest,
    answer: Answer,
    bound: tuple[str, django_forms.Form] | None = None,
    *,
    fragment: bool = False,
) -> HttpResponse:
    item = selectors.item(answer, viewer=request.user)
    context: dict[str, Any] = {
        "item": item,
        "forms": _forms(request, item.review, bound),
        "failed": bound[0] if bound else "",
    }
    return render(request, f"{ITEM_PAGE}#decision" if fragment else ITEM_PAGE, context)


@require_GET
@staff_required
def item(request: StaffRequest, pk: int) -> HttpResponse:
    return _render_item(request, selectors.queued_answer_or_404(pk))


_ACTIONS: dict[str, tuple[type[django_forms.Form], str]] = {
    "approve": (ApproveForm, "Approved."),
    "correct": (CorrectForm, "Corrected; the correction is now an eval case."),
    "reject": (RejectForm, "Rejected."),
    "escalate": (EscalateForm, "Escalated."),
    "assign": (AssignForm, "Assigned."),
}


def _apply(action: str, answer: Answer, request: StaffRequest, data: dict[str, Any]) -> None:
    actor = request.user
    if action == "approve":
        services.review_approve(answer=answer, actor=actor, note=data["note"])
    elif action == "correct":
        services.review_correct(answer=answer, actor=actor, text=data["text"], note=data["note"])
    elif action == "reject":
        services.review_reject(answer=answer, actor=actor, reason=data["reason"])
    elif action == "escalate":
        services.review_escalate(answer=answer, actor=actor, note=data["note"])
    else:
        services.review_assign(answer=answer, actor=actor, assignee=data["assignee"])


@require_POST
@staff_required
def act(request: StaffRequest, pk: int, action: str) -> HttpResponse:
    """One decision form posted; invalid input re-renders the decision panel with its errors."""
    answer = selectors.queued_answer_or_404(pk)
    form_class, done = _ACTIONS[action]
    form = form_class(request.POST)
    if form.is_valid():
        try:
            _apply(action, answer, request, form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
    if not form.is_valid():
        return _render_item(request, answer, (action, form), fragment=bool(request.htmx))
    answer = selectors.queued_answer_or_404(pk)  # the review changed under the cached relation
    if request.htmx:
        return _render_item(request, answer, fragment=True)
    messages.success(request, done)
    return redirect("review:item", pk=answer.pk)

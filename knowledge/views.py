"""Staff pages of the knowledge base: uploading documents and looking at what retrieval returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from common.access import StaffRequest, staff_required
from gateway import provider
from knowledge import selectors, services
from knowledge.forms import DocumentRowForm, RetrievalForm, UploadForm
from knowledge.models import Document
from knowledge.selectors import SearchHit, SearchPlan
from knowledge.uploads import SizeLimitUploadHandler

# A request body this much larger than the per-file limit cannot be a sensible batch; refuse it
# before parsing a byte of it.
BATCH_FILES_BOUND = 20
BATCH_SLACK_BYTES = 1024 * 1024


def _document_or_404(pk: int) -> Document:
    """The document a staff member asked for; staff see every document."""
    return get_object_or_404(Document.objects.select_related("collection"), pk=pk)


# --- upload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadRow:
    """One line of an upload's result: a stored document, or a file refused before storage."""

    filename: str
    action: str  # "created", "new_version", "duplicate" or "rejected"
    document: Document | None = None
    reason: str = ""  # why a file was rejected

    @property
    def note(self) -> str:
        return _row_note(self.document, self.action) if self.document else self.reason


def _row_note(document: Document, action: str) -> str:
    """The line under a row's title that says what the upload did."""
    if action not in {"created", "new_version", "duplicate"}:
        return ""
    if action == "duplicate":
        return services.UploadOutcome(document, action).message
    if document.is_terminal:
        return (
            f"Replaced the previous file: this is version {document.version}."
            if action == "new_version"
            else ""
        )
    return services.UploadOutcome(document, action).message


def _render_upload(
    request: StaffRequest,
    form: UploadForm,
    *,
    rows: list[UploadRow] | None = None,
    problem: str = "",
    status: int = 200,
) -> HttpResponse:
    context: dict[str, Any] = {
        "form": form,
        "rows": rows or [],
        "problem": problem,
        "limit": settings.UPLOAD_MAX_BYTES,
    }
    if request.htmx:
        return render(request, "knowledge/upload.html#panel", context, status=status)
    context["documents"] = selectors.documents_for_staff()
    return render(request, "knowledge/upload.html", context, status=status)


def _body_problem(request: HttpRequest, limit: int) -> tuple[str, int] | None:
    """Why the request body cannot be a batch of files within the limit, with the status to send."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return "The upload was malformed; try again.", 400
    if length > limit * BATCH_FILES_BOUND + BATCH_SLACK_BYTES:
        return (
            f"This upload is {filesizeformat(length)}, more than {BATCH_FILES_BOUND} files of at most "
            f"{filesizeformat(limit)} each. Upload fewer or smaller files at a time.",
            413,
        )
    try:
        request.POST  # noqa: B018 (parse now, with the size guard installed, so errors become messages)
    except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent):
        return (
            f"Too many files or fields in one upload (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} "
            "files); upload them in smaller batches.",
            400,
        )
    except (MultiPartParserError, UnreadablePostError):
        return "The upload was interrupted or malformed; try again.", 400
    return None


@csrf_exempt
@require_http_methods(["GET", "POST"])
@staff_required
def upload(request: StaffRequest) -> HttpResponse:
    """The documents page: upload a batch of files into a collection, and the list of documents.

    The size guard has to be installed before anything reads the body, and the CSRF check reads
    it, hence csrf_exempt here and csrf_protect on the inner view (as Django's documentation on
    changing upload handlers describes).
    """
    guard = SizeLimitUploadHandler(request, limit=settings.UPLOAD_MAX_BYTES)
    request.upload_handlers.insert(0, guard)
    if request.method == "POST":
        problem = _body_problem(request, guard.limit)
        if problem is not None:
            message, status = problem
            return _render_upload(request, UploadForm(), problem=message, status=status)
    return _upload(request, guard)


@csrf_protect
def _upload(request: StaffRequest, guard: SizeLimitUploadHandler) -> HttpResponse:
    if request.method != "POST":
        return _render_upload(request, UploadForm())
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_upload(request, form)
    files = form.cleaned_data["uploads"]
    if not files and not guard.oversized:
        form.add_error("uploads", "Choose at least one file.")
        return _render_upload(request, form)

    collection = form.cleaned_data["collection"] or services.collection_create(
        name=form.cleaned_data["new_collection"]
    )
    rows = [
        UploadRow(
            filename=name,
            action="rejected",
            reason=f"{name} is larger than the {filesizeformat(guard.limit)} limit; it was not stored.",
        )
        for name in guard.oversized
    ]
    for uploaded in files:
        name = uploaded.name or "upload"
        try:
            outcome = services.document_upload(
                collection=collection, file=uploaded, filename=name, uploaded_by=request.user
            )
        except services.UploadRejected as exc:
            rows.append(UploadRow(filename=name, action="rejected", reason=str(exc)))
        else:
            rows.append(
                UploadRow(
                    filename=outcome.document.filename, action=outcome.action, document=outcome.document
                )
            )
    # A fresh form for the next batch, on the collection just used (which may be new).
    return _render_upload(request, UploadForm(initial={"collection": collection.pk}), rows=rows)


@require_GET
@staff_required
def document_row(request: StaffRequest, pk: int) -> HttpResponse:
    """One document's row; it polls itself while the document is being indexed."""
    if not request.htmx:
        return redirect("knowledge:upload")
    form = DocumentRowForm(request.GET)
    action = form.cleaned_data["action"] if form.is_valid() else ""
    document = Document.objects.select_related("collection").filter(pk=pk).first()
    if document is None:
        # Deleted meanwhile (elsewhere): say so, and tell htmx to stop polling.
        return HttpResponseStopPolling(
            render_to_string("knowledge/upload.html#gone_row", {"pk": pk}, request=request)
        )
    context = {"document": document, "action": action, "note": _row_note(document, action)}
    return render(request, "knowledge/upload.html#document_row", context)


@require_POST
@staff_required
def document_delete(request: StaffRequest, pk: int) -> HttpResponse:
    document = _document_or_404(pk)
    title = document.title
    services.document_delete(document=document)
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, f"Deleted “{title}” and its chunks.")
    return redirect("knowledge:upload")


# --- retrieval ------------------------------------------------------------------------------


@require_GET
@staff_required
def retrieval(request: StaffRequest) -> HttpResponse:
    """Run a search as the signed-in user and show every score behind the ranking."""
    form = RetrievalForm(request.user, request.GET if "q" in request.GET else None)
    hits: list[SearchHit] = []
    plans: list[SearchPlan] = []
    error = ""
    if form.is_bound and form.is_valid():
        collection = form.cleaned_data["collection"]
        try:
            hits = selectors.search(
                request.user,
                form.cleaned_data["q"],
                form.cleaned_data["k"],
                collections=[collection.pk] if collection else None,
                mode=form.cleaned_data["mode"],
                plan_out=plans,
            )
        except provider.ProviderError as exc:
            error = _provider_message(exc)
    context = {
        "form": form,
        "searched": form.is_bound,
        "hits": hits,
        "plan": plans[0] if plans else None,
        "error": error,
    }
    template = "knowledge/retrieval.html#results" if request.htmx else "knowledge/retrieval.html"
    return render(request, template, context)


def _provider_message(exc: provider.ProviderError) -> str:
    if exc.retryable:
        return (
            f"The embedding model did not answer ({exc}). Keyword search works without it: "
            "choose “Keyword only” and search again, or retry in a moment."
        )
    return f"The embedding model could not embed this query: {exc}"

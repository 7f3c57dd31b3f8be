"""Writes for evals: suites and cases (imports, the shipped suite), runs and their results."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from assistant import pipeline
from assistant import services as assistant_services
from assistant.models import Answer, Assistant
from assistant.selectors import history_before
from evals import graders, selectors
from evals.datasets import CaseDraft, Dataset, DocumentDraft
from evals.demo_suite import CANARY as CANARY  # re-exported: callers name them on services
from evals.demo_suite import DEFAULT_CASES, INJECTED_DOCUMENT, INJECTED_FILENAME
from evals.demo_suite import DEFAULT_SUITE as DEFAULT_SUITE
from evals.models import Case, Grade, JudgeCalibration, Result, Run, Suite
from gateway import provider
from knowledge import services as knowledge
from knowledge.models import Collection, Document
from usage import services as usage
from usage.services import Purpose

logger = logging.getLogger(__name__)

RUNNER_USERNAME = "evals-runner"
# A result left "running" longer than the hard task time limit was abandoned by a dead worker.
STALE_AFTER = timedelta(seconds=int(getattr(settings, "CELERY_TASK_TIME_LIMIT", 960)) + 60)


# --- suites and cases ---------------------------------------------------------------------


def runner_user() -> User:
    """The account eval answers are made as: reads public collections and suites' own collections.

    It cannot sign in (no usable password, inactive); its answers are easy to tell apart from
    people's (`Answer.user`), and the review queue can leave them out.
    """
    user, created = User.objects.get_or_create(
        username=RUNNER_USERNAME, defaults={"is_active": False, "first_name": "Evals"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def suite_get_or_create(*, name: str, description: str = "") -> Suite:
    suite, _ = Suite.objects.get_or_create(name=name[:200], defaults={"description": description})
    return suite


def _suite_collection(suite: Suite) -> Collection:
    """The suite's own private collection, readable by the evals account."""
    if suite.collection is None:
        suite.collection = knowledge.collection_create(
            name=f"Evals · {suite.name}"[:200],
            description=f"Documents for the evaluation suite “{suite.name}”. Readable by the evals account.",
        )
        suite.save(update_fields=["collection"])
    suite.collection.reader_users.add(runner_user())
    return suite.collection


@dataclass
class ImportOutcome:
    suite: Suite
    created: int = 0
    skipped: int = 0
    document_ids: list[int] = field(default_factory=list)
    documents_new: int = 0


def _case_from_draft(suite: Suite, draft: CaseDraft, source: str) -> Case:
    return Case(
        suite=suite,
        question=draft.question,
        history=draft.history,
        expected=draft.expected,
        facts=draft.facts,
        must_cite=draft.must_cite,
        forbidden=draft.forbidden,
        expected_behaviour=draft.expected_behaviour,
        tags=draft.tags,
        notes=draft.notes,
        source=source,
        external_id=draft.external_id,
    )


def _documents_upload(
    suite: Suite, documents: Sequence[DocumentDraft], *, enqueue: bool
) -> tuple[list[int], int]:
    if not documents:
        return [], 0
    collection = _suite_collection(suite)
    ids, new = [], 0
    for doc in documents:
        outcome = knowledge.document_upload(
            collection=collection,
            file=ContentFile(doc.text.encode("utf-8"), name=doc.filename),
            filename=doc.filename,
            title=doc.title,
            enqueue=enqueue,
        )
        ids.append(outcome.document.pk)
        new += outcome.action != "duplicate"
    return ids, new


@transaction.atomic
def cases_import(
    *, suite_name: str, dataset: Dataset, source: str, enqueue_indexing: bool = True
) -> ImportOutcome:
    """Add a parsed dataset's cases (and documents) to a suite, all or nothing.

    Cases whose dataset id the suite already has are skipped, so importing a file twice adds
    nothing. Documents are indexed by Celery after the commit unless `enqueue_indexing` is False
    (the caller then runs `documents_index`).
    """
    suite = suite_get_or_create(name=suite_name)
    outcome = ImportOutcome(suite=suite)
    outcome.document_ids, outcome.documents_new = _documents_upload(
        suite, dataset.documents, enqueue=enqueue_indexing
    )
    known = set(suite.cases.exclude(external_id="").values_list("external_id", flat=True))
    fresh = []
    for draft in dataset.cases:
        if draft.external_id and draft.external_id in known:
            outcome.skipped += 1
            continue
        fresh.append(_case_from_draft(suite, draft, source))
    Case.objects.bulk_create(fresh)
    outcome.created = len(fresh)
    return outcome


def documents_index(*, document_ids: Sequence[int]) -> list[int]:
    """Index documents in this process (the import's --sync); returns the ids that failed."""
    failed = []
    for document_id in document_ids:
        try:
            document = knowledge.document_ingest(document_id=document_id)
        except knowledge.IngestRetry as exc:
            knowledge.document_mark_failed(document_id=document_id, reason=str(exc))
            failed.append(document_id)
            continue
        if document is not None and document.status != Document.Status.READY:
            failed.append(document_id)
    return failed


def _history_of(answer: Answer) -> list[list[str]]:
    if answer.message is None:
        return []
    return [list(pair) for pair in history_before(answer.message)]


def case_from_answer(
    answer: Answer, expected_text: str, *, suite: Suite | None = None, source: str = Case.Source.REVIEW
) -> Case:
    """A case from a real answer and the answer it should have given (the review queue calls this).

    The conversation before it becomes the case's history. An empty `expected_text` expects an
    abstention. Calling it again for the same answer updates that case.
    """
    suite = suite or suite_get_or_create(
        name="Reviewed answers", description="Questions people asked, with staff corrections."
    )
    expected = expected_text.strip()
    case, _ = Case.objects.update_or_create(
        suite=suite,
        source_answer=answer,
        defaults={
            "question": answer.question,
            "history": _history_of(answer),
            "expected": [expected] if expected else [],
            "expected_behaviour": Case.Behaviour.ANSWER if expected else Case.Behaviour.ABSTAIN,
            "source": source,
            "tags": ["reviewed" if source == Case.Source.REVIEW else "thumbs-down"],
        },
    )
    return case


def _people_answers() -> Any:
    """Answers people received: not the evals account's own."""
    return Answer.objects.exclude(eval_results__isnull=False).exclude(user__username=RUNNER_USERNAME)


@transaction.atomic
def cases_from_reviewed(*, suite_name: str) -> ImportOutcome:
    """Cases from answers that were flagged and rated (the reviewed ones, until the review queue
    supplies corrections); the flag notes become the case notes."""
    suite = suite_get_or_create(name=suite_name)
    outcome = ImportOutcome(suite=suite)
    answers = _people_answers().filter(flags__isnull=False, feedback__isnull=False).distinct()
    for answer in answers.prefetch_related("flags"):
        existed = Case.objects.filter(suite=suite, source_answer=answer).exists()
        case = case_from_answer(answer, "", suite=suite) if not existed else None
        if case is not None:
            case.expected_behaviour = Case.Behaviour.ANSWER  # a correction is still to be written
            case.notes = "\n".join(f"{f.get_category_display()}: {f.note}" for f in answer.flags.all())[:5000]
            case.save(update_fields=["expected_behaviour", "notes"])
            outcome.created += 1
        else:
            outcome.skipped += 1
    return outcome


@transaction.atomic
def cases_from_thumbs_down(*, suite_name: str) -> ImportOutcome:
    """Cases from answers someone rated "not helpful"; their reasons become the case notes."""
    suite = suite_get_or_create(name=suite_name)
    outcome = ImportOutcome(suite=suite)
    answers = _people_answers().filter(feedback__rating=-1).distinct()
    for answer in answers.prefetch_related("feedback"):
        if Case.objects.filter(suite=suite, source_answer=answer).exists():
            outcome.skipped += 1
            continue
        case = case_from_answer(answer, "", suite=suite, source=Case.Source.FEEDBACK)
        case.expected_behaviour = Case.Behaviour.ANSWER
        case.notes = "\n".join(f.reason for f in answer.feedback.all() if f.rating < 0 and f.reason)[:5000]
        case.save(update_fields=["expected_behaviour", "notes"])
        outcome.created += 1
    return outcome


# --- the shipped suite --------------------------------------------------------------------


@transaction.atomic
def seed_default_suite() -> Suite:
    """The suite a fresh install ships: questions on the demo licence texts (Apache-2.0, MPL-2.0,
    BSD, GPL-3), two it cannot answer, and one whose document carries a planted instruction.

    Idempotent: once the suite exists it is left as staff have edited it (the demo seeding runs at
    every start). The injected document goes to the suite's own private collection, indexed by
    Celery after the commit.
    """
    suite, created = Suite.objects.get_or_create(
        name=DEFAULT_SUITE,
        defaults={"description": "Questions on the licence texts, two it cannot answer, a prompt injection."},
    )
    if not created:
        return suite
    _documents_upload(
        suite, [DocumentDraft(INJECTED_FILENAME, "Licence FAQ", INJECTED_DOCUMENT)], enqueue=True
    )
    Case.objects.bulk_create([_case_from_draft(suite, d, Case.Source.SEED) for d in DEFAULT_CASES])
    return suite


# --- runs -----------------------------------------------------------------------------------


@transaction.atomic
def run_start(
    *,
    suite: Suite,
    user: User | None = None,
    baseline: Run | None = None,
    trigger: str = Run.Trigger.MANUAL,
    enqueue: bool = True,
) -> Run:
    """Snapshot the assistant's settings, create a pending result per case, and queue one task
    per case after the commit (unless `enqueue` is False: the caller runs `result_execute`)."""
    assistant = suite.assistant or assistant_services.assistant_default()
    run = Run.objects.create(
        suite=suite,
        trigger=trigger,
        baseline=baseline,
        assistant=assistant,
        run_as=suite.run_as or runner_user(),
        model=assistant.chat_model,
        prompt=assistant.prompt,
        seed=assistant.seed,
        temperature=assistant.temperature,
        top_p=assistant.top_p,
        max_tokens=assistant.max_tokens,
        top_k=assistant.top_k,
        min_similarity=assistant.min_similarity,
        tools_enabled=assistant.tools_enabled,
        judge_model=graders.judge_model(),
        created_by=user,
    )
    results = Result.objects.bulk_create([Result(run=run, case=case) for case in suite.cases.order_by("pk")])
    if not results:
        _run_settle(run.pk)
    if enqueue:
        _enqueue([r.pk for r in results])
    return run


def _enqueue(result_ids: Sequence[int]) -> None:
    from evals.tasks import run_case

    ids = list(result_ids)
    transaction.on_commit(lambda: [run_case.delay(result_id) for result_id in ids])


def nightly_runs_start() -> list[Run]:
    """A run of every suite flagged nightly, unless one of it is still going."""
    runs = []
    for suite in Suite.objects.filter(nightly=True):
        if suite.runs.filter(status__in=[Run.Status.PENDING, Run.Status.RUNNING]).exists():
            logger.warning("nightly run of %s skipped: the previous run is still going", suite.name)
            continue
        runs.append(run_start(suite=suite, trigger=Run.Trigger.NIGHTLY))
    return runs


def _claim(result_id: int) -> bool:
    now = timezone.now()
    claimable = Q(status=Result.Status.PENDING) | Q(
        status=Result.Status.RUNNING, started_at__lt=now - STALE_AFTER
    )
    return bool(
        Result.objects.filter(
            claimable, pk=result_id, run__status__in=[Run.Status.PENDING, Run.Status.RUNNING]
        ).update(
            status=Result.Status.RUNNING,
            started_at=now,
            finished_at=None,
            error="",
            attempts=F("attempts") + 1,
        )
    )


def _snapshot(run: Run) -> tuple[Assistant, pipeline.Settings]:
    """The run's assistant carrying the run's snapshot, whatever has been edited since."""
    assistant = run.assistant
    assistant.top_k = run.top_k
    assistant.min_similarity = run.min_similarity
    assistant.tools_enabled = run.tools_enabled
    config = pipeline.Settings(
        model=run.model,
        temperature=run.temperature,
        top_p=run.top_p,
        seed=run.seed,
        max_tokens=run.max_tokens,
        prompt=run.prompt,
    )
    return assistant, config


def _grade(result: Result, case: Case, answer: Answer, run: Run) -> tuple[list[Grade], bool]:
    grades: list[Grade] = []
    for grader in graders.graders_for(case):
        if grader.kind == Grade.Kind.MODEL and graders.judge_model() != run.judge_model:
            continue  # the run was started with another judge (or none): keep its snapshot
        with provider.purpose(Purpose.JUDGE if grader.kind == Grade.Kind.MODEL else Purpose.EVAL):
            verdict = grader.grade(case, answer)
        if verdict is None:
            continue
        model = run.judge_model if grader.kind == Grade.Kind.MODEL else ""
        counted = grader.kind == Grade.Kind.DETERMINISTIC or selectors.judge_trusted(model, grader.name)
        grades.append(
            Grade(
                result=result,
                grader=grader.name,
                kind=grader.kind,
                score=verdict.score,
                passed=verdict.passed,
                reason=verdict.reason[:5000],
                judge_model=model,
                judge_reasoning=verdict.judge_reasoning,
                counted=counted,
            )
        )
    return grades, all(g.passed for g in grades if g.counted)


def _errored(result_id: int, message: str) -> None:
    Result.objects.filter(pk=result_id, status=Result.Status.RUNNING).update(
        status=Result.Status.ERRORED, error=message[:2000], finished_at=timezone.now()
    )


def result_execute(*, result_id: int) -> str:
    """Answer one case with the run's snapshot and grade it; returns the result's status.

    Claims the result first (pending -> running), so a second delivery or a cancelled run does
    nothing. A model call that fails (ProviderError), or anything else that leaves no gradable
    answer, marks the result errored rather than failed; staff re-run it from the run page.
    """
    if not _claim(result_id):
        return "skipped"
    result = Result.objects.select_related("case", "run__assistant", "run__prompt", "run__run_as").get(
        pk=result_id
    )
    run, case = result.run, result.case
    Run.objects.filter(pk=run.pk, status=Run.Status.PENDING).update(
        status=Run.Status.RUNNING, started_at=timezone.now()
    )
    try:
        assistant, config = _snapshot(run)
        with usage.tracking(user=run.run_as, purpose=Purpose.EVAL) as tracker:
            answer = pipeline.run_to_answer(
                assistant=assistant,
                user=run.run_as,
                question=case.question,
                history=[(str(q), str(a)) for q, a in case.history],
                config=config,
            )
        answer.save()
        usage.answer_account(answer=answer, tracker=tracker)
        Result.objects.filter(pk=result_id).update(answer=answer, output=answer.text)
        # The judge's calls belong to the run's cost, not to the answer's: attached, not added.
        with usage.tracking(user=run.run_as, purpose=Purpose.JUDGE) as grading:
            grades, passed = _grade(result, case, answer, run)
        usage.calls_attach(answer=answer, tracker=grading)
    except provider.ProviderError as exc:
        logger.warning("eval result %s errored: %s", result_id, exc)
        _errored(result_id, f"{exc} ({exc.kind.value})")
        _run_settle(run.pk)
        return Result.Status.ERRORED
    except pipeline.QuestionRejected as exc:
        _errored(result_id, f"The question was rejected: {exc}")
        _run_settle(run.pk)
        return Result.Status.ERRORED
    except Exception as exc:  # a bug or a time limit must not leave the result running forever
        logger.exception("eval result %s errored", result_id)
        _errored(result_id, f"{type(exc).__name__}: {exc}")
        _run_settle(run.pk)
        return Result.Status.ERRORED
    status = Result.Status.PASSED if passed else Result.Status.FAILED
    with transaction.atomic():
        Grade.objects.filter(result_id=result_id).delete()
        Grade.objects.bulk_create(grades)
        Result.objects.filter(pk=result_id, status=Result.Status.RUNNING).update(
            status=status, finished_at=timezone.now()
        )
    _run_settle(run.pk)
    return status


def _run_settle(run_id: int) -> None:
    """Complete the run once no result is waiting or running, and store its summary.

    Every result commits its own status before calling this, so whichever finishes last sees
    every other one finished.
    """
    active = Result.objects.filter(
        run_id=run_id, status__in=[Result.Status.PENDING, Result.Status.RUNNING]
    ).exists()
    if not active:
        now = timezone.now()
        Run.objects.filter(pk=run_id, status__in=[Run.Status.PENDING, Run.Status.RUNNING]).update(
            status=Run.Status.COMPLETED, finished_at=now
        )
        Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    run = Run.objects.get(pk=run_id)
    if not run.is_active:
        run.summary = selectors.run_summary(run)
        run.save(update_fields=["summary"])


@transaction.atomic
def run_cancel(*, run: Run) -> int:
    """Stop a run: its waiting results are cancelled (their tasks then do nothing). Returns how many."""
    cancelled = Result.objects.filter(run=run, status=Result.Status.PENDING).update(
        status=Result.Status.CANCELLED, finished_at=timezone.now()
    )
    Run.objects.filter(pk=run.pk, status__in=[Run.Status.PENDING, Run.Status.RUNNING]).update(
        status=Run.Status.CANCELLED, finished_at=timezone.now()
    )
    transaction.on_commit(lambda: _run_settle(run.pk))
    return cancelled


@transaction.atomic
def run_rerun_failed(*, run: Run, enqueue: bool = True) -> int:
    """Put the run's failed and errored results back in the queue, with any a dead worker left
    running; returns how many."""
    stale = Q(status=Result.Status.RUNNING, started_at__lt=timezone.now() - STALE_AFTER)
    ids = list(
        Result.objects.select_for_update()
        .filter(Q(status__in=[Result.Status.FAILED, Result.Status.ERRORED]) | stale, run=run)
        .values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Grade.objects.filter(result_id__in=ids).delete()
    Result.objects.filter(pk__in=ids).update(
        status=Result.Status.PENDING, error="", output="", answer=None, started_at=None, finished_at=None
    )
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, finished_at=None, summary={})
    if enqueue:
        _enqueue(ids)
    return len(ids)


def judge_calibration_record(
    *,
    judge_model: str,
    grader: str,
    agreed: int,
    n: int,
    dataset: str = "",
    details: dict[str, Any] | None = None,
) -> JudgeCalibration:
    """Record how often a judge agreed with human labels; its model-graded scores then show this figure."""
    if n <= 0:
        raise ValueError("a calibration needs at least one labelled item")
    return JudgeCalibration.objects.create(
        judge_model=judge_model,
        grader=grader,
        agreement=agreed / n,
        n=n,
        dataset=dataset[:200],
        details=details or {},
    )

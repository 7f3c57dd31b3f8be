"""Writes for routing: fine-tuning jobs, their evaluation gate, and registering a model for routing."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from assistant import services as assistant_services
from assistant.models import Assistant
from evals import selectors as evals_selectors
from evals import services as evals_services
from evals.models import Run, Suite
from gateway import provider
from routing.distill import Example
from routing.models import FineTuneJob
from routing.policy import RoutingPolicy

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"


class FineTuneUnavailable(Exception):
    """Fine-tuning needs the OpenAI API; the message says what to configure."""


def finetune_available() -> bool:
    """Whether chat goes to an external provider with a real key (the local llama server cannot fine-tune)."""
    runtime = getattr(settings, "RUNTIME", None)
    embedded = bool(getattr(runtime, "chat_embedded", True))
    return not embedded and bool(settings.OPENAI_API_KEY) and settings.OPENAI_API_KEY != "local-no-key"


def _jsonl(examples: Sequence[Example]) -> bytes:
    return "".join(e.line() + "\n" for e in examples).encode("utf-8")


def _poll_later(job_id: int) -> None:
    from routing.tasks import finetune_poll

    countdown = int(getattr(settings, "ROUTING_FINETUNE_POLL_SECONDS", 60))
    transaction.on_commit(lambda: finetune_poll.apply_async((job_id,), countdown=countdown))


def finetune_job_start(
    *,
    assistant: Assistant,
    train: Sequence[Example],
    validation: Sequence[Example],
    suite: Suite,
    base_model: str = DEFAULT_BASE_MODEL,
    max_drop: float = 0.0,
    user: User | None = None,
) -> FineTuneJob:
    """Upload the examples, start a fine-tuning job, record it and have Celery follow it.

    The resulting model is registered on `assistant`'s cheap route only after an eval run of
    `suite` with it scores no more than `max_drop` below a run with the current model.
    """
    if not finetune_available():
        raise FineTuneUnavailable(
            "Fine-tuning needs an OpenAI key: set OPENAI_API_KEY (chat is served by the local model now)."
        )
    if not train:
        raise ValueError("There are no training examples to fine-tune on.")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    training_file = provider.finetune_file_upload(_jsonl(train), filename=f"groundwork-{stamp}-train.jsonl")
    validation_file = (
        provider.finetune_file_upload(_jsonl(validation), filename=f"groundwork-{stamp}-validation.jsonl")
        if validation
        else None
    )
    status = provider.finetune_start(
        training_file=training_file, validation_file=validation_file, model=base_model, suffix="groundwork"
    )
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            assistant=assistant,
            provider_job_id=status.id,
            base_model=base_model,
            status=status.status if status.status in FineTuneJob.Status.values else FineTuneJob.Status.QUEUED,
            training_file_id=training_file,
            validation_file_id=validation_file or "",
            train_examples=len(train),
            validation_examples=len(validation),
            suite=suite,
            max_drop=max_drop,
            created_by=user,
        )
        _poll_later(job.pk)
    return job


def current_cheap_model(assistant: Assistant) -> str:
    """The model a distilled one would replace: the policy's cheap model, else the assistant's own."""
    policy = RoutingPolicy.from_dict(assistant.routing)
    return policy.cheap_model if policy is not None else assistant.chat_model


def _eval_run(*, suite: Suite, assistant: Assistant, model: str, user: User | None) -> Run:
    """A run of `suite` with `assistant`'s settings and `model` (evals snapshot the model per run)."""
    from evals.tasks import run_case

    with transaction.atomic():
        run = evals_services.run_start(suite=suite, user=user, enqueue=False)
        Run.objects.filter(pk=run.pk).update(
            assistant=assistant,
            model=model,
            prompt=assistant.prompt,
            seed=assistant.seed,
            temperature=assistant.temperature,
            top_p=assistant.top_p,
            max_tokens=assistant.max_tokens,
            top_k=assistant.top_k,
            min_similarity=assistant.min_similarity,
            tools_enabled=assistant.tools_enabled,
        )
        ids = list(run.results.values_list("pk", flat=True))
        transaction.on_commit(lambda: [run_case.delay(result_id) for result_id in ids])
    run.refresh_from_db()
    return run


def finetune_gate_start(*, job: FineTuneJob) -> FineTuneJob:
    """Start the two eval runs (new model, current model) that decide the registration."""
    if job.suite is None:
        return _finish_gate(job, FineTuneJob.Gate.REJECTED, "No evaluation suite to compare on.", {})
    job.baseline_model = current_cheap_model(job.assistant)
    job.candidate_run = _eval_run(
        suite=job.suite, assistant=job.assistant, model=job.fine_tuned_model, user=job.created_by
    )
    job.baseline_run = _eval_run(
        suite=job.suite, assistant=job.assistant, model=job.baseline_model, user=job.created_by
    )
    job.gate = FineTuneJob.Gate.EVALUATING
    job.save(update_fields=["baseline_model", "candidate_run", "baseline_run", "gate", "updated_at"])
    return job


def _finish_gate(job: FineTuneJob, gate: str, reason: str, summary: dict[str, object]) -> FineTuneJob:
    job.gate = gate
    job.gate_summary = {**summary, "reason": reason}
    job.finished_at = timezone.now()
    job.save(update_fields=["gate", "gate_summary", "finished_at", "updated_at"])
    logger.info("fine-tune job %s: %s (%s)", job.provider_job_id, gate, reason)
    return job


@transaction.atomic
def model_register(*, assistant: Assistant, model: str) -> Assistant:
    """Make `model` the cheap route of `assistant` (creating a policy with its own model as strong)."""
    assistant = Assistant.objects.select_for_update().get(pk=assistant.pk)
    routing = dict(assistant.routing or {})
    if not routing:
        routing = {"strong_model": assistant.chat_model}
    routing["cheap_model"] = model
    policy = RoutingPolicy.from_dict(routing)  # never store a policy the router would refuse
    assistant.routing = policy.as_dict() if policy else {}
    assistant.save(update_fields=["routing"])
    assistant_services.assistant_settings_changed(assistant=assistant)  # cached answers were the old model's
    return assistant


def finetune_gate_decide(*, job: FineTuneJob) -> FineTuneJob:
    """Once both runs are complete: register the model if its pass rate is not worse, else reject."""
    runs = Run.objects.filter(pk__in=[job.candidate_run_id, job.baseline_run_id])
    if len(runs) < 2:
        return _finish_gate(job, FineTuneJob.Gate.REJECTED, "An evaluation run was deleted.", {})
    if any(run.is_active for run in runs):
        return job
    candidate, baseline = job.candidate_run, job.baseline_run
    assert candidate is not None and baseline is not None
    candidate.refresh_from_db()
    baseline.refresh_from_db()
    new = evals_selectors.overall_pass_rate(evals_selectors.run_progress(candidate).counts)
    old = evals_selectors.overall_pass_rate(evals_selectors.run_progress(baseline).counts)
    summary: dict[str, object] = {
        "candidate_model": job.fine_tuned_model,
        "candidate_pass_rate": new,
        "baseline_model": job.baseline_model,
        "baseline_pass_rate": old,
        "max_drop": job.max_drop,
        "candidate_cost": evals_selectors.run_cost(candidate),
        "baseline_cost": evals_selectors.run_cost(baseline),
    }
    if Run.Status.CANCELLED in {candidate.status, baseline.status}:
        return _finish_gate(job, FineTuneJob.Gate.REJECTED, "An evaluation run was cancelled.", summary)
    if new is None or old is None:
        return _finish_gate(job, FineTuneJob.Gate.REJECTED, "The suite produced no graded cases.", summary)
    if new < old - job.max_drop:
        return _finish_gate(
            job,
            FineTuneJob.Gate.REJECTED,
            f"Pass rate {new:.1%} is below the current model's {old:.1%} by more than {job.max_drop:.1%}.",
            summary,
        )
    model_register(assistant=job.assistant, model=job.fine_tuned_model)
    return _finish_gate(
        job,
        FineTuneJob.Gate.REGISTERED,
        f"Pass rate {new:.1%} against {old:.1%} for {job.baseline_model}: registered as the cheap model.",
        summary,
    )


def finetune_job_refresh(*, job_id: int) -> FineTuneJob:
    """One poll: follow the provider's job, then the evaluation gate. Safe to call repeatedly.

    Raises ProviderError when the provider cannot be asked; the task decides whether to retry.
    """
    job = FineTuneJob.objects.select_related("assistant", "suite", "created_by").get(pk=job_id)
    if job.status in FineTuneJob.ACTIVE:
        status = provider.finetune_retrieve(job.provider_job_id)
        job.status = status.status if status.status in FineTuneJob.Status.values else job.status
        job.fine_tuned_model = status.fine_tuned_model or job.fine_tuned_model
        job.error = status.error or job.error
        fields = ["status", "fine_tuned_model", "error", "updated_at"]
        if job.status not in FineTuneJob.ACTIVE and job.status != FineTuneJob.Status.SUCCEEDED:
            job.gate = FineTuneJob.Gate.SKIPPED
            job.finished_at = timezone.now()
            fields += ["gate", "finished_at"]
        job.save(update_fields=fields)
    if job.status == FineTuneJob.Status.SUCCEEDED and job.gate == FineTuneJob.Gate.WAITING:
        if not job.fine_tuned_model:
            return _finish_gate(job, FineTuneJob.Gate.SKIPPED, "The job succeeded but named no model.", {})
        # Claim the gate so that two polls never start two pairs of runs.
        claimed = FineTuneJob.objects.filter(pk=job.pk, gate=FineTuneJob.Gate.WAITING).update(
            gate=FineTuneJob.Gate.EVALUATING
        )
        if claimed:
            job = finetune_gate_start(job=job)
    elif job.gate == FineTuneJob.Gate.EVALUATING:
        job = finetune_gate_decide(job=job)
    return job


def finetune_job_fail(*, job_id: int, reason: str) -> None:
    FineTuneJob.objects.filter(pk=job_id, finished_at__isnull=True).update(
        error=reason[:2000], gate=FineTuneJob.Gate.SKIPPED, finished_at=timezone.now()
    )

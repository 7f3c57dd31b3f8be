"""A fine-tuning job started from exported answers, and the eval gate its model must pass."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class FineTuneJob(models.Model):
    class Status(models.TextChoices):
        # The provider's job states, as it reports them.
        VALIDATING = "validating_files", "Validating files"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Gate(models.TextChoices):
        WAITING = "waiting", "Waiting for the job"
        EVALUATING = "evaluating", "Evaluating"
        REGISTERED = "registered", "Registered for routing"
        REJECTED = "rejected", "Rejected by the evaluation"
        SKIPPED = "skipped", "No model to evaluate"

    ACTIVE = (Status.VALIDATING, Status.QUEUED, Status.RUNNING)

    assistant = models.ForeignKey(
        "assistant.Assistant",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The assistant whose cheap route gets the model if it passes the evaluation.",
    )
    provider_job_id = models.CharField(max_length=100, unique=True)
    base_model = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING)
    training_file_id = models.CharField(max_length=100)
    validation_file_id = models.CharField(max_length=100, blank=True)
    train_examples = models.PositiveIntegerField(default=0)
    validation_examples = models.PositiveIntegerField(default=0)
    fine_tuned_model = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    # The registration gate: an eval run with the new model against one with the current model.
    gate = models.CharField(max_length=16, choices=Gate.choices, default=Gate.WAITING)
    suite = models.ForeignKey(
        "evals.Suite", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    baseline_model = models.CharField(max_length=100, blank=True)
    candidate_run = models.ForeignKey(
        "evals.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    baseline_run = models.ForeignKey(
        "evals.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    max_drop = models.FloatField(
        default=0.0,
        help_text="How far below the current model's pass rate the new one may be (0.02 = 2 points).",
    )
    gate_summary = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Fine-tune {self.provider_job_id} ({self.status})"

    @property
    def needs_polling(self) -> bool:
        return self.status in self.ACTIVE or self.gate == self.Gate.EVALUATING

"""Evaluation suites, their cases, runs of a suite against a snapshot of the assistant, and results."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Suite(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    assistant = models.ForeignKey(
        "assistant.Assistant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The assistant to evaluate (empty: the default assistant).",
    )
    run_as = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Answer with this user's permissions (empty: the evals service account, which reads "
        "public collections and the collections imported for suites).",
    )
    collection = models.ForeignKey(
        "knowledge.Collection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Documents imported with this suite (SQuAD paragraphs, injected documents).",
    )
    nightly = models.BooleanField(
        default=False, help_text="Run every night (beat: evals.tasks.nightly_runs)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Case(models.Model):
    class Behaviour(models.TextChoices):
        ANSWER = "answer", "Answer"
        ABSTAIN = "abstain", "Abstain"
        REFUSE = "refuse", "Refuse"
        REWRITE = "rewrite", "Offer a rewrite"

    class Source(models.TextChoices):
        MANUAL = "manual", "Written by hand"
        JSONL = "jsonl", "JSONL file"
        CSV = "csv", "CSV file"
        SQUAD = "squad", "SQuAD file"
        REVIEW = "review", "Reviewed answer"
        FEEDBACK = "feedback", "Thumbs-down answer"
        SEED = "seed", "Shipped with Groundwork"

    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="cases")
    question = models.TextField()
    history = models.JSONField(
        default=list, blank=True, help_text="Earlier turns of the conversation: [[question, answer], ...]."
    )
    expected = models.JSONField(
        default=list, blank=True, help_text="Acceptable answers; one of them must appear (normalised)."
    )
    facts = models.JSONField(
        default=list,
        blank=True,
        help_text='Facts that must all hold: [{"match": "normalised|contains|exact|regex", "value": "..."}].',
    )
    must_cite = models.JSONField(
        default=list, blank=True, help_text="Documents (file name, title or id) that must be cited."
    )
    forbidden = models.JSONField(
        default=list, blank=True, help_text="Strings that must never appear, such as a planted canary."
    )
    expected_behaviour = models.CharField(max_length=16, choices=Behaviour.choices, default=Behaviour.ANSWER)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    external_id = models.CharField(max_length=200, blank=True, help_text="Its id in the imported dataset.")
    source_answer = models.ForeignKey(
        "assistant.Answer", null=True, blank=True, on_delete=models.SET_NULL, related_name="eval_cases"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["suite_id", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["suite", "external_id"],
                condition=~models.Q(external_id=""),
                name="case_unique_external_id",
            ),
            models.UniqueConstraint(
                fields=["suite", "source_answer"],
                condition=models.Q(source_answer__isnull=False),
                name="case_unique_source_answer",
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]


class Run(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Started by staff"
        NIGHTLY = "nightly", "Nightly"
        CLI = "cli", "Command line"

    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    baseline = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Compare with this run (empty: the suite's previous completed run).",
    )
    # The snapshot of the assistant's settings every case is answered with.
    assistant = models.ForeignKey("assistant.Assistant", on_delete=models.PROTECT, related_name="+")
    run_as = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=100)
    prompt = models.ForeignKey("assistant.PromptTemplate", on_delete=models.PROTECT, related_name="+")
    seed = models.IntegerField(null=True)
    temperature = models.FloatField()
    top_p = models.FloatField()
    max_tokens = models.PositiveIntegerField()
    top_k = models.PositiveSmallIntegerField()
    min_similarity = models.FloatField()
    tools_enabled = models.BooleanField(default=False)
    judge_model = models.CharField(max_length=100, blank=True, help_text="Empty: no model-graded graders.")
    summary = models.JSONField(default=dict, blank=True, help_text="Pass rates and totals, once completed.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["suite", "status", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.suite.name} run {self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.PENDING, self.Status.RUNNING}


class Result(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        ERRORED = "errored", "Errored"  # no answer to grade: the model or the pipeline failed
        CANCELLED = "cancelled", "Cancelled"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="results")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    answer = models.ForeignKey(
        "assistant.Answer", null=True, blank=True, on_delete=models.SET_NULL, related_name="eval_results"
    )
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["case_id"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="result_once_per_case")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"{self.case} ({self.status})"

    @property
    def passed(self) -> bool | None:
        if self.status == self.Status.PASSED:
            return True
        if self.status == self.Status.FAILED:
            return False
        return None


class Grade(models.Model):
    """One grader's verdict on one result."""

    class Kind(models.TextChoices):
        DETERMINISTIC = "deterministic", "Deterministic"
        MODEL = "model", "Model-graded"

    result = models.ForeignKey(Result, on_delete=models.CASCADE, related_name="grades")
    grader = models.CharField(max_length=50)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    score = models.FloatField()
    passed = models.BooleanField()
    reason = models.TextField(blank=True)
    judge_model = models.CharField(max_length=100, blank=True)
    judge_reasoning = models.TextField(blank=True)
    counted = models.BooleanField(
        default=True, help_text="Counts toward the result's pass/fail (an uncalibrated judge does not)."
    )

    class Meta:
        ordering = ["grader"]
        constraints = [models.UniqueConstraint(fields=["result", "grader"], name="grade_once_per_grader")]

    def __str__(self) -> str:
        return f"{self.grader}: {'pass' if self.passed else 'fail'} ({self.score:.2f})"


class JudgeCalibration(models.Model):
    """How often a judge model agreed with human labels on a grader's task; the latest one counts."""

    judge_model = models.CharField(max_length=100)
    grader = models.CharField(max_length=50)
    agreement = models.FloatField(help_text="Share of labelled items where the judge agreed with people.")
    n = models.PositiveIntegerField(help_text="How many labelled items.")
    dataset = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-measured_at", "-pk"]
        indexes = [models.Index(fields=["judge_model", "grader", "-measured_at"])]

    def __str__(self) -> str:
        return f"{self.judge_model} on {self.grader}: {self.agreement:.0%} of {self.n}"

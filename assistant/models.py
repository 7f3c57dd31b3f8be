from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models


class PromptTemplate(models.Model):
    """A versioned prompt. Editing makes a new version; every answer records the one it used."""

    name = models.CharField(max_length=100, default="grounded-answer")
    version = models.PositiveIntegerField()
    system = models.TextField(help_text="System message. {assistant_name} and {scope} are filled in.")
    instructions = models.TextField(
        help_text="User message template. {context}, {question} and {history} are filled in."
    )
    notes = models.CharField(max_length=300, blank=True, help_text="What changed in this version.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="prompt_unique_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Assistant(models.Model):
    """Per-assistant settings, pinned so that answers can be reproduced."""

    name = models.CharField(max_length=100, unique=True)
    scope = models.TextField(
        help_text="What this assistant is for, shown to users and used to keep answers in scope."
    )
    collections = models.ManyToManyField(
        "knowledge.Collection", blank=True, help_text="Answer only from these (empty: every readable one)."
    )
    prompt = models.ForeignKey(PromptTemplate, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=100, blank=True, help_text="Empty: the CHAT_MODEL setting.")
    temperature = models.FloatField(default=0.0)
    top_p = models.FloatField(default=1.0)
    seed = models.IntegerField(default=42)
    max_tokens = models.PositiveIntegerField(default=400)
    top_k = models.PositiveSmallIntegerField(default=6, help_text="Chunks given to the model.")
    # Measured with multilingual-e5-small: relevant questions scored 0.87-0.92 against their
    # passage, unrelated ones 0.68-0.83 (tests/assistant/test_e2e_answer.py prints them).
    min_similarity = models.FloatField(
        default=0.85,
        help_text="Abstain without asking the model when the best vector match is below this. "
        "Depends on the embedding model: recalibrate when you change it.",
    )
    tools_enabled = models.BooleanField(
        default=False, help_text="Let the model call search and document tools (needs tool support)."
    )
    evidence_answers = models.BooleanField(
        default=True,
        help_text="When the model's answer cannot be checked against the sources, show the sentences of "
        "the sources that best answer the question (quoted) or abstain, instead of the unchecked answer.",
    )
    guardrails = models.JSONField(
        default=dict,
        blank=True,
        help_text="Guardrail settings (guardrails.checks.GuardConfig); empty: the defaults.",
    )
    routing = models.JSONField(
        default=dict,
        blank=True,
        help_text="Model routing rules (cheap and strong models, fallback); empty: always this model.",
    )
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def chat_model(self) -> str:
        return self.model or settings.CHAT_MODEL


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    assistant = models.ForeignKey(Assistant, on_delete=models.PROTECT, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class MessageQuerySet(models.QuerySet["Message"]):
    """The life of an assistant message, each step one conditional update that says whether it
    happened: pending -> streaming (claimed) -> complete, stopped or error; stopped or error ->
    pending again (retried). A step whose starting state is gone (the user stopped the answer, a
    second tab claimed it) changes nothing and returns False."""

    def claim(self, pk: int) -> bool:
        """Pending -> streaming: only one writer gets a message."""
        return bool(
            self.filter(pk=pk, status=Message.Status.PENDING).update(
                status=Message.Status.STREAMING, error=""
            )
        )

    def progress(self, pk: int, content: str) -> bool:
        """Save the partial text of a streaming message; False once it is no longer streaming
        (stopped): one statement both saves and learns whether the user stopped."""
        return bool(self.filter(pk=pk, status=Message.Status.STREAMING).update(content=content))

    def complete(self, pk: int, content: str) -> bool:
        """Streaming -> complete with its final text; False when it was stopped meanwhile."""
        return bool(
            self.filter(pk=pk, status=Message.Status.STREAMING).update(
                content=content, status=Message.Status.COMPLETE
            )
        )

    def fail(self, pk: int, error: str) -> None:
        """-> error, with what the user is shown beside the retry button."""
        self.filter(pk=pk).update(status=Message.Status.ERROR, error=error)

    def stop(self, pk: int) -> bool:
        """Pending or streaming -> stopped, at the user's request; the writer sees it and ends."""
        return bool(
            self.filter(pk=pk, status__in=[Message.Status.PENDING, Message.Status.STREAMING]).update(
                status=Message.Status.STOPPED
            )
        )

    def halt(self, pk: int, content: str) -> None:
        """The writer ended early (stopped by the user, or the reader went away): -> stopped,
        with what was written kept."""
        self.filter(pk=pk).update(status=Message.Status.STOPPED, content=content)

    def retry(self, pk: int) -> bool:
        """Error or stopped -> pending, emptied, so it can be streamed again."""
        return bool(
            self.filter(pk=pk, status__in=[Message.Status.ERROR, Message.Status.STOPPED]).update(
                status=Message.Status.PENDING, error="", content=""
            )
        )

    def streaming_before(self, cutoff: datetime) -> MessageQuerySet:
        return self.filter(status=Message.Status.STREAMING, created_at__lt=cutoff)

    def recover(self, error: str) -> int:
        """These streaming messages lost their writer: -> error, partial text kept; how many."""
        return self.filter(status=Message.Status.STREAMING).update(status=Message.Status.ERROR, error=error)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        STREAMING = "streaming", "Answering"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True, help_text="Shown to the user with a retry button.")
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class AnswerSource(models.TextChoices):
    """Whose text is shown as the answer."""

    MODEL = "model", "The model's answer"
    EVIDENCE = "evidence", "Quoted from the documents"
    NONE = "none", "No answer (abstained or stopped)"


class Answer(models.Model):
    """Everything about how one answer was made: the trace staff need to trust or correct it."""

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, related_name="answer", null=True, blank=True
    )
    assistant = models.ForeignKey(Assistant, on_delete=models.PROTECT, related_name="answers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    question = models.TextField()
    text = models.TextField(blank=True)
    citations = models.JSONField(default=list, blank=True)
    abstained = models.BooleanField(default=False)
    abstain_reason = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    grounded = models.BooleanField(null=True, blank=True)
    grounding = models.JSONField(default=dict, blank=True)
    suggestions = models.JSONField(default=list, blank=True)
    rewrite = models.CharField(max_length=500, blank=True, help_text="A more specific question to offer.")
    fallback = models.BooleanField(default=False, help_text="The model's output was unusable.")
    answer_source = models.CharField(max_length=16, choices=AnswerSource.choices, default=AnswerSource.MODEL)
    evidence = models.JSONField(
        default=list, blank=True, help_text="The sentences of the sources that best answer the question."
    )
    evidence_strength = models.FloatField(
        null=True, blank=True, help_text="How likely the best evidence answers the question, 0 to 1."
    )
    model_text = models.TextField(
        blank=True, help_text="The model's own answer when another text is shown (evidence, abstention)."
    )
    flagged = models.BooleanField(default=False)
    # Reproducibility
    model = models.CharField(max_length=100)
    seed = models.IntegerField(null=True)
    temperature = models.FloatField()
    top_p = models.FloatField()
    max_tokens = models.PositiveIntegerField()
    system_fingerprint = models.CharField(max_length=100, blank=True)
    prompt = models.ForeignKey(PromptTemplate, on_delete=models.PROTECT, related_name="answers")
    retrieved = models.JSONField(default=list, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    raw_output = models.TextField(blank=True)
    repaired = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.JSONField(default=dict, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cache_hit = models.BooleanField(null=True, blank=True)
    guardrails = models.JSONField(null=True, blank=True)
    route = models.JSONField(
        default=dict, blank=True, help_text="The routing decision: model, route and its reason."
    )
    cached_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The earlier answer a semantic cache hit served.",
    )
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["flagged", "-created_at"])]

    def __str__(self) -> str:
        return f"Answer {self.pk}: {self.question[:40]}"

    @property
    def low_confidence(self) -> bool:
        if self.answer_source == AnswerSource.EVIDENCE:
            # Quoted evidence short of strong may not answer the question (assistant.evidence).
            return isinstance(self.grounding, dict) and self.grounding.get("level") != "strong"
        return self.confidence is not None and self.confidence < 0.5

    @property
    def state(self) -> str:
        """One word for how much to trust it, used for styling: grounded, uncertain, ungrounded, abstained."""
        if self.abstained:
            return "abstained"
        # A quoted passage is grounded by construction, whatever the model's own output was.
        if self.answer_source != AnswerSource.EVIDENCE and (self.fallback or self.grounded is False):
            return "ungrounded"
        if self.low_confidence:
            return "uncertain"
        return "grounded"


class Feedback(models.Model):
    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rating = models.SmallIntegerField(choices=[(1, "Helpful"), (-1, "Not helpful")])
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["answer", "user"], name="feedback_once_per_user")]

    def __str__(self) -> str:
        return f"{'+1' if self.rating > 0 else '-1'} on answer {self.answer_id}"


class Flag(models.Model):
    class Category(models.TextChoices):
        WRONG = "wrong", "Wrong"
        UNSUPPORTED = "unsupported", "Not supported by the sources"
        HARMFUL = "harmful", "Harmful"
        OTHER = "other", "Other"

    class Source(models.TextChoices):
        USER = "user", "User"
        GROUNDING = "grounding", "Grounding check"
        GUARDRAIL = "guardrail", "Guardrail"

    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="flags")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    category = models.CharField(max_length=16, choices=Category.choices)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.USER)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_category_display()} ({self.get_source_display()}) on answer {self.answer_id}"


class ApiToken(models.Model):
    """A personal token for the OpenAI-compatible API. Only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to tell tokens apart.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @staticmethod
    def generate() -> str:
        return "gw_" + secrets.token_urlsafe(32)

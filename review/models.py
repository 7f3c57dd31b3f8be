"""The staff review of flagged answers: one Review per answer, made on first action, and its audit log.

Which answers are in the queue is not stored here: every answer with at least one Flag is
(review.selectors.queue). A Review row exists only once someone has assigned or decided it; an
answer without one is open.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Review(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        APPROVED = "approved", "Approved"
        CORRECTED = "corrected", "Corrected"
        REJECTED = "rejected", "Rejected"
        ESCALATED = "escalated", "Escalated"

    answer = models.OneToOneField("assistant.Answer", on_delete=models.CASCADE, related_name="review")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_reviews",
    )
    correction = models.TextField(blank=True, help_text="The answer staff wrote instead (when corrected).")
    rejection_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status"]), models.Index(fields=["assignee", "status"])]

    def __str__(self) -> str:
        return f"Review of answer {self.answer_id}: {self.get_status_display()}"


class ReviewEvent(models.Model):
    """One line of the audit log: who did what to a review, when, and why."""

    class Action(models.TextChoices):
        ASSIGNED = "assigned", "Assigned"
        APPROVED = "approved", "Approved"
        CORRECTED = "corrected", "Corrected"
        REJECTED = "rejected", "Rejected"
        ESCALATED = "escalated", "Escalated"

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor} on review {self.review_id}"

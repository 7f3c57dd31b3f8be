from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User

from assistant.models import Assistant, Flag
from review import selectors
from review.models import Review

TEXT_LIMIT = 20_000


class QueueFilterForm(forms.Form):
    status = forms.ChoiceField(
        choices=[*Review.Status.choices, (selectors.ANY_STATUS, "Any status")],
        required=False,
        initial=Review.Status.OPEN,
    )
    category = forms.ChoiceField(
        label="Reason", choices=[("", "Any reason"), *Flag.Category.choices], required=False
    )
    source = forms.ChoiceField(
        label="Flagged by", choices=[("", "Anyone"), *Flag.Source.choices], required=False
    )
    assistant = forms.ModelChoiceField(
        queryset=Assistant.objects.order_by("name"), required=False, empty_label="Every assistant"
    )
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    assignee = forms.ChoiceField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["assignee"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [
            ("", "Anyone"),
            (selectors.MINE, "Mine"),
            (selectors.UNASSIGNED, "Unassigned"),
            *[(str(u.pk), u.get_username()) for u in selectors.staff_users()],
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def queue_filters(self) -> dict[str, Any]:
        """Keyword arguments for selectors.queue, from valid data."""
        data = self.cleaned_data
        assistant = data.get("assistant")
        return {
            "status": data.get("status") or Review.Status.OPEN,
            "category": data.get("category") or "",
            "source": data.get("source") or "",
            "assistant_id": assistant.pk if assistant else None,
            "since": data.get("since"),
            "until": data.get("until"),
            "assignee": data.get("assignee") or "",
        }


class ApproveForm(forms.Form):
    note = forms.CharField(required=False, max_length=2000, widget=forms.TextInput)


class CorrectForm(forms.Form):
    text = forms.CharField(
        label="The right answer",
        max_length=TEXT_LIMIT,
        widget=forms.Textarea(attrs={"rows": 5}),
        error_messages={"required": "Write the answer it should have given."},
    )
    note = forms.CharField(required=False, max_length=2000, widget=forms.TextInput)


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.TextInput,
        error_messages={"required": "Say why it is rejected."},
    )


class EscalateForm(forms.Form):
    note = forms.CharField(
        max_length=2000, widget=forms.TextInput, error_messages={"required": "Say why, and for whom."}
    )


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=User.objects.none(), empty_label=None, label="Assign to")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["assignee"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = selectors.staff_users()
        field.label_from_instance = _username  # type: ignore[method-assign,assignment]


def _username(user: User) -> str:
    return user.get_username()

from __future__ import annotations

from django import forms

from assistant.models import Flag


class MessageForm(forms.Form):
    """The composer. Length and emptiness are the service's to judge (its messages are the user's)."""

    text = forms.CharField(
        label="Your question",
        strip=False,
        required=False,
        widget=forms.Textarea(
            attrs={
                "id": "composer-text",
                "rows": 2,
                "placeholder": "Ask about your documents…",
                "aria-describedby": "composer-hint",
                "autocomplete": "off",
                "data-composer-input": "",
            }
        ),
    )


class FeedbackForm(forms.Form):
    rating = forms.TypedChoiceField(choices=[(1, "Helpful"), (-1, "Not helpful")], coerce=int)
    reason = forms.CharField(
        label="What was wrong? (optional)",
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class FlagForm(forms.Form):
    category = forms.ChoiceField(choices=Flag.Category.choices)
    note = forms.CharField(
        label="Note (optional)", max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class NoticeForm(forms.Form):
    """Hide or show the notice about what the assistant can and cannot do."""

    hidden = forms.BooleanField(required=False)
    next = forms.CharField(required=False, max_length=2000)

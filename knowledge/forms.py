from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from common.users import AnyUser
from knowledge.models import Collection


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files under one field name, as Django's documentation shows.

    Each file is checked on its own; empty files pass here so the upload service can reject them
    one by one (with a row saying why) instead of failing the whole batch.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(**kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile[Any]]:
        single = super().clean
        items = data if isinstance(data, list | tuple) else [data]
        return [single(item, initial) for item in items if item]


class UploadForm(forms.Form):
    collection = forms.ModelChoiceField(
        queryset=Collection.objects.all(), required=False, empty_label="— choose a collection —"
    )
    new_collection = forms.CharField(
        max_length=200,
        required=False,
        label="or create a new collection",
        widget=forms.TextInput(attrs={"placeholder": "New collection name"}),
    )
    uploads = MultipleFileField(required=False, label="Files")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("collection") and not cleaned.get("new_collection"):
            if "collection" not in self.errors:
                self.add_error("collection", "Choose a collection or name a new one.")
        elif cleaned.get("collection") and cleaned.get("new_collection"):
            self.add_error("new_collection", "Either choose a collection or name a new one, not both.")
        return cleaned


class DocumentRowForm(forms.Form):
    """What the upload said about this row, carried by the row's own polling URL."""

    action = forms.ChoiceField(
        choices=[("created", "created"), ("new_version", "new version"), ("duplicate", "duplicate")],
        required=False,
    )


class RetrievalForm(forms.Form):
    MODES = [("hybrid", "Hybrid (vector + keyword)"), ("vector", "Vector only"), ("keyword", "Keyword only")]

    q = forms.CharField(label="Query", max_length=2000, strip=True)
    collection = forms.ModelChoiceField(
        queryset=Collection.objects.none(), required=False, empty_label="All readable collections"
    )
    k = forms.IntegerField(label="Results", min_value=1, max_value=50, initial=8, required=False)
    mode = forms.ChoiceField(choices=MODES, initial="hybrid", required=False)

    def __init__(self, user: AnyUser, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["collection"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Collection.objects.readable_by(user)

    def clean_k(self) -> int:
        return self.cleaned_data.get("k") or 8

    def clean_mode(self) -> str:
        return self.cleaned_data.get("mode") or "hybrid"

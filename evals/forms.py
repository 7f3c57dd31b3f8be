from __future__ import annotations

from typing import Any

from django import forms

from evals.models import Run, Suite


class RunStartForm(forms.Form):
    baseline = forms.ModelChoiceField(
        queryset=Run.objects.none(),
        required=False,
        empty_label="the previous completed run",
        label="Compare with",
    )

    def __init__(self, *args: Any, suite: Suite, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["baseline"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Run.objects.filter(suite=suite, status=Run.Status.COMPLETED).order_by("-created_at")
        field.label_from_instance = _label  # type: ignore[method-assign,assignment]


def _label(run: Run) -> str:
    return f"Run {run.pk} · {run.created_at:%Y-%m-%d %H:%M} · {run.model} · prompt v{run.prompt.version}"

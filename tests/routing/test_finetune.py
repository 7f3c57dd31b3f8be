"""Fine-tuning: starting a job, following it, and the eval gate before a model is registered."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import pytest

from assistant.models import Assistant
from evals import services as evals_services
from evals.models import Run, Suite
from gateway import provider
from routing import services, tasks
from routing.distill import Example
from routing.models import FineTuneJob
from tests.fakes import FakeProvider
from tests.routing.conftest import reply

pytestmark = pytest.mark.django_db

EXAMPLES = [Example(answer_id=i, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(3)]


class FakeFineTuning:
    def __init__(self) -> None:
        self.uploads: list[str] = []
        self.states = ["running"]
        self.model: str | None = None

    def finetune_file_upload(self, content: bytes, *, filename: str) -> str:
        self.uploads.append(content.decode())
        return f"file-{len(self.uploads)}"

    def finetune_start(
        self, *, training_file: str, validation_file: str | None, model: str, suffix: str = ""
    ) -> provider.FineTuneStatus:
        return provider.FineTuneStatus(id="ftjob-1", status="validating_files", model=model)

    def finetune_retrieve(self, job_id: str) -> provider.FineTuneStatus:
        status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        model = self.model if status == "succeeded" else None
        error = "bad data" if status == "failed" else ""
        return provider.FineTuneStatus(
            id=job_id, status=status, model="base", fine_tuned_model=model, error=error
        )


@pytest.fixture
def openai_key(settings: Any) -> None:
    settings.RUNTIME = dataclasses.replace(settings.RUNTIME, chat_embedded=False)
    settings.OPENAI_API_KEY = "sk-test"


@pytest.fixture
def tuning(monkeypatch: pytest.MonkeyPatch) -> FakeFineTuning:
    fake = FakeFineTuning()
    for name in ("finetune_file_upload", "finetune_start", "finetune_retrieve"):
        monkeypatch.setattr(
            provider, name, mock.create_autospec(getattr(provider, name), side_effect=getattr(fake, name))
        )
    return fake


def start(assistant: Assistant, suite: Suite, **kwargs: Any) -> FineTuneJob:
    with mock.patch.object(tasks.finetune_poll, "apply_async") as poll:
        job = services.finetune_job_start(
            assistant=assistant, train=EXAMPLES[:2], validation=EXAMPLES[2:], suite=suite, **kwargs
        )
    assert poll.call_count == 0  # enqueued only after the commit
    return job


def finish_runs(job: FineTuneJob) -> None:
    for run in (job.candidate_run, job.baseline_run):
        assert run is not None
        for result_id in run.results.values_list("pk", flat=True):
            evals_services.result_execute(result_id=result_id)


def test_without_a_key_fine_tuning_is_unavailable(assistant: Assistant, suite: Suite) -> None:
    assert not services.finetune_available()
    with pytest.raises(services.FineTuneUnavailable, match="OpenAI key"):
        services.finetune_job_start(assistant=assistant, train=EXAMPLES, validation=[], suite=suite)


def test_starting_uploads_both_files_and_records_the_job(
    openai_key: None,
    tuning: FakeFineTuning,
    assistant: Assistant,
    suite: Suite,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with (
        mock.patch.object(tasks.finetune_poll, "apply_async") as poll,
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = services.finetune_job_start(
            assistant=assistant, train=EXAMPLES[:2], validation=EXAMPLES[2:], suite=suite
        )

    assert len(tuning.uploads) == 2 and tuning.uploads[0].count("\n") == 2 and '"q2"' in tuning.uploads[1]
    assert (job.provider_job_id, job.status, job.gate) == ("ftjob-1", "validating_files", "waiting")
    assert (job.training_file_id, job.validation_file_id, job.train_examples, job.validation_examples) == (
        "file-1",
        "file-2",
        2,
        1,
    )
    poll.assert_called_once_with((job.pk,), countdown=60)


def test_a_model_as_good_as_the_current_one_is_registered_after_the_eval(
    openai_key: None, tuning: FakeFineTuning, assistant: Assistant, suite: Suite, fake_provider: FakeProvider
) -> None:
    assistant.routing = {"cheap_model": "small", "strong_model": "large"}
    assistant.save(update_fields=["routing"])
    job = start(assistant, suite)
    tuning.states, tuning.model = ["running", "succeeded"], "ft:gpt-4o-mini:groundwork"

    job = services.finetune_job_refresh(job_id=job.pk)
    assert (job.status, job.gate, job.needs_polling) == ("running", "waiting", True)

    job = services.finetune_job_refresh(job_id=job.pk)
    assert (job.status, job.gate, job.fine_tuned_model) == (
        "succeeded",
        "evaluating",
        "ft:gpt-4o-mini:groundwork",
    )
    assert job.candidate_run is not None and job.baseline_run is not None
    assert (job.candidate_run.model, job.baseline_run.model) == ("ft:gpt-4o-mini:groundwork", "small")
    assert job.candidate_run.assistant_id == assistant.pk and job.baseline_model == "small"

    job = services.finetune_job_refresh(job_id=job.pk)  # runs still pending: nothing decided yet
    assert job.gate == "evaluating" and job.needs_polling

    fake_provider.replies += [reply(), reply()]
    finish_runs(job)
    job = services.finetune_job_refresh(job_id=job.pk)

    assert job.gate == "registered" and not job.needs_polling and job.finished_at
    assert "registered as the cheap model" in job.gate_summary["reason"]
    assert job.gate_summary["candidate_pass_rate"] == job.gate_summary["baseline_pass_rate"] == 1.0
    assistant.refresh_from_db()
    assert assistant.routing == {"cheap_model": "ft:gpt-4o-mini:groundwork", "strong_model": "large"}
    assert [c["params"].model for c in fake_provider.calls] == ["ft:gpt-4o-mini:groundwork", "small"]


def test_a_worse_model_is_rejected_and_routing_is_unchanged(
    openai_key: None, tuning: FakeFineTuning, assistant: Assistant, suite: Suite, fake_provider: FakeProvider
) -> None:
    job = start(assistant, suite)
    tuning.states, tuning.model = ["succeeded"], "ft:worse"
    job = services.finetune_job_refresh(job_id=job.pk)

    fake_provider.replies += [reply("The portal is blue [1]."), reply()]
    finish_runs(job)
    job = services.finetune_job_refresh(job_id=job.pk)

    assert job.gate == "rejected" and "below the current model's 100.0%" in job.gate_summary["reason"]
    assert job.gate_summary["candidate_pass_rate"] == 0.0
    assistant.refresh_from_db()
    assert assistant.routing == {}


def test_registering_without_a_policy_makes_one_with_the_own_model_as_strong(assistant: Assistant) -> None:
    services.model_register(assistant=assistant, model="ft:x")

    assistant.refresh_from_db()
    assert assistant.routing == {"strong_model": assistant.chat_model, "cheap_model": "ft:x"}


def test_a_failed_job_skips_the_gate(
    openai_key: None, tuning: FakeFineTuning, assistant: Assistant, suite: Suite
) -> None:
    job = start(assistant, suite)
    tuning.states = ["failed"]

    job = services.finetune_job_refresh(job_id=job.pk)

    assert (job.status, job.gate, job.error) == ("failed", "skipped", "bad data") and not job.needs_polling
    assert not Run.objects.exists()


def test_the_task_polls_again_until_done_and_stops_on_a_refusal(
    openai_key: None, tuning: FakeFineTuning, assistant: Assistant, suite: Suite
) -> None:
    job = start(assistant, suite)

    with mock.patch.object(tasks.finetune_poll, "apply_async") as again:
        assert tasks.finetune_poll(job.pk) == "running/waiting"
        again.assert_called_once_with((job.pk,), countdown=60)

    provider.finetune_retrieve.side_effect = provider.ProviderError(
        "down", kind=provider.ErrorKind.UNAVAILABLE
    )  # type: ignore[attr-defined]
    with mock.patch.object(tasks.finetune_poll, "apply_async") as again:
        assert tasks.finetune_poll(job.pk) == "retry"
        assert again.call_count == 1

    provider.finetune_retrieve.side_effect = provider.ProviderError("no", kind=provider.ErrorKind.AUTH)  # type: ignore[attr-defined]
    with mock.patch.object(tasks.finetune_poll, "apply_async") as again:
        assert tasks.finetune_poll(job.pk) == "failed"
        assert again.call_count == 0
    job.refresh_from_db()
    assert job.gate == "skipped" and "(auth)" in job.error

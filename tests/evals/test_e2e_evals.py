"""A run through a real Celery worker and the real local models (SmolLM2-135M, multilingual-e5-small).

The tiny model is often wrong: this checks that every case reaches a final state through the
worker, that answers and grades are recorded, and that the run completes with a summary; not
that the model passes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings

from assistant import services as assistant_services
from evals import services
from evals.models import Case, Result, Run, Suite
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POLICY = """# Team expense policy

## Deadlines

Expense reports are due on the 5th of each month. Submit them in the finance portal with the receipts
attached. Reports that arrive late are paid with the following month's salary.
"""


@pytest.fixture
def suite(db: None) -> Suite:
    collection = factories.collection(name="Team policies", public=True)
    factories.document(collection=collection, text=POLICY, filename="expense-policy.md")
    assistant = assistant_services.assistant_default()
    assistant.min_similarity = 0.85  # see tests/assistant/test_e2e_answer.py for the measurement
    assistant.save(update_fields=["min_similarity"])
    suite = Suite.objects.create(name="e2e")
    Case.objects.create(
        suite=suite,
        question="When are expense reports due?",
        expected=["5th"],
        must_cite=["expense-policy.md"],
    )
    Case.objects.create(
        suite=suite,
        question="What is the boiling point of mercury?",
        expected_behaviour=Case.Behaviour.ABSTAIN,
    )
    return suite


def test_a_run_goes_through_the_worker(celery_worker_process: Any, suite: Suite) -> None:
    run = services.run_start(suite=suite)  # autocommit: the tasks are sent at once

    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_active:
            break
        time.sleep(1)
    else:
        pytest.fail(f"run {run.pk} did not finish: {list(run.results.values_list('status', flat=True))}")

    assert run.status == Run.Status.COMPLETED and run.summary["counts"]["total"] == 2
    print(f"\nsummary: {run.summary}")
    for result in run.results.select_related("answer", "case"):
        assert result.status in {Result.Status.PASSED, Result.Status.FAILED, Result.Status.ERRORED}
        assert result.attempts == 1 and result.finished_at is not None
        if result.status == Result.Status.ERRORED:
            assert result.error  # said why; re-runnable
            continue
        assert result.answer is not None and result.answer.model == settings.CHAT_MODEL
        assert result.grades.exists()
    unanswerable = run.results.get(case__expected_behaviour=Case.Behaviour.ABSTAIN)
    # Nothing in the knowledge base is close: the pipeline abstains before asking the model.
    assert unanswerable.status == Result.Status.PASSED
    assert unanswerable.answer is not None and unanswerable.answer.prompt_tokens == 0

from __future__ import annotations

import logging

from celery import shared_task

from evals import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def run_case(result_id: int) -> str:
    """Answer and grade one case of a run. Safe to deliver twice: the service claims the result
    first. Failures are recorded on the result (errored) and never retried automatically; staff
    re-run them from the run page."""
    return services.result_execute(result_id=result_id)


@shared_task
def nightly_runs() -> list[int]:
    """Beat: start a run of every suite flagged nightly."""
    return [run.pk for run in services.nightly_runs_start()]

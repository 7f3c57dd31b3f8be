from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from gateway import provider
from routing import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def finetune_poll(job_id: int) -> str:
    """Follow a fine-tuning job and then its evaluation gate; re-enqueues itself until both are done.

    A provider that is briefly unreachable is asked again at the next poll; a refusal (bad key,
    unknown job) ends the job with the provider's message.
    """
    try:
        job = services.finetune_job_refresh(job_id=job_id)
    except provider.ProviderError as exc:
        if not exc.retryable:
            services.finetune_job_fail(job_id=job_id, reason=f"{exc} ({exc.kind.value})")
            return "failed"
        logger.warning("fine-tune job %s: poll failed, trying again later: %s", job_id, exc)
        again = True
        state = "retry"
    else:
        again = job.needs_polling
        state = f"{job.status}/{job.gate}"
    if again:
        countdown = int(getattr(settings, "ROUTING_FINETUNE_POLL_SECONDS", 60))
        finetune_poll.apply_async((job_id,), countdown=countdown)
    return state

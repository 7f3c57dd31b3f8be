"""Wrong API tokens, counted per client address: too many and the address waits.

After `API_TOKEN_FAILURE_LIMIT` wrong tokens from one address (an IPv6 /64 counts as one) within
`API_TOKEN_FAILURE_WINDOW_SECONDS` of the first, every `/v1/` request from it is refused for that
many seconds, whatever token it carries: answering a right token during the block would still tell
a guesser when they had found one. A right token resets nothing, neither for its own address (an
attacker holding one token could otherwise clear the count between guesses) nor for others.

The counts live in Django's cache (settings.CACHES): each web process's memory by default, or
Redis when `CACHE_URL` is set (see `config.settings._caches` for what that changes). Cache errors
let requests through and are logged: the tokens themselves are 256-bit secrets, so this limit is
a brake on noise and guessing, not the lock.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from common.addresses import client_ip, rate_limit_key

logger = logging.getLogger(__name__)


def _keys(request: HttpRequest) -> tuple[str, str, str | None]:
    address = client_ip(request)
    key = rate_limit_key(address)
    return f"api-token-failures:{key}", f"api-token-blocked:{key}", address


def _clock() -> float:
    return time.time()


def api_token_retry_after(*, request: HttpRequest) -> int | None:
    """Seconds until this request's address may present a token again, or None if it may now."""
    _, blocked_key, _ = _keys(request)
    try:
        until = cache.get(blocked_key)
    except Exception:
        logger.warning("API token throttle: the cache failed; letting the request through", exc_info=True)
        return None
    if until is None:
        return None
    remaining = math.ceil(float(until) - _clock())
    return remaining if remaining > 0 else None


def api_token_failure_record(*, request: HttpRequest) -> None:
    """Count a wrong token from this request's address; the limit-th within the window blocks it.

    `add` then `incr` are atomic in memory and in Redis, so concurrent guesses are all counted. The
    count expires a window after the first failure it holds; the block, a window after the
    failure that reached the limit.
    """
    window: int = settings.API_TOKEN_FAILURE_WINDOW_SECONDS
    limit: int = settings.API_TOKEN_FAILURE_LIMIT
    count_key, blocked_key, address = _keys(request)
    try:
        cache.add(count_key, 0, timeout=window)
        try:
            failures = cache.incr(count_key)
        except ValueError:  # the count expired between add and incr
            cache.add(count_key, 0, timeout=window)
            failures = cache.incr(count_key)
        if failures >= limit:
            cache.set(blocked_key, _clock() + window, timeout=window)
    except Exception:
        logger.warning("API token throttle: the cache failed; the failure is not counted", exc_info=True)
        return
    logger.warning("wrong API token from %s (%d within %d s)", address, failures, window)
    if failures == limit:
        logger.warning("API tokens from %s refused for %d s after %d wrong tokens", address, window, limit)

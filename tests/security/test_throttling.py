"""Brute force: sign-in lockouts (django-axes) on the login page and the admin, and the API's limit
on wrong tokens, driven as an attacker would (the login forms, the official openai client).

Time passes by moving the recorded failures back, as other tests here move rows' timestamps.
Addresses other than the test client's are written into the request (REMOTE_ADDR, X-Forwarded-For)
from the documentation ranges; nothing is sent anywhere.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
import pytest
import redis
from axes.models import AccessAttempt, AccessFailureLog
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import F
from django.test import Client, RequestFactory
from django.urls import reverse

from assistant import services
from common.addresses import client_ip, rate_limit_key
from config.settings import _caches

ELSEWHERE = "203.0.113.7"  # TEST-NET-3: another client's address
LIMIT = 5  # LOGIN_FAILURE_LIMIT's default, which the tests run with


def sign_in(client: Client, username: str, password: str, *, url: str = "/login/", **extra: Any) -> Any:
    return client.post(url, {"username": username, "password": password}, **extra)


def fail(client: Client, username: str, times: int, *, url: str = "/login/", **extra: Any) -> list[Any]:
    return [sign_in(client, username, f"wrong-{n}", url=url, **extra) for n in range(times)]


def signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def cool_off_passes() -> None:
    """Every recorded failure now lies one second beyond the lockout period."""
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )


def lockout_text(response: Any) -> str:
    match = re.search(
        r'<p class="error errornote" role="alert" id="lockout">(.*?)</p>', response.content.decode(), re.S
    )
    assert match, "no lockout message on the page"
    return " ".join(match.group(1).split())


# --- the login page -------------------------------------------------------------------------


def test_the_account_locks_after_the_limit_and_the_right_password_waits_for_the_cool_off(
    client: Client, member: Any
) -> None:
    before = fail(client, "member", LIMIT - 1)
    assert [r.status_code for r in before] == [200] * (LIMIT - 1)
    assert all(b"Please enter a correct username and password" in r.content for r in before)

    locked = sign_in(client, "member", "wrong-again")
    assert locked.status_code == 429
    refused = sign_in(client, "member", "pw-member")
    assert refused.status_code == 429 and not signed_in(client)

    cool_off_passes()
    assert sign_in(client, "member", "pw-member").status_code == 302
    assert signed_in(client)


def test_the_lockout_page_is_the_login_form_with_a_message_saying_what_and_until_when(
    client: Client, member: Any
) -> None:
    fail(client, "member", LIMIT)
    page = sign_in(client, "member", "pw-member", REMOTE_ADDR=ELSEWHERE)

    assert page.status_code == 429
    assert page.templates[0].name == "registration/login.html"
    html = page.content.decode()
    assert 'name="password"' in html and 'value="member"' in html  # the form, ready for later
    assert "Please enter a correct username" not in html  # not why it was refused
    last = AccessAttempt.objects.filter(username="member").latest("attempt_time").attempt_time
    until = last + settings.AXES_COOLOFF_TIME
    text = lockout_text(page)
    assert text.startswith("Too many failed sign-ins for the account “member”: it is locked until")
    assert f"{until:%H:%M} UTC" in text and "even with the right password" in text
    assert 0 < int(page["Retry-After"]) <= settings.AXES_COOLOFF_TIME.total_seconds()


def test_the_account_lock_holds_from_every_address(client: Client, member: Any) -> None:
    fail(client, "member", LIMIT)

    from_elsewhere = Client(REMOTE_ADDR=ELSEWHERE)
    assert sign_in(from_elsewhere, "member", "pw-member").status_code == 429
    assert not signed_in(from_elsewhere)


def test_the_address_locks_after_the_limit_whatever_the_accounts(client: Client, member: Any) -> None:
    for n in range(LIMIT):
        sign_in(client, f"guess{n}", "wrong")  # one failure each: no account reaches the limit

    page = sign_in(client, "member", "pw-member")
    assert page.status_code == 429 and not signed_in(client)
    assert lockout_text(page).startswith("Too many failed sign-ins from your address: it is locked until")

    from_elsewhere = Client(REMOTE_ADDR=ELSEWHERE)
    assert sign_in(from_elsewhere, "member", "pw-member").status_code == 302


def test_x_forwarded_for_from_the_client_is_ignored_by_default(client: Client, member: Any) -> None:
    """An attacker who writes a new X-Forwarded-For for every guess still counts as one address."""
    for n in range(LIMIT):
        sign_in(client, f"guess{n}", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")

    page = sign_in(client, "member", "pw-member", HTTP_X_FORWARDED_FOR="198.51.100.99")
    assert page.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


def test_failures_and_lockouts_are_recorded_and_logged(
    client: Client, member: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        fail(client, "member", LIMIT)
        sign_in(client, "member", "pw-member")

    attempt = AccessAttempt.objects.get(username="member")
    assert attempt.failures_since_start == LIMIT and attempt.ip_address == "127.0.0.1"
    assert "pw-member" not in attempt.post_data and "wrong-" not in attempt.post_data  # passwords never kept
    assert AccessFailureLog.objects.filter(username="member").count() == LIMIT
    assert AccessFailureLog.objects.filter(username="member", locked_out=True).count() == 1
    assert 'Locking out {username: "member", ip_address: "127.0.0.1"' in caplog.text
    assert "sign-in refused while locked: account='member' address=127.0.0.1" in caplog.text


# --- the admin's login ----------------------------------------------------------------------


def test_the_admin_login_locks_the_same_way(client: Client, owner: Any) -> None:
    url = reverse("admin:login")
    before = fail(client, "owner", LIMIT - 1, url=url)
    assert [r.status_code for r in before] == [200] * (LIMIT - 1)

    locked = sign_in(client, "owner", "wrong-again", url=url)
    assert locked.status_code == 429
    assert locked.templates[0].name == "admin/login.html"
    assert 'id="login-form"' in locked.content.decode()
    assert lockout_text(locked).startswith(
        "Too many failed sign-ins for the account “owner” and from your address"
    )
    assert sign_in(client, "owner", "pw-owner", url=url).status_code == 429
    assert client.get(reverse("admin:index")).status_code == 302  # still signed out

    cool_off_passes()
    assert sign_in(client, "owner", "pw-owner", url=url).status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


def test_failures_on_either_login_page_count_together(client: Client, member: Any) -> None:
    fail(client, "member", LIMIT - 1, url=reverse("admin:login"))
    assert sign_in(client, "member", "wrong").status_code == 429


# --- staff unlock ---------------------------------------------------------------------------


def test_staff_unlock_an_account_in_the_admin(client: Client, member: Any, admin_user: Any) -> None:
    fail(client, "member", LIMIT, REMOTE_ADDR=ELSEWHERE)
    assert sign_in(client, "member", "pw-member").status_code == 429

    staff = Client()
    staff.force_login(admin_user)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listed = staff.get(changelist, {"q": "member"})
    assert listed.status_code == 200 and ELSEWHERE in listed.content.decode()
    attempts = AccessAttempt.objects.filter(username="member")
    unlocked = staff.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [a.pk for a in attempts], "post": "yes"},
    )
    assert unlocked.status_code == 302
    assert not AccessAttempt.objects.filter(username="member").exists()

    assert sign_in(client, "member", "pw-member").status_code == 302


def test_staff_unlock_an_account_or_address_from_the_command_line(client: Client, member: Any) -> None:
    fail(client, "member", LIMIT)
    call_command("axes_reset_username", "member")
    assert sign_in(client, "member", "pw-member").status_code == 302

    client.logout()
    for n in range(LIMIT):
        sign_in(client, f"guess{n}", "wrong")
    assert sign_in(client, "member", "pw-member").status_code == 429
    call_command("axes_reset_ip", "127.0.0.1")
    assert sign_in(client, "member", "pw-member").status_code == 302


# --- the client's address -------------------------------------------------------------------


def test_the_address_comes_from_a_trusted_proxy_only_when_configured(settings: Any) -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7")
    assert client_ip(request) == "10.0.0.2"  # the default: the TCP peer

    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.7"  # what our one proxy saw; the client wrote 1.2.3.4
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_ip(request) == "1.2.3.4"
    settings.TRUSTED_PROXY_COUNT = 3  # fewer entries than proxies: not through them, so not theirs
    assert client_ip(request) == "10.0.0.2"
    settings.TRUSTED_PROXY_COUNT = 1
    garbage = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-address")
    assert client_ip(garbage) == "10.0.0.2"


def test_ipv6_clients_count_per_64_network() -> None:
    assert (
        rate_limit_key("2001:db8:1:2:aaaa::1")
        == rate_limit_key("2001:db8:1:2:bbbb::9")
        == "2001:db8:1:2::/64"
    )
    assert rate_limit_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert rate_limit_key("203.0.113.7") == "203.0.113.7"


# --- wrong API tokens -----------------------------------------------------------------------

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api_limit(settings: Any) -> int:
    settings.API_TOKEN_FAILURE_LIMIT = 3
    return 3


def sdk(live_server: Any, key: str) -> openai.OpenAI:
    # The SDK's default retries: it must give up on this 429 at once (x-should-retry: false).
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=key, timeout=30)


@live
def test_wrong_tokens_from_one_address_get_429_with_retry_after_through_the_sdk(
    live_server: Any, outsider: Any, api_limit: int
) -> None:
    _token, good = services.api_token_create(user=outsider, name="tests")
    with sdk(live_server, "gw_guess") as guesser, sdk(live_server, good) as owner:
        assert owner.models.list().data
        for _ in range(api_limit):
            with pytest.raises(openai.AuthenticationError):
                guesser.models.list()

        with pytest.raises(openai.RateLimitError) as limited:
            guesser.chat.completions.create(model="groundwork", messages=[{"role": "user", "content": "hi"}])
        error = limited.value
        assert error.status_code == 429
        assert error.code == "too_many_wrong_tokens" and error.type == "requests"
        assert "Too many requests with a wrong API key came from your address: try again in" in error.message
        wait = int(error.response.headers["retry-after"])
        assert 0 < wait <= settings.API_TOKEN_FAILURE_WINDOW_SECONDS
        assert error.response.headers["x-should-retry"] == "false"

        # Blocked means every request from the address: a right token would tell a guess worked.
        with pytest.raises(openai.RateLimitError):
            owner.models.list()


def test_a_right_token_resets_nothing_and_other_addresses_are_not_limited(
    client: Client, outsider: Any, api_limit: int
) -> None:
    _token, good = services.api_token_create(user=outsider, name="tests")

    def models(token: str, address: str = "127.0.0.1") -> int:
        return client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=address).status_code

    assert [models("gw_guess") for _ in range(api_limit - 1)] == [401] * (api_limit - 1)
    assert models(good) == 200  # does not clear the count
    assert models("gw_guess") == 401
    assert models(good) == 429

    assert models(good, ELSEWHERE) == 200
    assert [models("gw_guess", ELSEWHERE) for _ in range(api_limit - 1)] == [401] * (api_limit - 1)
    assert models(good, ELSEWHERE) == 200  # its own count, one short of the limit


def test_requests_without_a_token_are_not_counted(client: Client, db: None, api_limit: int) -> None:
    statuses = [client.get("/v1/models").status_code for _ in range(api_limit * 3)]
    assert statuses == [401] * (api_limit * 3)


def test_the_block_lifts_after_the_window(
    client: Client, outsider: Any, api_limit: int, settings: Any
) -> None:
    settings.API_TOKEN_FAILURE_WINDOW_SECONDS = 1
    _token, good = services.api_token_create(user=outsider, name="tests")
    for _ in range(api_limit):
        client.get("/v1/models", HTTP_AUTHORIZATION="Bearer gw_guess")
    blocked = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {good}")
    assert blocked.status_code == 429 and blocked["Retry-After"] == "1"

    time.sleep(1.1)
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    assert client.get("/v1/models", HTTP_AUTHORIZATION="Bearer gw_guess").status_code == 401  # counting anew


@pytest.fixture
def shared_cache(settings: Any) -> Iterator[str]:
    """Django's cache in Redis, as CACHE_URL sets it: the test stack's broker, a database of its own."""
    broker = urlsplit(settings.CELERY_BROKER_URL)
    if broker.scheme not in {"redis", "rediss"}:
        pytest.skip("the broker is not Redis")
    url = urlunsplit(broker._replace(path="/15"))
    settings.CACHES = _caches(url)
    cache.clear()
    yield url
    cache.clear()


def test_with_cache_url_the_counts_are_kept_in_redis_for_every_process(
    client: Client, outsider: Any, api_limit: int, shared_cache: str
) -> None:
    _token, good = services.api_token_create(user=outsider, name="tests")
    for _ in range(api_limit):
        assert client.get("/v1/models", HTTP_AUTHORIZATION="Bearer gw_guess").status_code == 401

    blocked = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {good}")
    assert blocked.status_code == 429
    assert 0 < int(blocked["Retry-After"]) <= settings.API_TOKEN_FAILURE_WINDOW_SECONDS
    with redis.Redis.from_url(shared_cache) as server:  # what another web process would read
        assert server.get(":1:api-token-failures:127.0.0.1") == str(api_limit).encode()
        assert 0 < server.ttl(":1:api-token-blocked:127.0.0.1") <= settings.API_TOKEN_FAILURE_WINDOW_SECONDS

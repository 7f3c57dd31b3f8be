"""What staff see in a browser: a run's progress updating itself, cancel, and the finished page."""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from evals import services
from evals.models import Run, Suite
from tests.evals.conftest import NOT_FOUND, reply
from tests.fakes import FakeProvider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("EVALS_SCREENSHOTS")  # a folder, to look at the pages by eye


def log_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("pw-owner")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")


def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/{name}.png", full_page=True)


def test_progress_updates_and_cancel(
    page: Page,
    live_server: Any,
    owner: Any,
    suite: Suite,
    fake_provider: FakeProvider,
) -> None:
    run = services.run_start(suite=suite, enqueue=False)  # no worker: the test plays its part
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/evals/runs/{run.pk}/")
    progress = page.locator("#run-progress")
    expect(progress).to_contain_text("0 of 2 done")

    fake_provider.replies.append(reply())
    services.result_execute(result_id=run.results.order_by("case_id").first().pk)  # type: ignore[union-attr]
    expect(progress).to_contain_text("1 of 2 done (50%)", timeout=5000)  # polled, no reload
    expect(progress).to_contain_text("passed 1")
    shot(page, "run-progress")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel run").click()
    expect(progress.locator(".badge")).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    assert Run.objects.get(pk=run.pk).status == Run.Status.CANCELLED


def test_a_finished_run_and_the_suite_history(
    page: Page,
    live_server: Any,
    owner: Any,
    suite: Suite,
    fake_provider: FakeProvider,
) -> None:
    for replies in ([reply(), reply("The CEO is Ann [1].")], [reply("Due on Fridays [1]."), NOT_FOUND]):
        fake_provider.replies += replies
        run = services.run_start(suite=suite, enqueue=False)
        for result_id in run.results.values_list("pk", flat=True):
            services.result_execute(result_id=result_id)
    log_in(page, live_server.url)

    page.goto(f"{live_server.url}/evals/runs/{run.pk}/")
    expect(page.locator(".figures")).to_contain_text("50%")
    regression = page.locator("details.result[open]")
    expect(regression).to_contain_text("When are expense reports due?")
    expect(regression).to_contain_text("No expected answer appears")
    shot(page, "run-finished")

    page.get_by_role("link", name="Policies").first.click()
    expect(page.get_by_role("img", name="Pass rate per grader, Policies")).to_be_visible()
    shot(page, "suite")
    page.goto(f"{live_server.url}/evals/")
    expect(page.get_by_role("link", name="Policies")).to_be_visible()
    shot(page, "dashboard")

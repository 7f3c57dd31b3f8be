"""What a staff member sees in a browser: the queue, an item, and correcting it."""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from assistant.models import Answer
from evals.models import Case

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("REVIEW_SCREENSHOTS")  # a folder, to look at the pages by eye


def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/{name}.png", full_page=True)


def test_staff_open_the_queue_and_correct_an_answer(
    page: Page, live_server: Any, owner: Any, flagged: Answer, auto_flagged: Answer
) -> None:
    base = live_server.url
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("pw-owner")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")

    expect(page.locator("#nav-review")).to_contain_text("2")
    page.locator("#nav-review").click()
    expect(page.locator("#open-count")).to_have_text("2")
    rows = page.locator("tr.queue-item")
    expect(rows).to_have_count(2)

    page.get_by_label("Flagged by").select_option("grounding")  # htmx swaps the list in place
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("How are expense claims paid?")
    page.get_by_label("Flagged by").select_option("")
    expect(rows).to_have_count(2)
    shot(page, "queue")

    page.get_by_role("link", name="When are expense reports due?").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("When are expense reports due?")
    expect(page.locator("tr.chunk")).to_contain_text("Submit them in the finance portal")
    expect(page.get_by_text("It is the 10th now.")).to_be_visible()

    page.get_by_text("Correct", exact=True).click()
    page.get_by_label("The right answer").fill("Expense reports are due on the 10th of each month.")
    page.get_by_role("button", name="Save correction").click()
    expect(page.locator("#review-status")).to_have_text("Corrected")
    expect(page.locator(".audit-log")).to_contain_text("owner")
    expect(page.locator(".audit-log")).to_contain_text("corrected")
    shot(page, "item-corrected")

    case = Case.objects.get(source_answer=flagged)
    assert case.expected == ["Expense reports are due on the 10th of each month."]

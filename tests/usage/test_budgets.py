"""Budgets per user and per group, daily or monthly, in tokens or dollars, enforced before the call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from assistant import services
from assistant.models import Conversation, Message
from tests import factories
from tests.expense_policy import GOOD, QUESTION
from tests.fakes import FakeProvider
from usage import selectors
from usage import services as usage
from usage.models import Budget, ModelCall

pytestmark = pytest.mark.django_db


def spend(user: Any, *, tokens: int = 0, dollars: str = "0", at: datetime | None = None) -> ModelCall:
    extra = {} if at is None else {"created_at": at}
    return ModelCall.objects.create(
        user=user,
        model="m",
        kind="chat",
        purpose="answer",
        prompt_tokens=tokens,
        completion_tokens=0,
        cost=Decimal(dollars),
        **extra,
    )


def test_a_user_within_the_budget_is_let_through(member: Any) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=1000)
    spend(member, tokens=999)

    usage.budget_check(user=member)  # no exception


def test_a_user_over_a_daily_token_budget_is_blocked_with_a_message(member: Any) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=1000)
    spend(member, tokens=1000)

    with pytest.raises(usage.BudgetExceeded) as raised:
        usage.budget_check(user=member)

    assert "You have used 1,000 tokens today" in raised.value.message
    assert "budget is 1,000 tokens" in raised.value.message
    assert "ask staff to raise it" in raised.value.message


def test_a_group_money_budget_counts_every_member(member: Any, outsider: Any) -> None:
    team = factories.group("Team")
    member.groups.add(team)
    outsider.groups.add(team)
    Budget.objects.create(group=team, period="month", unit="usd", limit=Decimal("1.00"))
    spend(member, dollars="0.60")
    usage.budget_check(user=member)

    spend(outsider, dollars="0.40")

    with pytest.raises(usage.BudgetExceeded) as raised:
        usage.budget_check(user=member)
    assert "Your group “Team” has used $1 this month" in raised.value.message


def test_someone_outside_the_group_is_not_limited_by_its_budget(member: Any, outsider: Any) -> None:
    team = factories.group("Team")
    member.groups.add(team)
    Budget.objects.create(group=team, period="month", unit="usd", limit=Decimal("0.01"))
    spend(member, dollars="1")

    usage.budget_check(user=outsider)


def test_daily_and_monthly_budgets_count_their_own_period(member: Any) -> None:
    now = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
    spend(member, tokens=10, at=datetime(2025, 3, 15, 9, 0, tzinfo=UTC))
    spend(member, tokens=200, at=datetime(2025, 3, 10, 9, 0, tzinfo=UTC))
    spend(member, tokens=3000, at=datetime(2025, 2, 28, 23, 0, tzinfo=UTC))
    daily = Budget.objects.create(user=member, period="day", unit="tokens", limit=100)
    monthly = Budget.objects.create(user=member, period="month", unit="tokens", limit=100)

    assert selectors.budget_spent(daily, now=now) == (10, datetime(2025, 3, 16, tzinfo=UTC))
    assert selectors.budget_spent(monthly, now=now) == (210, datetime(2025, 4, 1, tzinfo=UTC))


def test_an_inactive_budget_does_not_block(member: Any) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=0, active=False)

    usage.budget_check(user=member)


def test_a_changed_budget_applies_to_the_next_request(member: Any) -> None:
    budget = Budget.objects.create(user=member, period="day", unit="tokens", limit=10)
    spend(member, tokens=50)
    with pytest.raises(usage.BudgetExceeded):
        usage.budget_check(user=member)

    Budget.objects.filter(pk=budget.pk).update(limit=100)  # as the admin saves it

    usage.budget_check(user=member)


# --- where answers are made -----------------------------------------------------------------


def test_the_chat_shows_the_budget_message_in_the_conversation_without_calling_the_model(
    conversation: Conversation, fake_provider: FakeProvider, member: Any
) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=0)
    fake_provider.replies = [GOOD]
    embedded = len(fake_provider.embedded)  # the policy's passages, indexed by the fixture

    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    events = list(services.answer_stream(message=pending))

    assert isinstance(events[-1], services.Failed) and "budget" in events[-1].message
    pending.refresh_from_db()
    assert pending.status == Message.Status.ERROR and "ask staff to raise it" in pending.error
    assert fake_provider.calls == [] and len(fake_provider.embedded) == embedded


def test_the_chat_stream_view_renders_the_budget_message(
    client: Client, conversation: Conversation, member: Any
) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=0)
    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    client.force_login(member)

    response = client.get(f"/messages/{pending.pk}/stream/")
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]

    assert response.status_code == 200
    assert "event: failed" in body and "ask staff to raise it" in body


def test_a_raised_budget_lets_the_retried_message_through(
    conversation: Conversation, fake_provider: FakeProvider, member: Any
) -> None:
    budget = Budget.objects.create(user=member, period="day", unit="tokens", limit=0)
    fake_provider.replies = [GOOD]
    _asked, pending = services.message_send(conversation=conversation, text=QUESTION)
    services.answer_complete(message=pending)

    Budget.objects.filter(pk=budget.pk).update(limit=1_000_000)
    services.message_retry(message=pending)
    message = services.answer_complete(message=pending)

    assert message.status == Message.Status.COMPLETE


def test_the_api_answers_429_in_openais_shape(
    client: Client, assistant: Any, policy: Any, member: Any, fake_provider: FakeProvider
) -> None:
    Budget.objects.create(user=member, period="month", unit="usd", limit=0)
    _token, raw = services.api_token_create(user=member, name="t")

    for stream in (False, True):
        response = client.post(
            "/v1/chat/completions",
            data=json.dumps({"messages": [{"role": "user", "content": QUESTION}], "stream": stream}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 429
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert "ask staff to raise it" in error["message"]
        assert response["x-should-retry"] == "false"
    assert fake_provider.calls == []


def test_the_api_answers_within_the_budget(
    client: Client, assistant: Any, policy: Any, member: Any, fake_provider: FakeProvider
) -> None:
    Budget.objects.create(user=member, period="month", unit="usd", limit=1)
    fake_provider.replies = [GOOD]
    _token, raw = services.api_token_create(user=member, name="t")

    response = client.post(
        "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": QUESTION}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )

    assert response.status_code == 200


def test_the_ask_command_fails_with_the_message(assistant: Any, policy: Any, member: Any) -> None:
    Budget.objects.create(user=member, period="day", unit="tokens", limit=0)

    with pytest.raises(CommandError, match="ask staff to raise it"):
        call_command("ask", QUESTION, "--user", member.username, stdout=StringIO())

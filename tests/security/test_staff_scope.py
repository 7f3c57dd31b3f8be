"""Staff act within what they may read: review pages and replays never show a passage from a
collection the reviewer cannot read; superusers see everything."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from assistant import services
from assistant.models import Answer, Flag
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

SECRET = """# Salary bands

## Engineering

Senior engineers are paid between 91,000 and 118,000 euros a year.
"""
QUESTION = "What are the salary bands for senior engineers?"
REPLY = json.dumps(
    {
        "answer": "Senior engineers are paid between 91,000 and 118,000 euros a year [1].",
        "citations": [1],
        "confidence": 0.9,
        "not_found": False,
        "follow_ups": [],
    }
)


@pytest.fixture
def flagged(fake_provider: FakeProvider) -> Answer:
    """An HR member's answer from a restricted collection, which they flagged."""
    hr = factories.user(username="hr")
    people = factories.group("People team")
    hr.groups.add(people)
    restricted = factories.collection(name="HR restricted")
    restricted.reader_groups.add(people)
    factories.document(collection=restricted, text=SECRET, filename="salaries.md")
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0
    assistant.save(update_fields=["min_similarity"])
    fake_provider.replies.append(REPLY)
    answer = services.answer_for(user=hr, question=QUESTION)
    services.flag_create(answer=answer, user=hr, category=Flag.Category.WRONG, note="Out of date")
    return answer


def staff_client(*, in_group: bool = False, superuser: bool = False) -> Client:
    staff = factories.user(staff=True, superuser=superuser)
    if in_group:
        staff.groups.add(Group.objects.get(name="People team"))
    client = Client()
    client.force_login(staff)
    return client


def item_page(client: Client, answer: Answer) -> str:
    response = client.get(reverse("review:item", args=[answer.pk]))
    assert response.status_code == 200
    return response.content.decode()


PASSAGE = "between 91,000 and 118,000 euros"


def test_staff_outside_the_group_see_the_answer_and_a_note_but_not_the_passage(flagged: Answer) -> None:
    page = item_page(staff_client(), flagged)
    passages = page.split('id="h-chunks"')[1].split("</table>")[0]
    evidence = page.split('id="h-evidence"')[1].split("</section>")[0]
    assert PASSAGE not in passages and PASSAGE not in evidence
    assert "Senior engineers" not in passages + evidence
    assert "is in a collection you may not read" in page
    assert "you see the answer, not those passages" in page
    assert flagged.text in page  # the answer itself stays visible


@pytest.mark.parametrize(("in_group", "superuser"), [(True, False), (False, True)])
def test_staff_who_may_read_the_collection_and_superusers_see_the_passage(
    flagged: Answer, in_group: bool, superuser: bool
) -> None:
    page = item_page(staff_client(in_group=in_group, superuser=superuser), flagged)
    assert PASSAGE in page.split('id="h-chunks"')[1].split("</table>")[0]
    assert "Senior engineers are paid" in page.split('id="h-evidence"')[1].split("</section>")[0]
    assert "you see the answer, not those passages" not in page


def test_a_replay_runs_with_the_reviewers_own_permissions(
    flagged: Answer, fake_provider: FakeProvider
) -> None:
    fake_provider.replies.append(REPLY)
    outsider_staff = factories.user(staff=True)
    replay = services.answer_replay(answer=flagged, user=outsider_staff)
    assert replay.retrieved == [] and replay.citations == []  # nothing they may not read
    assert replay.abstained and PASSAGE not in json.dumps(replay.evidence)

    client = Client()
    client.force_login(outsider_staff)
    response = client.post(reverse("assistant:replay", args=[flagged.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200 and "salaries.md" not in response.content.decode().split("Replay")[-1]

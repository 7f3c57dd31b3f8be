"""The assistant's admin: prompts are versioned, never edited in place; answers are read-only traces."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from assistant import services
from assistant.models import Answer, Assistant, PromptTemplate
from tests import factories
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client: Client, admin_user: Any) -> Client:
    client.force_login(admin_user)
    return client


@pytest.fixture
def assistant() -> Assistant:
    return services.assistant_default()


def change_url(prompt: PromptTemplate) -> str:
    return reverse("admin:assistant_prompttemplate_change", args=[prompt.pk])


def edit(staff: Client, prompt: PromptTemplate, **changes: str) -> Any:
    data = {"system": prompt.system, "instructions": prompt.instructions, "notes": prompt.notes, **changes}
    return staff.post(change_url(prompt), data, follow=True)


def test_editing_a_prompt_saves_a_new_version(staff: Client, assistant: Assistant, admin_user: Any) -> None:
    v1 = assistant.prompt
    original = (v1.system, v1.instructions, v1.notes)

    response = edit(staff, v1, system=v1.system + "\nAnswer in one sentence.", notes="Shorter answers.")

    v1.refresh_from_db()
    v2 = PromptTemplate.objects.get(name=v1.name, version=2)
    assert response.status_code == 200
    assert "Saved as version 2" in response.content.decode()
    assert (v1.system, v1.instructions, v1.notes) == original
    assert v2.system.endswith("Answer in one sentence.")
    assert (v2.instructions, v2.notes, v2.created_by) == (v1.instructions, "Shorter answers.", admin_user)
    assistant.refresh_from_db()
    assert assistant.prompt == v1  # until someone chooses the new version


def test_new_version_without_notes_says_where_it_came_from(staff: Client, assistant: Assistant) -> None:
    v1 = assistant.prompt

    edit(staff, v1, instructions=v1.instructions + "\nBe brief.")

    assert PromptTemplate.objects.get(version=2).notes == "Edited from version 1."


def test_saving_without_changes_makes_no_version(staff: Client, assistant: Assistant) -> None:
    response = edit(staff, assistant.prompt)

    assert PromptTemplate.objects.count() == 1
    assert "No changes: still version 1." in response.content.decode()


def test_use_this_version_for_all_assistants(staff: Client, assistant: Assistant) -> None:
    other = Assistant.objects.create(name="HR", scope="HR questions.", prompt=assistant.prompt)
    edit(staff, assistant.prompt, system="You are {assistant_name}. {scope} Be brief.")
    v2 = PromptTemplate.objects.get(version=2)

    response = staff.post(
        reverse("admin:assistant_prompttemplate_changelist"),
        {"action": "use_for_all_assistants", "_selected_action": [v2.pk]},
        follow=True,
    )

    assert "All assistants now use grounded-answer v2 (2 changed)" in response.content.decode()
    assert set(Assistant.objects.values_list("prompt", flat=True)) == {v2.pk}
    assert other.answers.count() == 0


def test_the_action_needs_exactly_one_version(staff: Client, assistant: Assistant) -> None:
    edit(staff, assistant.prompt, system="You are {assistant_name}. {scope} Be brief.")

    response = staff.post(
        reverse("admin:assistant_prompttemplate_changelist"),
        {
            "action": "use_for_all_assistants",
            "_selected_action": list(PromptTemplate.objects.values_list("pk", flat=True)),
        },
        follow=True,
    )

    assert "Select exactly one prompt version." in response.content.decode()
    assistant.refresh_from_db()
    assert assistant.prompt.version == 1


def test_adding_a_prompt_numbers_it(staff: Client, assistant: Assistant) -> None:
    add = reverse("admin:assistant_prompttemplate_add")
    fields = {"system": "S {assistant_name}", "instructions": "{context} {question} {history}", "notes": "n"}

    staff.post(add, {"name": assistant.prompt.name, **fields})
    staff.post(add, {"name": "terse", **fields})

    assert PromptTemplate.objects.get(name=assistant.prompt.name, version=2).system == "S {assistant_name}"
    assert PromptTemplate.objects.get(name="terse").version == 1


def test_prompt_list_shows_versions(staff: Client, assistant: Assistant) -> None:
    response = staff.get(reverse("admin:assistant_prompttemplate_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "The shipped prompt." in html


def test_answers_list_and_trace_render_for_a_superuser(
    staff: Client, assistant: Assistant, fake_provider: FakeProvider
) -> None:
    collection = factories.collection(name="Policies", public=True)
    factories.document(collection=collection, text="Expense reports are due on the 5th.", filename="e.md")
    assistant.min_similarity = 0.0
    assistant.save()
    fake_provider.replies.append(
        '{"answer": "Due on the 5th [1].", "citations": [1], "confidence": 0.8, "not_found": false, '
        '"follow_ups": []}'
    )
    answer = services.answer_for(user=None, question="When are expense reports due?")
    changelist = reverse("admin:assistant_answer_changelist")

    listed = staff.get(changelist)
    filtered = staff.get(changelist, {"flagged__exact": "0", "abstained__exact": "0", "q": "expense"})
    other = staff.get(changelist, {"q": "nothing like this"})
    trace = staff.get(reverse("admin:assistant_answer_change", args=[answer.pk]))

    assert listed.status_code == filtered.status_code == trace.status_code == 200
    assert "When are expense reports due?" in listed.content.decode()
    assert "When are expense reports due?" in filtered.content.decode()
    assert "When are expense reports due?" not in other.content.decode()
    html = trace.content.decode()
    for shown in ("Due on the 5th [1].", "fp_fake", "e.md", "vector_score", answer.model, "Reproducibility"):
        assert shown in html
    assert 'name="text"' not in html  # read-only: no form fields


def test_answers_cannot_be_added_or_changed(staff: Client, assistant: Assistant) -> None:
    assert staff.get(reverse("admin:assistant_answer_add")).status_code == 403


def test_api_tokens_never_show_the_digest(staff: Client, member: Any) -> None:
    token, _raw = services.api_token_create(user=member, name="laptop")

    listed = staff.get(reverse("admin:assistant_apitoken_changelist")).content.decode()
    detail = staff.get(reverse("admin:assistant_apitoken_change", args=[token.pk])).content.decode()

    assert "laptop" in listed and token.prefix in detail
    assert token.digest not in listed and token.digest not in detail


def test_assistant_settings_are_editable(staff: Client, assistant: Assistant) -> None:
    collection = factories.collection(name="Policies")
    response = staff.get(reverse("admin:assistant_assistant_change", args=[assistant.pk]))
    html = response.content.decode()
    for name in ("temperature", "top_p", "seed", "max_tokens", "model", "prompt", "collections"):
        assert f'name="{name}"' in html
    data = {
        "name": assistant.name,
        "scope": assistant.scope,
        "collections": [collection.pk],
        "is_default": "on",
        "prompt": assistant.prompt.pk,
        "model": "",
        "temperature": "0.2",
        "top_p": "0.9",
        "seed": "7",
        "max_tokens": "300",
        "top_k": "4",
        "min_similarity": "0.5",
    }

    staff.post(reverse("admin:assistant_assistant_change", args=[assistant.pk]), data)

    assistant.refresh_from_db()
    assert (assistant.temperature, assistant.top_p, assistant.seed, assistant.top_k) == (0.2, 0.9, 7, 4)
    assert list(assistant.collections.all()) == [collection]


def test_flags_and_feedback_lists_render(staff: Client, assistant: Assistant, member: Any) -> None:
    answer = services.answer_for(user=member, question="Quantum chromodynamics gluon confinement")
    services.flag_create(answer=answer, user=member, category="wrong", note="Not what I asked.")
    services.feedback_give(answer=answer, user=member, rating=-1, reason="Unhelpful.")

    flags = staff.get(reverse("admin:assistant_flag_changelist")).content.decode()
    feedback = staff.get(reverse("admin:assistant_feedback_changelist")).content.decode()

    assert "Wrong" in flags
    assert "Unhelpful." in feedback
    assert Answer.objects.get(pk=answer.pk).flagged

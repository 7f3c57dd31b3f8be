"""No one reads a chunk of a collection they may not read, whichever way they ask."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from knowledge.models import Chunk, Collection
from knowledge.selectors import chunks_readable_by, readable_collection_ids, search
from tests import factories

pytestmark = pytest.mark.django_db

SECRET = "The merger with Globex closes in March; the codename is Bluebird."
PUBLIC = "The office is closed in March for the Bluebird festival."
TEAM = "The team offsite in March is at the Bluebird lodge."
QUERY = "Bluebird March merger"
MODES = ["hybrid", "vector", "keyword"]


@pytest.fixture
def collections(member: Any) -> dict[str, Collection]:
    secret = factories.collection(name="Board", readers=[member])
    public = factories.collection(name="Everyone", public=True)
    team = factories.collection(name="Team")
    factories.document(collection=secret, text=SECRET, filename="merger.txt")
    factories.document(collection=public, text=PUBLIC, filename="office.txt")
    factories.document(collection=team, text=TEAM, filename="offsite.txt")
    return {"secret": secret, "public": public, "team": team}


def collection_ids(hits: list[Any]) -> set[int]:
    return {hit.chunk.collection_id for hit in hits}


@pytest.mark.parametrize("mode", MODES)
def test_outsider_never_gets_a_chunk_it_cannot_read(
    collections: dict[str, Collection], outsider: Any, member: Any, mode: str
) -> None:
    mine = search(member, QUERY, k=10, mode=mode)
    theirs = search(outsider, QUERY, k=10, mode=mode)
    asked_for_it = search(outsider, QUERY, k=10, mode=mode, collections=["Board", collections["secret"].pk])

    # The member finds the secret, so its absence below is the filter at work, not a poor query.
    assert collections["secret"].pk in collection_ids(mine)
    assert collection_ids(theirs) == {collections["public"].pk}
    assert asked_for_it == []


def test_outsider_on_the_retrieval_page(collections: dict[str, Collection], outsider: Any) -> None:
    outsider.is_staff = True  # staff may open the page, and still search with their own permissions
    outsider.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(outsider)

    for mode in MODES:
        response = client.get(
            reverse("knowledge:retrieval"), {"q": QUERY, "mode": mode}, HTTP_HX_REQUEST="true"
        )
        html = response.content.decode()
        assert response.status_code == 200
        assert PUBLIC in html
        assert SECRET not in html and TEAM not in html
    # Nor can the collection filter name a collection they cannot read.
    response = client.get(
        reverse("knowledge:retrieval"), {"q": QUERY, "collection": collections["secret"].pk}
    )
    assert "Select a valid choice" in response.content.decode()
    assert SECRET not in response.content.decode()


def test_chunks_readable_by(collections: dict[str, Collection], outsider: Any, member: Any) -> None:
    outsider_chunks = chunks_readable_by(outsider)
    member_chunks = chunks_readable_by(member)

    assert {c.collection_id for c in outsider_chunks} == {collections["public"].pk}
    assert {c.collection_id for c in member_chunks} == {
        collections["public"].pk,
        collections["secret"].pk,
    }


def test_group_membership_grants_access(collections: dict[str, Collection], outsider: Any) -> None:
    group = factories.group("Offsite planners")
    collections["team"].reader_groups.add(group)
    before = search(outsider, QUERY, k=10)

    outsider.groups.add(group)
    after = search(outsider, QUERY, k=10)

    assert collections["team"].pk not in collection_ids(before)
    assert collection_ids(after) == {collections["public"].pk, collections["team"].pk}
    assert Chunk.objects.filter(collection=collections["team"]).count() == len(
        [c for c in chunks_readable_by(outsider) if c.collection_id == collections["team"].pk]
    )


def test_public_collection_is_readable_by_every_signed_in_user(collections: dict[str, Collection]) -> None:
    newcomer = factories.user(username="newcomer")

    hits = search(newcomer, QUERY, k=10)

    assert collection_ids(hits) == {collections["public"].pk}


def test_superuser_reads_everything(collections: dict[str, Collection], admin_user: Any) -> None:
    hits = search(admin_user, QUERY, k=10)

    assert collection_ids(hits) == {c.pk for c in collections.values()}
    assert chunks_readable_by(admin_user).count() == Chunk.objects.count()


def test_readable_collection_ids_follows_readable_by(member: Any, outsider: Any, admin_user: Any) -> None:
    """The one-statement form every question asks gives the queryset's answer in every case."""
    from django.contrib.auth.models import AnonymousUser

    group = factories.group("Readers")
    grouped = factories.user(username="grouped")
    grouped.groups.add(group)
    both = factories.user(username="both")
    both.groups.add(group)
    board = factories.collection(name="Board", readers=[member, both])
    public = factories.collection(name="Everyone", public=True)
    team = factories.collection(name="Team")
    team.reader_groups.add(group)
    board.reader_groups.add(group)
    factories.collection(name="Nobody's")
    narrowings: list[list[int | str] | None] = [
        None,
        [],
        [board.pk],
        ["Team", public.pk],
        ["Board", board.pk],
        ["No such collection", 10**9],
    ]

    for user in (AnonymousUser(), outsider, member, grouped, both, admin_user):
        for narrowing in narrowings:
            expected = Collection.objects.readable_by(user)
            if narrowing is not None:
                ids = [c for c in narrowing if isinstance(c, int)]
                names = [c for c in narrowing if isinstance(c, str)]
                expected = expected.filter(pk__in=ids) | expected.filter(name__in=names)
            assert readable_collection_ids(user, narrowing) == sorted(
                set(expected.values_list("pk", flat=True))
            ), (user, narrowing)

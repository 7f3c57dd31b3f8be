from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.parametrize("url", ["/", "/knowledge/", "/knowledge/retrieval/"])
def test_pages_need_login(client: Client, db: None, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_renders_and_logs_in(client: Client, member: object) -> None:
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content
    response = client.post("/login/", {"username": "member", "password": "pw-member"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_wrong_password_shows_an_error_not_a_500(client: Client, member: object) -> None:
    response = client.post("/login/", {"username": "member", "password": "nope"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content


def test_logout_is_a_post(client: Client, member: object) -> None:
    client.force_login(member)  # type: ignore[arg-type]
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_htmx_is_vendored_not_from_a_cdn(client: Client, member: object) -> None:
    client.force_login(member)  # type: ignore[arg-type]
    html = client.get("/").content.decode()
    assert "/static/vendor/htmx-2.0.8/htmx.min.js" in html
    assert "unpkg" not in html and "cdn" not in html.lower()
    assert 'hx-headers=\'{"X-CSRFToken"' in html

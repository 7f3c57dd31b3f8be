from __future__ import annotations

import pytest
from django.test import Client

from ops import health


@pytest.fixture
def worker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise RuntimeError("no Celery worker answered a ping within 1 s")

    checks = {name: (lambda: "PostgreSQL 16.2, pgvector 0.6.2") for name in health.CHECKS}
    checks["worker"] = broken
    monkeypatch.setattr(health, "CHECKS", checks)


def test_anyone_gets_the_status_alone(client: Client, worker_down: None, db: None) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error"}  # no versions, model names or errors to strangers


def test_healthz_is_503_and_names_the_failing_component_to_staff(
    client: Client, worker_down: None, owner: object
) -> None:
    client.force_login(owner)  # type: ignore[arg-type]
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["components"]["worker"]["status"] == "error"
    assert "no Celery worker" in body["components"]["worker"]["error"]
    assert body["components"]["database"]["status"] == "ok"
    assert all("latency_ms" in c for c in body["components"].values())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_healthz_with_every_component_real(
    client: Client, celery_worker_process: object, admin_user: object
) -> None:
    client.force_login(admin_user)  # type: ignore[arg-type]
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["components"]) == {
        "database",
        "pgvector",
        "broker",
        "worker",
        "chat_model",
        "embeddings_model",
    }
    assert all(c["status"] == "ok" for c in body["components"].values())
    assert body["components"]["pgvector"]["detail"].startswith("pgvector 0.")


def test_the_metrics_token_reads_the_details(
    client: Client, worker_down: None, settings: object, member: object
) -> None:
    settings.METRICS_TOKEN = "s3cret-token"  # type: ignore[attr-defined]
    scraped = client.get("/healthz", headers={"Authorization": "Bearer s3cret-token"}).json()
    wrong = client.get("/healthz", headers={"Authorization": "Bearer nope"}).json()
    client.force_login(member)  # type: ignore[arg-type]
    signed_in = client.get("/healthz").json()
    assert "components" in scraped and scraped["components"]["worker"]["status"] == "error"
    assert wrong == signed_in == {"status": "error"}  # a wrong token, or someone who is not staff

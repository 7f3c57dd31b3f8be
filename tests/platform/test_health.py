from __future__ import annotations

import pytest
from django.test import Client

from ops import health


def test_healthz_is_503_and_names_the_failing_component(
    client: Client, monkeypatch: pytest.MonkeyPatch, db: None
) -> None:
    def broken() -> str:
        raise RuntimeError("no Celery worker answered a ping within 1 s")

    checks = {name: (lambda: "fine") for name in health.CHECKS}
    checks["worker"] = broken
    monkeypatch.setattr(health, "CHECKS", checks)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["components"]["worker"]["status"] == "error"
    assert "no Celery worker" in body["components"]["worker"]["error"]
    assert body["components"]["database"]["status"] == "ok"
    assert all("latency_ms" in c for c in body["components"].values())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_healthz_with_every_component_real(client: Client, celery_worker_process: object) -> None:
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

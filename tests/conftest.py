"""Shared fixtures: personas, the fake provider, and a real Celery worker for e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings

from config.celery import app as celery_app
from gateway import provider
from tests import factories
from tests.fakes import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
# The `assistant` and `policy` fixtures most answer tests share; a module may define its own.
pytest_plugins = ["tests.expense_policy"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """A test database per pytest process, so parallel runs on one server do not collide."""
    test = settings.DATABASES["default"].setdefault("TEST", {})
    test["NAME"] = f"test_groundwork_{os.getpid()}"


@pytest.fixture(autouse=True)
def fake_provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeProvider | None:
    """Every test talks to a deterministic fake model unless it is marked e2e.

    The fake is installed at the one provider module with autospec'd functions, so a test that
    calls a provider function with the wrong signature fails here rather than in production.
    """
    from assistant import evidence

    evidence._UNIT_VECTORS.clear()  # vectors remembered from another test's provider
    if request.node.get_closest_marker("e2e"):
        return None
    fake = FakeProvider()
    for name in ("embed", "chat", "chat_stream", "moderate", "served_models"):
        monkeypatch.setattr(
            provider, name, mock.create_autospec(getattr(provider, name), side_effect=getattr(fake, name))
        )
    return fake


@pytest.fixture
def evidence_strength(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Sets how strong the evidence found is, whatever its features.

    The strength is calibrated for the real embedding model (bench/evidence.py); the fake
    embeddings are bags of words, so a test that depends on the level says which it wants.
    """
    from assistant import evidence

    def strength(value: float) -> None:
        monkeypatch.setattr(evidence, "_strength", lambda features: value)

    return strength


@pytest.fixture(autouse=True)
def _eager_celery_in_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Unit tests run tasks in-process; e2e tests go through a real worker."""
    eager = not request.node.get_closest_marker("e2e")
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _no_throttle_left_over() -> None:
    """Each test starts with no wrong-token counts (kept in the cache, which outlives a test).

    Sign-in lockouts (django-axes) are database rows, rolled back or flushed with each test.
    """
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_passwords(settings: object) -> None:
    """The default hasher is slow on purpose; tests create many users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _test_storage(request: pytest.FixtureRequest, settings: object, tmp_path: Path) -> None:
    """Uploads go to a temporary folder; static files are served without collectstatic's manifest.

    e2e tests keep DATA_DIR's media folder: the Celery worker process must read the same files.
    """
    if not request.node.get_closest_marker("e2e"):
        settings.MEDIA_ROOT = str(tmp_path / "media")  # type: ignore[attr-defined]
    settings.STORAGES = {  # type: ignore[attr-defined]
        **settings.STORAGES,  # type: ignore[attr-defined]
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def owner(db: None) -> object:
    return factories.user(username="owner", staff=True)


@pytest.fixture
def member(db: None) -> object:
    return factories.user(username="member")


@pytest.fixture
def outsider(db: None) -> object:
    return factories.user(username="outsider")


@pytest.fixture
def admin_user(db: None) -> object:
    return factories.user(username="admin", superuser=True)


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    host = db["HOST"]
    return (
        f"postgresql://{db['USER']}@/{db['NAME']}?host={host}"
        if host.startswith("/")
        else (f"postgresql://{db['USER']}:{db['PASSWORD']}@{host}:{db['PORT'] or 5432}/{db['NAME']}")
    )


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process bound to the test database, on a queue of this test run's own."""
    queue = f"test-{os.getpid()}"
    celery_app.conf.task_default_queue = queue
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "PYTHONUNBUFFERED": "1"}
    log = Path(settings.DATA_DIR) / "logs" / "test-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads",
             "--concurrency", "2", "--loglevel", "INFO", "--hostname", f"test-{os.getpid()}@%h",
             "--queues", queue],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    celery_app.control.purge()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if celery_app.control.ping(timeout=0.5, destination=[f"test-{os.getpid()}@{os.uname().nodename}"]):
            break
        if process.poll() is not None:
            pytest.fail(f"the Celery worker exited; see {log}")
    else:
        pytest.fail(f"the Celery worker did not answer within 60 s; see {log}")
    yield process
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()

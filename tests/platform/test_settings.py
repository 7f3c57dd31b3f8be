from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import env
from config.runtime import runtime


def fresh_runtime() -> object:
    return runtime.__wrapped__()  # type: ignore[attr-defined]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (
        "DATABASE_URL", "CELERY_BROKER_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "EMBEDDINGS_BASE_URL",
        "CHAT_MODEL", "EMBEDDING_MODEL", "EMBEDDING_DIMENSIONS",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return monkeypatch


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("off", False), ("0", False)])
def test_env_bool_reads_common_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("SOME_FLAG", raw)
    assert env.env_bool("SOME_FLAG", not expected) is expected


def test_env_bool_rejects_other_words_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean: set it to 1 or 0"):
        env.env_bool("DEBUG", True)


def test_env_int_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", "lots")
    with pytest.raises(ImproperlyConfigured, match="EMBEDDING_DIMENSIONS='lots' is not a whole number"):
        env.env_int("EMBEDDING_DIMENSIONS", 384)
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("EMBEDDING_DIMENSIONS", 384, minimum=1)


def test_env_url_requires_a_known_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    with pytest.raises(
        ImproperlyConfigured, match="DATABASE_URL='mysql://db/x' must start with one of postgres://"
    ):
        env.env_url("DATABASE_URL", schemes=("postgres", "postgresql"))


def test_with_nothing_set_every_service_is_embedded(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rt = fresh_runtime()
    assert rt.database_embedded and rt.broker_embedded and rt.chat_embedded and rt.embeddings_embedded
    assert rt.database_url.startswith("postgresql://postgres@/groundwork?host=")
    assert rt.chat_base_url == f"http://127.0.0.1:{rt.chat_port}/v1"
    assert rt.embedding_dimensions == 384


def test_an_openai_key_switches_chat_and_embeddings_to_the_provider(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    clean_env.setenv("EMBEDDING_DIMENSIONS", "1536")
    rt = fresh_runtime()
    assert not rt.chat_embedded and not rt.embeddings_embedded
    assert rt.chat_base_url is None  # the SDK's default endpoint
    assert rt.chat_model == "gpt-4o-mini" and rt.embedding_model == "text-embedding-3-small"


def test_external_database_and_broker_are_used_as_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://u:p@db.internal:5432/gw")
    clean_env.setenv("CELERY_BROKER_URL", "redis://cache.internal:6379/2")
    rt = fresh_runtime()
    assert not rt.database_embedded and rt.database_url.endswith("/gw")
    assert not rt.broker_embedded and rt.broker_url == "redis://cache.internal:6379/2"


def test_wrong_dimensions_for_the_local_model_are_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EMBEDDING_DIMENSIONS", "768")
    with pytest.raises(
        ImproperlyConfigured, match="EMBEDDING_DIMENSIONS=768 does not match the local embedding model"
    ):
        fresh_runtime()


def test_database_url_parsing_keeps_socket_hosts_and_options() -> None:
    from config.settings import _database

    db = _database("postgresql://postgres@/groundwork?host=/tmp/pg&sslmode=disable")
    assert db["HOST"] == "/tmp/pg" and db["NAME"] == "groundwork"
    assert db["OPTIONS"] == {"connect_timeout": 5, "sslmode": "disable"}
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        _database("postgresql://host:5432")


def test_development_secret_key_is_generated_once_and_kept(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import config.settings as settings_module

    clean_env.delenv("SECRET_KEY", raising=False)
    clean_env.setattr(settings_module, "DATA_DIR", tmp_path)
    first = settings_module._secret_key()
    assert (tmp_path / "secret_key").read_text() == first
    assert settings_module._secret_key() == first
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"


def test_production_without_secret_key_fails_loudly(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import config.settings as settings_module

    clean_env.delenv("SECRET_KEY", raising=False)
    clean_env.setenv("DEBUG", "0")
    clean_env.setattr(settings_module, "DATA_DIR", tmp_path / "empty")
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        settings_module._secret_key()


def _settings_module(name: str) -> Any:
    """config/settings.py executed afresh, so that it reads the environment as it is now."""
    path = Path(__file__).resolve().parents[2] / "config" / "settings.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_judge_model_and_its_bar_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_MODEL", raising=False)
    monkeypatch.delenv("JUDGE_MIN_AGREEMENT", raising=False)
    unset = _settings_module("settings_without_judge")
    assert unset.JUDGE_MODEL == "" and unset.JUDGE_MIN_AGREEMENT == 0.8

    monkeypatch.setenv("JUDGE_MODEL", "judge-1")
    monkeypatch.setenv("JUDGE_MIN_AGREEMENT", "0.9")
    chosen = _settings_module("settings_with_judge")
    assert chosen.JUDGE_MODEL == "judge-1" and chosen.JUDGE_MIN_AGREEMENT == 0.9

    monkeypatch.setenv("JUDGE_MIN_AGREEMENT", "1.5")
    with pytest.raises(ImproperlyConfigured, match="JUDGE_MIN_AGREEMENT"):
        _settings_module("settings_with_a_bad_bar")

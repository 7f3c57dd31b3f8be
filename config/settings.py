"""Django settings, driven by environment variables (see docs/architecture.md for the list).

With nothing set, every backing service is embedded and local; see config/runtime.py.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import django_stubs_ext
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str, env_url
from config.runtime import BASE_DIR, runtime

django_stubs_ext.monkeypatch()  # ModelAdmin[Model] and friends at run time, for typing

RUNTIME = runtime()
DATA_DIR = RUNTIME.data_dir


def _secret_key() -> str:
    """SECRET_KEY from the environment, or a development key generated once under DATA_DIR."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    if not env_bool("DEBUG", True):
        raise ImproperlyConfigured("SECRET_KEY is not set: production (DEBUG=0) needs a fixed secret key.")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


def _database(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.pop("host", None) or parts.hostname or ""
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database: add /dbname at the end.")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": 5, **query},
        "TEST": {"NAME": f"test_{name}"},
    }


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "axes",
    "django_htmx",
    "template_partials",
    "csp",
    "gateway",
    "ops",
    "knowledge",
    "assistant",
    "guardrails",
    "evals",
    "review",
    "routing",
    "usage",
    "answer_cache",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a refused sign-in into the lockout page (ops.lockout).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": _database(RUNTIME.database_url)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# AxesBackend first: it refuses a locked-out account or address before any password is checked,
# and, being a ModelBackend, it also serves sessions made with it (`Client.force_login` included).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "media/"
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Sign-in throttling and client addresses ------------------------------------------------
# How many reverse proxies that append to X-Forwarded-For stand in front of the web server. 0 (the
# default): the client's address is the TCP peer and X-Forwarded-For is ignored, since anyone can
# send that header. N: the address is the N-th entry from the right of X-Forwarded-For (the one the
# outermost trusted proxy saw); set it only when every request reaches Groundwork through them.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)

# django-axes locks sign-in (the login page and the admin's) per account and per address after
# LOGIN_FAILURE_LIMIT failures, until LOGIN_LOCKOUT_MINUTES after the last of them. Every failure is
# recorded (AccessAttempt while it counts, AccessFailureLog for good, AccessLog for sign-ins), all in
# the admin; deleting an account's or address's attempts there, or `manage.py axes_reset_username`
# / `axes_reset_ip`, unlocks it.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A sign-in refused during a lockout is not a new failure, so the time the page announces holds
# whatever the person does meanwhile (and an attacker still gets no answer until then).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A successful sign-in keeps the failures: otherwise anyone with an account of their own could
# sign in between guesses at someone else's password and so clear their address's count.
AXES_RESET_ON_SUCCESS = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_CLIENT_IP_CALLABLE = "common.addresses.client_ip"
AXES_LOCKOUT_CALLABLE = "ops.lockout.lockout_response"
# The log names the account and the address (never the password): that is what an operator needs.
AXES_SENSITIVE_PARAMETERS: list[str] = []

# Wrong API tokens: after API_TOKEN_FAILURE_LIMIT of them from one address within
# API_TOKEN_FAILURE_WINDOW_SECONDS, /v1/ answers that address 429 for that long (assistant.throttle).
API_TOKEN_FAILURE_LIMIT = env_int("API_TOKEN_FAILURE_LIMIT", 10, minimum=1, maximum=100_000)
API_TOKEN_FAILURE_WINDOW_SECONDS = env_int("API_TOKEN_FAILURE_WINDOW_SECONDS", 600, minimum=1, maximum=86_400)


def _caches(url: str | None) -> dict[str, dict[str, object]]:
    """Django's cache: each process's own memory, or a shared Redis when CACHE_URL names one.

    Only the API-token throttle uses it. In memory, each web process counts on its own, so an
    address gets up to API_TOKEN_FAILURE_LIMIT wrong tokens per process (bin/run starts
    WEB_WORKERS of them) before all refuse it; a shared Redis makes the limit exact.
    """
    if url is None:
        return {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "groundwork"}
        }
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}


CACHES = _caches(env_url("CACHE_URL", schemes=("redis", "rediss")))


# --- HTTPS and Content-Security-Policy -------------------------------------------------------
# bin/run serves plain HTTP on localhost, so nothing here redirects or pins HTTPS unless asked;
# production sets SECURE_SSL_REDIRECT=1 and SECURE_HSTS_SECONDS (README, "Production settings").
def _proxy_ssl_header() -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER from `Header-Name` (value `https`) or `Header-Name: value`.

    Only set behind a proxy that terminates TLS and always sets (or strips) that header: Django
    then trusts it to say the request came over HTTPS.
    """
    raw = env_str("SECURE_PROXY_SSL_HEADER")
    if raw is None:
        return None
    name, _, value = raw.partition(":")
    name, value = name.strip(), value.strip() or "https"
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r} is not a header: write e.g. X-Forwarded-Proto "
            "or X-Forwarded-Proto: https."
        )
    return f"HTTP_{name.upper().replace('-', '_')}", value


SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP; it holds no secret
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading puts the domain into browsers' built-in HTTPS-only lists, which takes months to
# undo: the operator's decision, never a default, so Django's reminder about it is silenced.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Every response says: scripts, styles, images, fonts and connections from this origin only;
# no inline script or style (templates link static files), no eval, no plugins, no framing.
# htmx's own inline indicator style and eval are turned off in templates/base.html.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = RUNTIME.broker_url
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", RUNTIME.broker_url)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the message to be redelivered
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 900, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 960, minimum=1)
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "run" / "celerybeat-schedule")

# --- Models (all calls go through gateway/provider.py) -----------------------------------
OPENAI_API_KEY = RUNTIME.openai_api_key
OPENAI_BASE_URL = RUNTIME.chat_base_url
EMBEDDINGS_BASE_URL = RUNTIME.embeddings_base_url
CHAT_MODEL = RUNTIME.chat_model
EMBEDDING_MODEL = RUNTIME.embedding_model
EMBEDDING_DIMENSIONS = RUNTIME.embedding_dimensions
# How the provider takes a JSON schema: "json_schema" (OpenAI structured outputs) or
# "json_object_schema" (llama.cpp's server, which rejects "json_schema").
CHAT_JSON_MODE = env_str("CHAT_JSON_MODE", "json_object_schema" if RUNTIME.chat_embedded else "json_schema")
if CHAT_JSON_MODE not in {"json_schema", "json_object_schema", "json_object"}:
    raise ImproperlyConfigured(
        f"CHAT_JSON_MODE={CHAT_JSON_MODE!r}: use json_schema, json_object_schema or json_object."
    )
PROVIDER_TIMEOUT = env_float("PROVIDER_TIMEOUT", 60.0, minimum=1.0, maximum=600.0)
PROVIDER_MAX_RETRIES = env_int("PROVIDER_MAX_RETRIES", 2, minimum=0, maximum=10)
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 16, minimum=1, maximum=2048)
# multilingual-e5 embeds queries and passages differently; other models ignore this.
EMBEDDING_INPUT_TYPE = env_bool("EMBEDDING_INPUT_TYPE", "e5" in EMBEDDING_MODEL.lower())
MODERATION_ENABLED = env_bool("MODERATION_ENABLED", not RUNTIME.chat_embedded)
# Model-graded eval graders (evals/graders.py) ask this model; empty disables them. A judge's
# grades count toward pass/fail only once its measured agreement with human labels on that
# grader's task (evals.JudgeCalibration, bench/evals.py) reaches JUDGE_MIN_AGREEMENT.
JUDGE_MODEL = env_str("JUDGE_MODEL", "") or ""
JUDGE_MIN_AGREEMENT = env_float("JUDGE_MIN_AGREEMENT", 0.8, minimum=0.0, maximum=1.0)
# How often a running fine-tuning job is asked for its status.
ROUTING_FINETUNE_POLL_SECONDS = env_int("ROUTING_FINETUNE_POLL_SECONDS", 60, minimum=5)

# --- Operations ---------------------------------------------------------------------------
# Prometheus scrapes /metrics with `Authorization: Bearer <METRICS_TOKEN>`; unset, only signed-in
# staff can read it.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- Knowledge ------------------------------------------------------------------------------
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024, minimum=1)
CHUNK_MAX_TOKENS = env_int("CHUNK_MAX_TOKENS", 300, minimum=32, maximum=8000)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 40, minimum=0, maximum=2000)
if CHUNK_OVERLAP_TOKENS >= CHUNK_MAX_TOKENS:
    raise ImproperlyConfigured("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_MAX_TOKENS.")
# A collection with this many chunks gets its own partial HNSW index (knowledge.services.
# collection_indexes_sync, every 10 minutes), which filtered search then uses.
KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS = env_int("KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS", 20_000, minimum=1)
# Django's own limit would refuse large multipart bodies before our clearer per-file check.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR: str | None = None

# --- Answer cache ---------------------------------------------------------------------------
ANSWER_CACHE_ENABLED = env_bool("ANSWER_CACHE_ENABLED", True)
# When an earlier answer is served for a new question (answer_cache.services.MatchRule): among
# the ANSWER_CACHE_CANDIDATES nearest entries at or above the floor (the database returns no
# others), the nearest whose cosine similarity is at least ANSWER_CACHE_SIMILARITY, or at least
# ANSWER_CACHE_SIMILARITY_FLOOR with content-word overlap (Jaccard, answer_cache.text.word_overlap)
# at least ANSWER_CACHE_MIN_WORD_OVERLAP. A floor at or above the similarity turns the word check
# off. Calibrated for multilingual-e5-small by bench/cache_calibrate.py on CLINC150 (cross-validated
# on val, reported on test): cosine alone at 0.96 won; the word check gained nothing once its false
# hits were cross-validated. Recalibrate when the embedding model changes. Centring the vectors,
# voting among the nearest entries and learning served phrasings as extra keys gained at most 1
# point held-out (3.4 if every right hit were confirmed) in bench/cache_hitrate.py: not shipped.
ANSWER_CACHE_SIMILARITY = env_float("ANSWER_CACHE_SIMILARITY", 0.96, minimum=0.5, maximum=1.0)
ANSWER_CACHE_SIMILARITY_FLOOR = env_float("ANSWER_CACHE_SIMILARITY_FLOOR", 0.96, minimum=0.5, maximum=1.0)
ANSWER_CACHE_MIN_WORD_OVERLAP = env_float("ANSWER_CACHE_MIN_WORD_OVERLAP", 1.0, minimum=0.0, maximum=1.0)
ANSWER_CACHE_CANDIDATES = env_int("ANSWER_CACHE_CANDIDATES", 5, minimum=1, maximum=50)
ANSWER_CACHE_TTL_SECONDS = env_int("ANSWER_CACHE_TTL_SECONDS", 7 * 24 * 3600, minimum=60)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # axes: its warnings name each failed sign-in and lockout; its INFO lines are bookkeeping.
    "loggers": {name: {"level": "WARNING"} for name in ("httpx", "httpx2", "httpcore", "openai", "axes")},
}

Path(MEDIA_ROOT).mkdir(parents=True, exist_ok=True)

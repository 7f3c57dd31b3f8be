"""HTTPS settings: `check --deploy` is clean with the documented production variables, and plain
HTTP on localhost (bin/run, DEBUG=1) neither redirects nor pins HTTPS."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
# The production variables README.md lists (besides the services'), with a real-looking secret.
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "DEBUG": "0",
    "ALLOWED_HOSTS": "groundwork.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://groundwork.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}
HTTPS_VARIABLES = (
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS",
)  # fmt: skip


def check_deploy(environment: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`manage.py check --deploy` in a fresh process: settings are read from the environment at import."""
    env = {k: v for k, v in os.environ.items() if k not in HTTPS_VARIABLES and k != "DJANGO_SETTINGS_MODULE"}
    env.update(environment, DATA_DIR=str(tmp_path))
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_production_variables(tmp_path: Path) -> None:
    result = check_deploy(PRODUCTION, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_without_the_https_variables_check_deploy_warns(tmp_path: Path) -> None:
    """The clean run above means something: drop the HTTPS variables and Django warns again."""
    bare = {k: v for k, v in PRODUCTION.items() if not k.startswith("SECURE_")}

    result = check_deploy(bare, tmp_path)

    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


@pytest.mark.django_db
def test_development_serves_plain_http_without_redirects_or_pins(client: Client) -> None:
    from django.conf import settings

    response = client.get("/login/")

    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response
    assert not settings.SECURE_SSL_REDIRECT and settings.SECURE_HSTS_SECONDS == 0
    assert not settings.SESSION_COOKIE_SECURE and not settings.CSRF_COOKIE_SECURE  # DEBUG=1 under bin/test
    assert settings.SECURE_PROXY_SSL_HEADER is None


@pytest.mark.django_db
def test_in_production_http_is_redirected_and_https_pinned(client: Client, settings: object) -> None:
    settings.SECURE_SSL_REDIRECT = True  # type: ignore[attr-defined]
    settings.SECURE_HSTS_SECONDS = 31536000  # type: ignore[attr-defined]
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True  # type: ignore[attr-defined]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # type: ignore[attr-defined]

    plain = client.get("/login/")
    behind_proxy = client.get("/login/", headers={"X-Forwarded-Proto": "https"})
    probe = client.get("/healthz")

    assert plain.status_code == 301 and plain["Location"] == "https://testserver/login/"
    assert behind_proxy.status_code == 200
    assert behind_proxy["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert probe.status_code != 301  # load balancers probe over plain HTTP


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("X-Forwarded-Proto", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Ssl: on", ("HTTP_X_FORWARDED_SSL", "on")),
        (None, None),
    ],
)
def test_the_proxy_header_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: tuple[str, str] | None
) -> None:
    from config.settings import _proxy_ssl_header

    if raw is None:
        monkeypatch.delenv("SECURE_PROXY_SSL_HEADER", raising=False)
    else:
        monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)
    assert _proxy_ssl_header() == expected


def test_a_bad_proxy_header_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import _proxy_ssl_header

    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", "X Forwarded Proto")
    with pytest.raises(
        ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER='X Forwarded Proto' is not a header"
    ):
        _proxy_ssl_header()

"""Fixtures for the security tests."""

from __future__ import annotations

from tests.browser.conftest import browser, page  # noqa: F401 (Chromium fixtures for the browser tests)

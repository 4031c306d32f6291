"""The browser the browser tests launch (Debian's Chromium through Playwright), shared here."""

from tests.browser.conftest import browser  # noqa: F401  (a fixture, used by name)

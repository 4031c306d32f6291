"""Fixtures every test folder may use: one headless Chromium for the whole session.

Playwright's own browser downloads are never used (`playwright install` needs hosts this project
cannot reach); the test command installs Chromium from Debian instead. One instance serves the
browser tests and the host app's, since Playwright's sync API allows one per thread.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio loop running in the main thread for the session:
    # tests that need asyncio.run() after a browser test must run it in a thread of their own.
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the browser tests need Chromium on PATH: run `make browser-deps` (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()

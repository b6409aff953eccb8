"""Fixtures of the browser tests (webapp_stack.py): the live stack, Debian's Chromium driven
by Playwright, console errors, and a screenshot of every failed test in
test-artifacts/webapp/ (gitignored)."""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from webapp_stack import ARTIFACTS, CHROMIUM, LiveStack

from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import S3Settings
from services.allinone import stack
from services.allinone.__main__ import sign_in_link


@pytest.fixture(scope="session")
def live() -> Iterator[LiveStack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing (make chromium)")
    result = LiveStack(mongodb_uri=f"mongomock://webapp-{uuid.uuid4().hex[:8]}", bucket="webapp")
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
        with (
            MotoS3() as moto,
            tempfile.TemporaryDirectory(prefix="webapp-nats-") as store,
            NatsServer(store_dir=store) as nats,
        ):
            result.s3_fields = moto.s3_fields(result.bucket)
            s3.Bucket(
                s3.make_client(S3Settings.model_validate(result.s3_fields)), result.bucket
            ).create_if_missing()
            backends = stack.Backends(
                s3=result.s3_fields, nats_url=nats.url, mongodb_uri=result.mongodb_uri
            )
            overrides = stack.Overrides(
                # a revoked token is refused at once, not after the cache's minute
                gateway={"api_token_cache_seconds": 0},
            )
            async with stack.start(backends, overrides=overrides) as running:
                result.url = running.api_url
                result.user_token = running.user_token
                result.sign_in_link = sign_in_link(running.api_url, running.user_token)
                ready.set()
                await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="webapp-stack", daemon=True)
    thread.start()
    assert ready.wait(120), "the stack did not start within 120 s"
    if failure:
        raise failure[0]
    try:
        yield result
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(60)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebGL without a GPU (the preview)
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


@pytest.fixture(scope="module")
def browser(live: LiveStack) -> Iterator[Browser]:
    """Debian's Chromium, headless, for one module: Playwright's sync API runs an event loop in
    this thread while it is started, so it is stopped before the async tests of other folders
    run (which is why these fixtures are ours, not pytest-playwright's session-wide ones)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (own sessionStorage) at 1280x800 for each test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


TOLERATED = re.compile(r"/api/projects/[^/]+/report\b")
"""The geometry report's route may answer 501 (not served by this build) or 404 (no report):
the app says so in its panel, and Chromium logs the failed load all the same."""


@pytest.fixture
def console_errors(page: Any) -> Iterator[list[str]]:
    """Console errors and uncaught exceptions of the page; tests assert there are none."""
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type != "error":
            return
        where = str((message.location or {}).get("url", ""))
        if message.text.startswith("Failed to load resource") and TOLERATED.search(where):
            return
        errors.append(f"{message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield errors


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    page = getattr(item, "funcargs", {}).get("page")
    if page is None:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", item.nodeid)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Exception as error:  # the page may be gone; the test's own failure is what matters
        report.sections.append(("screenshot", f"no screenshot: {error}"))

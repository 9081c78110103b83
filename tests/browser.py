"""Headless Chromium for tests: render a local HTML file, collect its errors, keep a screenshot."""

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "out" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_SECONDS = 900
PAGE_TIMEOUT_MS = 30_000

logger = logging.getLogger(__name__)

# Why the install was not possible, once tried in this session: no second apt-get run.
_install_failure: str | None = None


@dataclass(frozen=True)
class Rendered:
    """What Chromium saw when it loaded a page."""

    console_errors: list[str]
    page_errors: list[str]
    screenshot: Path
    text: str
    # Requests to anything but file: or data: URLs, refused so a page cannot lean on the network.
    blocked_requests: list[str] = field(default_factory=list)
    # How many elements each selector asked for matched, and how many of them are visible.
    counts: dict[str, int] = field(default_factory=dict)
    visible: dict[str, int] = field(default_factory=dict)


def ensure_chromium() -> Path:
    """Return Debian's chromium, installing it with apt-get once per session, or skip the test."""
    global _install_failure
    if CHROMIUM.exists():
        return CHROMIUM
    if _install_failure is not None:
        pytest.skip(_install_failure)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        _install_failure = f"{CHROMIUM} is missing and apt-get is not available as root"
        pytest.skip(_install_failure)

    # Two pytest sessions may share the machine; apt-get must not run twice at once.
    lock_path = Path(tempfile.gettempdir()) / "cloud-sniper-chromium-install.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not CHROMIUM.exists():
            _install_failure = _apt_install()
    if _install_failure is not None:
        pytest.skip(_install_failure)
    return CHROMIUM


def _apt_install() -> str | None:
    """Run apt-get update and install chromium; return why it failed, or None."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        logger.warning("installing chromium: running %s", " ".join(command))
        try:
            run = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} timed out after {INSTALL_TIMEOUT_SECONDS}s"
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            return f"{' '.join(command)} failed ({run.returncode}): {' | '.join(tail)}"
    if not CHROMIUM.exists():
        return f"apt-get installed chromium but {CHROMIUM} is still missing"
    logger.warning("installed chromium at %s", CHROMIUM)
    return None


def render_in_chromium(html_path: Path, name: str, count: Sequence[str] = ()) -> Rendered:
    """Load html_path in headless Chromium, collect errors and save a full-page screenshot.

    count names CSS selectors whose matches the page is asked for once loaded.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"html_path {html_path} is not a file")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name {name!r} must be a plain file name for the screenshot")
    executable = ensure_chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (dev dependency)"
    )

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{name}.png"
    console_errors: list[str] = []
    page_errors: list[str] = []
    blocked: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("file:", "data:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable))
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on(
                "console",
                lambda message: (
                    console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.route("**/*", route)
            page.goto(html_path.as_uri(), wait_until="load")
            page.screenshot(path=str(screenshot), full_page=True)
            text = page.inner_text("body")
            counts = {selector: page.locator(selector).count() for selector in count}
            visible = {
                selector: sum(1 for element in page.locator(selector).all() if element.is_visible())
                for selector in count
            }
        finally:
            browser.close()
    return Rendered(
        console_errors=console_errors,
        page_errors=page_errors,
        screenshot=screenshot,
        text=text,
        blocked_requests=blocked,
        counts=counts,
        visible=visible,
    )

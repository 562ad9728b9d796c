"""Start the real dashboard (`streamlit run app.py`) on a free loopback port and drive it with Debian's
chromium through Playwright. Used by tests/test_browser.py and docs/make_screenshots.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; `playwright install` cannot work offline
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# Tall, because Streamlit scrolls inside its own container: elements below the fold are still laid out.
VIEWPORT = {"width": 1400, "height": 2200}
# Seconds for the server to answer /_stcore/health (it answers in ~1 s; the machine may be busy).
HEALTH_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise RuntimeError(f"streamlit did not become healthy within {timeout} s")


@contextlib.contextmanager
def streamlit_server(home: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the app headless with HOME=home and extra ``env``; yield (url, process); stop it afterwards."""
    port = free_port()
    full_env = {**os.environ, "HOME": str(home), "NO_ALBUMENTATIONS_UPDATE": "1", **env}
    command = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"),
               "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
               "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def dashboard_server(root: Path) -> Iterator[tuple[str, dict]]:
    """The app with its own empty home, models, runs and augmentation folders under ``root``; yield (url, folders)."""
    folders = {name: root / name for name in ("home", "models", "runs", "augment")}
    for folder in folders.values():
        folder.mkdir()
    env = {"CARCLF_MODELS_DIR": str(folders["models"]), "CARCLF_RUNS_DIR": str(folders["runs"]),
           "CARCLF_AUGMENT_DIR": str(folders["augment"])}
    with streamlit_server(folders["home"], env, root / "server.log") as (url, _):
        yield url, folders


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def browser_page(home: Path):
    """A Playwright page in headless Debian chromium with a tall viewport."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                             env={**os.environ, "HOME": str(home)})
        try:
            page = browser.new_page(viewport=VIEWPORT)
            yield page
        finally:
            browser.close()


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has finished running the script (no 'Running...' status widget), then fail if the
    page shows a traceback: the app must never show one, and stale widgets of the run before can otherwise
    satisfy a test's next check (a map click that crashed the page once passed that way).

    The widget appears a moment after an interaction, so give it a second to show up first.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):  # the rerun was too quick to see
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="attached", timeout=1000)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    tracebacks = page.locator('[data-testid="stException"]')
    assert tracebacks.count() == 0, f"the page shows a traceback: {tracebacks.first.inner_text()[:2000]}"


def go_to(page, title: str, timeout_ms: int = 180_000) -> None:
    """Open a dashboard page by its navigation link and wait until it has drawn."""
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def launch_tiny_run(page, timeout_ms: int = 180_000) -> None:
    """On the Train page with a dataset chosen: a 2-epoch run at 64 px without augmentation, launched."""
    choose(page, "Image size", "64 px")
    choose(page, "Augmentation", "none")
    page.get_by_role("spinbutton", name="Total epochs (0 = as in the table)").fill("2")
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Started run").wait_for(timeout=timeout_ms)
    page.get_by_role("tab", name="Runs").click()

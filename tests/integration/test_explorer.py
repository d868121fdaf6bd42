"""The latent explorer in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

``playwright install`` cannot download browsers here, so the test drives the system browser through
``executable_path``; CI installs it with apt (see ``.ci/run``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="needs Debian's chromium: apt-get install chromium",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Any]) -> Iterator[str]:
    """``vaekit serve`` of a freshly trained tiny digits model on a free loopback port."""
    from vaekit.training.loop import train

    folder = tmp_path_factory.mktemp("explorer")
    run = train(tiny_config("train.epochs=3"), folder / "run")
    port = free_port()
    with (folder / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vaekit", "serve", str(run.run_dir), "--port", str(port), "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # hang guards only: a loaded machine may be slow
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"vaekit serve did not start:\n{(folder / 'server.log').read_text()}")
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server)
            page.wait_for_selector("body[data-state='ready']", timeout=180_000)
            yield page
            assert not errors, errors  # no uncaught JavaScript error along the way
        finally:
            browser.close()


def grid_images(page: Any) -> list[str]:
    return page.eval_on_selector_all("#grid canvas", "canvases => canvases.map(c => c.toDataURL())")


def image(page: Any, selector: str) -> str:
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def test_explorer_samples_sliders_and_strip(page: Any, tmp_path: Path) -> None:
    assert page.locator("#status").inner_text() == ""
    assert "mlp VAE, bernoulli likelihood, 3 latent dimensions, data 1 x 8 x 8" in page.inner_text("#summary")
    before = grid_images(page)
    assert len(before) == 16 and len(set(before)) > 1  # a grid of different samples
    assert page.locator("#strip canvas").count() == 8
    assert page.locator("#sliders input[type=range]").count() == 3

    page.click("#new-samples")
    page.wait_for_function(
        "old => Array.from(document.querySelectorAll('#grid canvas')).some((c, i) => c.toDataURL() !== old[i])",
        arg=before,
        timeout=180_000,
    )
    page.wait_for_selector("body[data-state='ready']")
    assert grid_images(page) != before

    decoded_before = image(page, "#decoded")
    version = page.get_attribute("#decoded", "data-version")
    page.fill("#dim-0", "2.5")  # moves the slider and fires its input event
    page.wait_for_function(
        "v => document.querySelector('#decoded').dataset.version !== v", arg=version, timeout=180_000
    )
    assert page.input_value("#dim-0") == "2.5" and page.inner_text("#dim-0-value") == "2.50"
    assert image(page, "#decoded") != decoded_before

    strip_before = page.eval_on_selector_all("#strip canvas", "cs => cs.map(c => c.toDataURL())")
    page.click("#grid canvas >> nth=5")  # sample 5 becomes A, the previous A becomes B
    page.wait_for_selector("#grid canvas.a >> nth=0")
    page.wait_for_function(
        "old => Array.from(document.querySelectorAll('#strip canvas')).some((c, i) => c.toDataURL() !== old[i])",
        arg=strip_before,
        timeout=180_000,
    )
    assert page.get_attribute("#grid canvas >> nth=5", "class") == "a"

    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5_000

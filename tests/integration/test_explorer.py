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


HANG_GUARD_MS = 180_000  # waits end when the page gets there; this only stops a hang (a loaded machine is slow)
CONTROLS = "#sliders input, #temperature, #new-samples, #reset-sliders, #method"


@pytest.fixture
def fresh_page(server: str) -> Iterator[Any]:
    """A new page, not yet opened (routes can be set first); no uncaught JavaScript error may happen on it."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, errors  # no uncaught JavaScript error along the way
        finally:
            browser.close()


@pytest.fixture
def page(fresh_page: Any, server: str) -> Any:
    fresh_page.goto(server)
    fresh_page.wait_for_selector("body[data-state='ready']", timeout=HANG_GUARD_MS)
    return fresh_page


def controls_disabled(page: Any) -> list[bool]:
    return page.eval_on_selector_all(CONTROLS, "controls => controls.map(c => c.disabled)")


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


def test_explorer_shows_that_it_is_loading_until_the_first_decode(fresh_page: Any, server: str) -> None:
    """Until the model card and the first decode arrive: a visible loading message, every control disabled."""
    page = fresh_page
    held: list[Any] = []
    page.route("**/v1/decode", lambda route: held.append(route))  # hold the decode until the test lets it go
    with page.expect_request("**/v1/decode", timeout=HANG_GUARD_MS):
        page.goto(server)
    while not held:  # the request is out; its route handler runs when this thread next waits
        page.wait_for_timeout(20)
    assert page.get_attribute("body", "data-state") == "loading"
    assert page.locator("#loading").is_visible() and "loading" in page.inner_text("#loading")
    assert page.locator("#sliders input[type=range]").count() == 3  # the card is here: the sliders are drawn ...
    assert all(controls_disabled(page)), controls_disabled(page)  # ... but wait for the first decode
    assert page.get_attribute("#sliders", "aria-busy") == "true"

    for route in held:
        route.continue_()
    page.unroute("**/v1/decode")
    page.wait_for_selector("body[data-state='ready']", timeout=HANG_GUARD_MS)
    assert not page.locator("#loading").is_visible()
    assert not any(controls_disabled(page)), controls_disabled(page)
    assert page.inner_text("#status") == "" and page.get_attribute("#sliders", "aria-busy") == "false"


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body", "shown"),
    [
        # uvicorn's own answer to a request it cannot parse is plain text, not JSON
        ("/v1/model", 400, "text/plain", "Invalid HTTP request received.", "400 Invalid HTTP request received."),
        ("/v1/decode", 500, "application/json", '{"detail": "internal error; see the server log"}', "internal error"),
        ("/v1/sample", 422, "application/json", '{"detail": [{"loc": ["body", "n"], "msg": "bad"}]}', "body.n: bad"),
    ],
    ids=["model-plain-text-400", "decode-500", "sample-422"],
)
def test_explorer_says_when_loading_fails(
    fresh_page: Any, server: str, path: str, status: int, content_type: str, body: str, shown: str
) -> None:
    page = fresh_page
    page.route(f"**{path}", lambda route: route.fulfill(status=status, content_type=content_type, body=body))
    page.goto(server)
    page.wait_for_selector("body:not([data-state='loading'])", timeout=HANG_GUARD_MS)
    assert page.get_attribute("body", "data-state") == "error"
    message = page.inner_text("#status")
    assert path in message and shown in message and "reload" in message, message
    assert not page.locator("#loading").is_visible()
    assert all(controls_disabled(page)), controls_disabled(page)  # nothing to explore: the controls stay off
    if path == "/v1/sample":  # the sliders are drawn, with no code to show yet: centred, not pinned to an end
        assert page.eval_on_selector_all("#sliders input", "sliders => sliders.map(s => s.value)") == ["0"] * 3

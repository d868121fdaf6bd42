"""Audio models behind the HTTP service: the model card, ``POST /v1/sound`` and the latent explorer, which draws
spectrograms and plays their clips (checked in Debian's Chromium through Playwright, as the image page is)."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vaekit.apps.audio import FULL_SCALE
from vaekit.config import ModelConfig
from vaekit.data.audio import AudioPreprocessing, wav_bytes
from vaekit.models import build_model
from vaekit.models.contract import LatentVariableModel
from vaekit.models.serialization import save_model

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

IN_PROCESS = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
RECORD = AudioPreprocessing(shape=(1, 24, 33), source="clips", sample_rate=8000, clip_samples=2048, n_fft=128,
                            hop_length=64, n_mels=24, db_mean=-60.0, db_std=20.0, labels_from="{label}_{take}",
                            classes=("0", "1"))


def audio_model(num_classes: int = 0) -> LatentVariableModel:
    """A small untrained conv model with an audio record (its decoded spectrograms are what the page draws)."""
    torch.manual_seed(0)
    config = ModelConfig(architecture="conv", likelihood="laplace", latent_dim=3, channels=(4, 8), hidden_dims=(16,),
                         num_classes=num_classes)
    model = build_model(config, RECORD.shape)
    model.preprocessing = RECORD
    return model.eval()


@IN_PROCESS
def test_sound_endpoint_gives_the_librarys_wav_files() -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    model = audio_model()
    client = TestClient(create_app(model))
    card = client.get("/v1/model").json()
    assert card["modality"] == "audio" and card["image"] is False and card["preprocessing"]["kind"] == "audio"
    assert "new-samples" in client.get("/").text  # the explorer, not the "no explorer" page
    x = np.asarray(client.post("/v1/sample", json={"n": 3, "seed": 1}).json()["x"], np.float32)
    answer = client.post("/v1/sound", json={"x": x.tolist(), "griffin_lim_iters": 8})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["sample_rate"] == 8000 and len(body["wav"]) == 3
    expected = RECORD.to_waveforms(x, n_iter=8)
    for i, text in enumerate(body["wav"]):
        data = base64.b64decode(text)
        assert data == wav_bytes(expected[i], 8000)
        wave, rate = sf.read(io.BytesIO(data))
        assert rate == 8000 and wave.shape == (2048,)
    loud = x + 4.0  # 4 standard deviations of dB louder: beyond full scale, scaled down as `vaekit sample` does
    peaks = np.abs(RECORD.to_waveforms(loud, n_iter=8)).max(axis=1)
    assert (peaks > 1.0).all()
    answer = client.post("/v1/sound", json={"x": loud.tolist(), "griffin_lim_iters": 8})
    for text in answer.json()["wav"]:
        wave, _ = sf.read(io.BytesIO(base64.b64decode(text)))
        assert np.abs(wave).max() == pytest.approx(FULL_SCALE, abs=1e-4)  # not clipped at 1


@IN_PROCESS
def test_sound_requests_that_cannot_be_answered(tiny_model: Callable[..., Any]) -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    client = TestClient(create_app(audio_model()))
    x = np.zeros((1, *RECORD.shape), np.float32).tolist()
    for body, fragment in (
        ({"x": x, "griffin_lim_iters": 0}, "greater than or equal to 1"),
        ({"x": x * 65}, "at most 64"),
        ({"x": [[0.0] * 10]}, "per-example shape"),
    ):
        answer = client.post("/v1/sound", json=body)
        assert answer.status_code == 422 and fragment in answer.text, answer.text
    image_client = TestClient(create_app(tiny_model()))
    answer = image_client.post("/v1/sound", json={"x": np.zeros((1, 1, 8, 8)).tolist()})
    assert answer.status_code == 422 and "not trained on audio" in answer.text
    assert image_client.get("/v1/model").json()["modality"] == "image"


# -- the explorer in Chromium -------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
HANG_GUARD_MS = 300_000  # waits end when the page gets there; this only stops a hang (a loaded machine is slow)
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
                                    reason="needs Debian's chromium: apt-get install chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("audio-explorer")
    save_model(audio_model(num_classes=2), folder / "model")
    port = free_port()
    with (folder / "server.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", str(folder / "model"), "--port", str(port),
                                 "--quiet"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
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


DURATION = """player => new Promise(resolve => {
  if (player.readyState >= 1) resolve(player.duration);
  else player.addEventListener("loadedmetadata", () => resolve(player.duration), { once: true });
})"""


@needs_chromium
def test_explorer_draws_spectrograms_and_plays_their_clips(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server)
            page.wait_for_selector("body[data-state='ready']", timeout=HANG_GUARD_MS)
            assert page.inner_text("#status") == ""
            assert "0.26 s clips at 8000 Hz" in page.inner_text("#summary")

            sources = page.eval_on_selector_all("#grid .clip audio", "ps => ps.map(p => p.src)")
            assert len(sources) == 16 and all(s.startswith("data:audio/wav;base64,") for s in sources)
            assert len(set(sources)) > 1  # different samples sound different
            assert page.locator("#grid .clip canvas").count() == 16
            assert page.locator("#strip .clip audio").count() == 8
            duration = page.eval_on_selector("#grid .clip audio", DURATION)  # Chromium decodes the WAV
            assert abs(duration - 2048 / 8000) < 0.01
            wav = base64.b64decode(sources[0].split(",", 1)[1])
            wave, rate = sf.read(io.BytesIO(wav))
            assert rate == 8000 and len(wave) == 2048

            version = page.get_attribute("#decoded + audio", "data-version")
            page.fill("#dim-0", "2.5")
            page.wait_for_function("v => document.querySelector('#decoded + audio').dataset.version !== v",
                                   arg=version, timeout=HANG_GUARD_MS)
            page.wait_for_selector("body[data-state='ready']", timeout=HANG_GUARD_MS)
            assert page.eval_on_selector("#decoded + audio", "p => p.src").startswith("data:audio/wav;base64,")
            assert not errors, errors
        finally:
            browser.close()

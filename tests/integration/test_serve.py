"""The HTTP service, run as a real ``vaekit serve`` process on a free loopback port.

Every endpoint is checked against the library, every error path answers 4xx JSON naming the field, and a
property-based fuzz generated from the app's own OpenAPI schema (schemathesis) finds no 5xx.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from vaekit.apps.sampling import npy_bytes
from vaekit.models.serialization import load
from vaekit.models.vae import VAE
from vaekit.serving.service import Limits, RequestError, read_array

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

MAX_BATCH = 64
MAX_BODY_MB = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, *flags: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m vaekit serve MODEL`` on a free loopback port; returns once /healthz answers."""
    for _ in range(3):  # the port is free when picked, but another process may take it before the bind
        port = free_port()
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vaekit", "serve", str(model), "--port", str(port), *flags],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600  # a hang guard only: a loaded machine may be slow
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"vaekit serve did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Any]) -> Path:
    from vaekit.training.loop import train

    return train(tiny_config(), tmp_path_factory.mktemp("serve") / "run").run_dir


@pytest.fixture(scope="module")
def model(run_dir: Path) -> VAE:
    return load(run_dir)


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    flags = ("--threads", "1", "--max-batch", str(MAX_BATCH), "--max-body-mb", str(MAX_BODY_MB), "--quiet")
    proc, url = start_server(run_dir, *flags, log=log)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()  # no request crashed a handler


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def digits(model: VAE) -> np.ndarray:
    """(8, 1, 8, 8) digits in the model's input space."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:8].astype(np.float32) / 16.0)[:, None]


def b64npy(array: np.ndarray) -> str:
    return base64.b64encode(npy_bytes(array)).decode()


def from_b64npy(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def assert_field_error(response: Any, status: int, field: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert any(d["loc"][-1] == field for d in detail), detail
    message = " ".join(d["msg"] for d in detail)
    for fragment in fragments:
        assert fragment in message, message


# -- every endpoint, checked against the library ---------------------------------------------------------
def test_health_schema_and_model_card(client: Any, model: VAE) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/healthz", "/v1/model", "/v1/encode", "/v1/decode", "/v1/sample", "/v1/reconstruct", "/v1/score"):
        assert path in paths
    card = client.get("/v1/model").json()
    assert card["data_shape"] == [1, 8, 8] and card["latent_dim"] == 3 and card["image"] is True
    assert card["config"]["architecture"] == "mlp" and card["config"]["latent_dim"] == 3
    assert card["metrics"]["val_elbo"] == pytest.approx(model.metadata["metrics"]["val_elbo"])
    assert card["preprocessing"]["scale"] == 16.0 and card["vaekit_version"] == model.metadata["vaekit_version"]
    assert card["limits"]["max_batch"] == MAX_BATCH and card["limits"]["max_body_bytes"] == MAX_BODY_MB << 20
    assert card["training_config"]["train"]["epochs"] == 2


def test_encode_decode_reconstruct_match_the_library(client: Any, model: VAE, digits: np.ndarray) -> None:
    x = torch.from_numpy(digits)
    with torch.no_grad():
        qz_x = model.encode(x)
        expected_x_hat = model.reconstruct(x).numpy()
        expected_decoded = model.decode(qz_x.mean).mean.numpy()
    encoded = client.post("/v1/encode", json={"x": digits.tolist()}).json()
    np.testing.assert_allclose(encoded["mean"], qz_x.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(encoded["log_var"], qz_x.variance.log().numpy(), atol=1e-5)
    decoded = client.post("/v1/decode", json={"z": encoded["mean"]}).json()["x"]
    np.testing.assert_allclose(decoded, expected_decoded, atol=1e-5)
    reconstructed = client.post("/v1/reconstruct", json={"x": digits.tolist()}).json()["x"]
    np.testing.assert_allclose(reconstructed, expected_x_hat, atol=1e-5)


def test_flat_rows_raw_values_and_npy_give_the_same_answer(client: Any, digits: np.ndarray) -> None:
    reference = client.post("/v1/encode", json={"x": digits.tolist()}).json()["mean"]
    flat = client.post("/v1/encode", json={"x": digits.reshape(8, 64).tolist()}).json()["mean"]
    raw = client.post("/v1/encode", json={"x": (digits * 16).round().tolist(), "raw": True}).json()["mean"]
    as_npy = client.post("/v1/encode", json={"x_npy": b64npy(digits), "output": "npy"}).json()
    uint8 = client.post("/v1/encode", json={"x_npy": b64npy((digits * 16).round().astype(np.uint8)), "raw": True})
    np.testing.assert_allclose(flat, reference, atol=1e-6)
    np.testing.assert_allclose(raw, reference, atol=1e-6)
    np.testing.assert_allclose(from_b64npy(as_npy["mean"]), reference, atol=1e-6)
    assert from_b64npy(as_npy["log_var"]).dtype == np.float32
    np.testing.assert_allclose(uint8.json()["mean"], reference, atol=1e-6)


def test_sample_is_seeded_and_matches_the_library(client: Any, model: VAE) -> None:
    from vaekit.apps.sampling import sample

    body = client.post("/v1/sample", json={"n": 5, "temperature": 0.7, "seed": 42}).json()
    assert body["seed"] == 42 and body["temperature"] == 0.7
    np.testing.assert_allclose(body["x"], sample(model, 5, temperature=0.7, seed=42), atol=1e-6)
    drawn = client.post("/v1/sample", json={"n": 5, "temperature": 0.7, "seed": 42, "draw": True}).json()["x"]
    np.testing.assert_array_equal(drawn, sample(model, 5, temperature=0.7, seed=42, draw=True))
    assert set(np.unique(drawn)) <= {0.0, 1.0}  # draws of this Bernoulli model, not its probabilities
    first, second = (client.post("/v1/sample", json={"n": 2}).json() for _ in range(2))
    assert first["seed"] != second["seed"] and first["x"] != second["x"]  # no seed: a fresh draw each time
    again = client.post("/v1/sample", json={"n": 2, "seed": first["seed"]}).json()
    assert again["x"] == first["x"]
    npy = client.post("/v1/sample", json={"n": 3, "output": "npy"}).json()["x"]
    assert from_b64npy(npy).shape == (3, 1, 8, 8)


def test_score_matches_the_library(client: Any, model: VAE, digits: np.ndarray) -> None:
    from vaekit.apps.scoring import anomaly_scores

    x = torch.from_numpy(digits)
    recon = client.post("/v1/score", json={"x": digits.tolist(), "method": "recon"}).json()
    assert recon["method"] == "recon" and recon["unit"] == "squared error" and recon["k"] == 1
    np.testing.assert_allclose(recon["scores"], anomaly_scores(model, x, "recon").numpy(), rtol=1e-5)
    many = np.repeat(digits, 8, axis=0)  # 64 examples x k=600 pass the limit of 32,768 samples: recon draws none
    assert client.post("/v1/score", json={"x": many.tolist(), "method": "recon", "k": 600}).status_code == 200
    assert client.post("/v1/score", json={"x": many.tolist(), "method": "elbo", "k": 600}).status_code == 422
    bits = client.post("/v1/score", json={"x": digits.tolist(), "method": "recon", "unit": "bits"})
    assert bits.status_code == 422 and bits.json()["detail"][0]["loc"] == ["body", "unit"]
    iwae = client.post("/v1/score", json={"x": digits.tolist(), "k": 200, "unit": "bits"}).json()
    expected = anomaly_scores(model, x, "iwae", k=200, unit="bits").numpy()
    assert len(iwae["scores"]) == 8
    np.testing.assert_allclose(iwae["scores"], expected, atol=0.02)  # Monte Carlo: close, not equal
    noise = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    noisy = client.post("/v1/score", json={"x": noise.tolist(), "method": "elbo", "k": 5}).json()["scores"]
    clean = client.post("/v1/score", json={"x": digits.tolist(), "method": "elbo", "k": 5}).json()["scores"]
    assert np.mean(noisy) > np.mean(clean)  # uniform noise is more anomalous than digits


def test_interpolate_walks_between_two_codes(client: Any, model: VAE) -> None:
    z_a, z_b = [1.0, -1.0, 0.5], [-1.0, 2.0, 0.0]
    for method in ("linear", "spherical"):
        body = client.post("/v1/interpolate", json={"z_a": z_a, "z_b": z_b, "steps": 5, "method": method}).json()
        x = np.asarray(body["x"])
        assert x.shape == (5, 1, 8, 8)
        with torch.no_grad():
            ends = model.decode(torch.tensor([z_a, z_b])).mean.numpy()
        np.testing.assert_allclose(x[[0, -1]], ends, atol=1e-5)


def test_concurrent_requests_get_their_own_answers(client: Any, server: str, digits: np.ndarray) -> None:
    expected = {i: client.post("/v1/encode", json={"x": digits[i : i + 1].tolist()}).json()["mean"] for i in range(8)}

    def call(i: int) -> tuple[int, Any]:
        # Even requests are small JSON (run on the event loop), odd ones .npy (run in the thread pool).
        example = digits[i % 8 : i % 8 + 1]
        body = {"x": example.tolist()} if i % 2 == 0 else {"x_npy": b64npy(example)}
        with httpx.Client(base_url=server, timeout=30) as c:
            return i % 8, c.post("/v1/encode", json=body).json()["mean"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(96)))
    for i, mean in results:
        np.testing.assert_allclose(mean, expected[i], atol=1e-6)


# -- every error path ------------------------------------------------------------------------------------------
BAD_ENCODE_BODIES = [
    ({}, "x", "exactly one of x"),
    ({"x": [[0.0] * 64], "x_npy": "AAAA"}, "x", "exactly one of x"),
    ({"x": []}, "x", "at least 1"),
    ({"x": [[0.5] * 63]}, "x", "(63 values) but the model takes (1, 8, 8)"),
    ({"x": [[0.5] * 64, [0.5] * 63]}, "x", "rectangular"),
    ({"x": [["a"] * 64]}, "x", "only numbers"),
    ({"x": [[None] * 64]}, "x", "only numbers"),
    ({"x": 3}, "x", "valid list"),
    ({"x": [[2.0] * 64]}, "x", "needs data in [0, 1]"),
    ({"x": [[0.5] * 64] * (MAX_BATCH + 1)}, "x", f"at most {MAX_BATCH}"),
    ({"x": [[0.5] * 64], "output": "xml"}, "output", "'json' or 'npy'"),
    ({"x": [[0.5] * 64], "colour": "red"}, "colour", "Extra inputs"),
    ({"x": [[0.5] * 64], "y": 1}, "y", "not conditional"),
    ({"x": [[0.5] * 64], "raw": "maybe"}, "raw", "boolean"),
    ({"x_npy": "not base64!"}, "x_npy", "not a base64-encoded .npy"),
    ({"x_npy": base64.b64encode(b"\x93NUMPY garbage").decode()}, "x_npy", "not a base64-encoded .npy"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), BAD_ENCODE_BODIES)
def test_bad_encode_requests_name_the_field(client: Any, body: dict[str, Any], field: str, fragment: str) -> None:
    assert_field_error(client.post("/v1/encode", json=body), 422, field, fragment)


def test_npy_payloads_are_never_unpickled(client: Any) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle inside a .npy
    body = {"x_npy": base64.b64encode(buffer.getvalue()).decode()}
    assert_field_error(client.post("/v1/encode", json=body), 422, "x_npy", "dtype object", "nothing pickled")
    header = io.BytesIO()  # a tiny file whose header claims 800 GB: refused before anything is allocated
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    huge = {"x_npy": base64.b64encode(header.getvalue() + bytes(64)).decode()}
    assert_field_error(client.post("/v1/encode", json=huge), 422, "x_npy", "promises 800000000000 bytes")
    strings = {"x_npy": b64npy(np.array([["a"] * 64]))}
    assert_field_error(client.post("/v1/encode", json=strings), 422, "x_npy", "dtype <U1")
    too_many = {"x_npy": b64npy(np.zeros((MAX_BATCH + 1, 64), np.float32))}
    assert_field_error(client.post("/v1/encode", json=too_many), 422, "x_npy", f"send 1 to {MAX_BATCH}")


def npy_file(header: bytes, data: bytes = b"") -> bytes:
    """A version 1.0 ``.npy`` file with the given header text (whatever it says) and data bytes."""
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


# Headers numpy's own parser chokes on, each in another way (tokenize.TokenError, SyntaxError, TypeError, ...),
# and headers it accepts but np.load then fails on.
GARBAGE_NPY_FILES = [
    npy_file(b"{'de"),  # the 12-byte file of the review: TokenError inside numpy's header parser
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,"),
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} \\"),
    npy_file(b"\xff\xfe\x00\x01"),
    npy_file(b"[]"),
    npy_file(b"{1: 2}"),
    npy_file(b"(((((((((((((((((((((((((((((((((((((((((((("),
    npy_file(b"{'descr': [1], 'fortran_order': False, 'shape': (1,)}"),
    npy_file(b"{'descr': ('<f4', 10**20), 'fortran_order': False, 'shape': (1,)}"),
    npy_file(b"{'descr': '<f4', 'fortran_order': 2, 'shape': (1,)}"),
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}", bytes(4)),
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -4)}", bytes(16)),
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,) * 70}", bytes(4)),
    npy_file(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2**63, 0)}"),
]


def mutated_npy_files(count: int, seed: int = 0) -> list[bytes]:
    """Valid ``.npy`` files with a few bytes of the header replaced, inserted or deleted (seeded)."""
    rng = random.Random(seed)
    valid = npy_bytes(np.zeros((2, 64), np.float32))
    files = []
    for _ in range(count):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(8, 80)
            action = rng.choice(["replace", "insert", "delete"])
            if action == "replace":
                raw[at] = rng.choice(b"{}()[]',:#\\-0123456789LTFNn \n\xff")
            elif action == "insert":
                raw[at:at] = bytes([rng.randrange(256)])
            else:
                del raw[at]
        files.append(bytes(raw))
    return files


def test_garbage_npy_headers_are_field_errors() -> None:
    """Whatever numpy's header parser raises (ValueError, SyntaxError, TokenError, TypeError, ...) is a RequestError
    naming the field, never another exception (which the server would answer with a 500)."""
    for raw in GARBAGE_NPY_FILES + mutated_npy_files(400):
        try:
            read_array(None, base64.b64encode(raw).decode(), "x")
        except RequestError as exc:
            assert exc.field == "x_npy"


@pytest.mark.parametrize(
    "raw", GARBAGE_NPY_FILES + mutated_npy_files(10, seed=1), ids=lambda raw: f"crc-{zlib.crc32(raw):08x}"
)
def test_garbage_npy_headers_get_422(client: Any, raw: bytes) -> None:
    response = client.post("/v1/encode", json={"x_npy": base64.b64encode(raw).decode()})
    if response.status_code != 200:  # a mutation may still be a valid file
        assert_field_error(response, 422, "x_npy")


def unknown_keys_body(count: int) -> str:
    """A JSON object of ``count`` distinct unknown keys ("0", "1", ..., in hex to keep it under the body limit)."""
    return "{" + ",".join(f'"{i:x}":0' for i in range(count)) + "}"


def test_unknown_keys_are_refused_before_validation(client: Any) -> None:
    """One 422 naming the first unknown keys and their count, not one error per key (which took 20 s and 87 MB
    for a million keys while the server answered nothing else)."""
    body = unknown_keys_body(100_000)
    assert len(body) < MAX_BODY_MB << 20
    response = client.post("/v1/sample", content=body, headers={"content-type": "application/json"})
    assert len(response.content) < 10_000, len(response.content)
    assert_field_error(response, 422, "0", "Extra inputs", "100000 unknown keys", "'1'", "n, temperature, seed")
    huge_key = json.dumps({"n": 2, "k" * 500_000: 1})  # the key itself is not echoed whole either
    response = client.post("/v1/sample", content=huge_key, headers={"content-type": "application/json"})
    assert response.status_code == 422 and len(response.content) < 10_000, len(response.content)


def test_error_lists_are_bounded(client: Any) -> None:
    body = {"x": [[0.5] * 64] * MAX_BATCH, "y": ["a"] * MAX_BATCH}  # one error per label, and one more
    response = client.post("/v1/encode", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) <= 21 and all(d["loc"][:2] == ["body", "y"] for d in detail[:-1]), detail
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)
    assert detail[-1]["type"] == "too_many_errors" and f"{MAX_BATCH + 1} in all" in detail[-1]["msg"]


def test_non_finite_values_are_rejected(client: Any) -> None:
    nan_body = '{"x": [[' + ", ".join(["NaN"] * 64) + "]]}"
    response = client.post("/v1/encode", content=nan_body, headers={"content-type": "application/json"})
    assert_field_error(response, 422, "x", "NaN or infinite")
    npy = {"x_npy": b64npy(np.full((1, 64), np.inf, np.float32))}
    assert_field_error(client.post("/v1/encode", json=npy), 422, "x_npy", "NaN or infinite")
    assert_field_error(client.post("/v1/decode", json={"z": [[1e30, 0, 0]]}), 422, "z", "within +-1000")
    assert_field_error(client.post("/v1/decode", json={"z": [[0.0, 0.0]]}), 422, "z", "send (B, 3)")
    assert_field_error(client.post("/v1/decode", json={"z": [0.0, 0.0, 0.0]}), 422, "z", "send (B, 3)")


BAD_REQUESTS = [
    ("/v1/sample", {"n": 0}, "n", "greater than or equal to 1"),
    ("/v1/sample", {"n": MAX_BATCH + 1}, "n", f"less than or equal to {MAX_BATCH}"),
    ("/v1/sample", {"temperature": 0}, "temperature", "greater than 0"),
    ("/v1/sample", {"temperature": 1e9}, "temperature", "less than or equal to 100"),
    ("/v1/sample", {"seed": -1}, "seed", "greater than or equal to 0"),
    ("/v1/sample", {"n": "four"}, "n", "valid integer"),
    ("/v1/sample", {"label": 2}, "label", "not conditional"),
    ("/v1/score", {"x": [[0.5] * 64], "method": "magic"}, "method", "choose one of: elbo, iwae, recon"),
    ("/v1/score", {"x": [[0.5] * 64], "unit": "hartleys"}, "unit", "choose one of: nats, bits"),
    ("/v1/score", {"x": [[0.5] * 64], "method": "recon", "unit": "bits"}, "unit", "has no bits; leave unit out"),
    ("/v1/score", {"x": [[0.5] * 64], "k": 0}, "k", "greater than or equal to 1"),
    ("/v1/score", {"x": [[0.5] * 64], "k": 1001}, "k", "less than or equal to 1000"),
    ("/v1/score", {"x": [[0.5] * 64] * MAX_BATCH, "k": 1000}, "k", "lower k or B"),
    ("/v1/interpolate", {"z_a": [0, 0, 0], "z_b": [1, 1]}, "z_b", "send (B, 3)"),
    ("/v1/interpolate", {"z_a": [0, 0, 0], "z_b": [1, 1, 1], "steps": 1}, "steps", "greater than or equal"),
    ("/v1/interpolate", {"z_a": [0, 0, 0], "z_b": [1, 1, 1], "method": "cubic"}, "method", "linear"),
    ("/v1/decode", {"z_npy": b64npy(np.zeros((2, 4), np.float32))}, "z_npy", "send (B, 3)"),
    ("/v1/reconstruct", {"x": [[0.5] * 64], "raw": True, "y": [0, 1]}, "y", "not conditional"),
]


@pytest.mark.parametrize(("path", "body", "field", "fragment"), BAD_REQUESTS)
def test_bad_requests_name_the_field(client: Any, path: str, body: dict[str, Any], field: str, fragment: str) -> None:
    assert_field_error(client.post(path, json=body), 422, field, fragment)


def test_transport_level_errors(client: Any) -> None:
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/encode").status_code == 405
    bad_json = client.post("/v1/encode", content=b"{not json", headers={"content-type": "application/json"})
    assert_field_error(bad_json, 422, 1, "JSON")  # loc ["body", <position>]
    big = b'{"x": [[' + b"0.5, " * (MAX_BODY_MB << 19) + b"0.5]]}"  # a little over the body limit
    assert_field_error(client.post("/v1/encode", content=big), 413, "body", "exceeds the limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds while streaming
        for _ in range(MAX_BODY_MB * 4 + 1):
            yield b" " * (1 << 18)

    assert_field_error(client.post("/v1/encode", content=chunks()), 413, "body", "exceeds the limit")
    assert client.get("/healthz").status_code == 200  # and the server is still there


def test_requests_that_are_not_http_get_uvicorns_plain_text_400(server: str, client: Any) -> None:
    """What the README documents: uvicorn answers a request it cannot parse as HTTP before the app sees it, in plain
    text (and logs one warning line, no traceback)."""
    host, port = server.removeprefix("http://").split(":")
    for request in (b"GARBAGE\r\n\r\n", b"POST /v1/sample HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"):
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(request)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: text/plain" in head.lower(), answer
        assert b"Invalid HTTP request" in body
    assert client.get("/healthz").status_code == 200


def test_no_request_reads_files(client: Any) -> None:
    assert client.get("/static/explorer.js").status_code == 200
    for path in (
        "/static/..%2fserve.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/explorer.html",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/model.safetensors",
        "/config.json",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "root:" not in response.text


def test_explorer_page_is_served(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "new-samples" in page.text and "/static/explorer.js" in page.text


def test_cli_serve_refuses_a_bad_port(tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vaekit.cli.main import main

    assert main(["serve", str(run_dir), "--port", "70000"]) == 2
    assert "port 70000 is out of range" in capsys.readouterr().err
    import socket

    with socket.socket() as taken:  # a port something else listens on: one line, before uvicorn starts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0], err
    for size in ("nan", "inf", "-1"):
        assert main(["serve", str(run_dir), "--max-body-mb", size]) == 2
        assert f"--max-body-mb must be a positive number of MiB, got {size}" in capsys.readouterr().err


def test_port_0_is_a_free_port_chosen_before_serving() -> None:
    from vaekit.serving.http import _listening_socket

    with _listening_socket("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0  # the port the log names


# -- in-process checks of the other kinds of model ----------------------------------------------------------
IN_PROCESS = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@IN_PROCESS
def test_non_image_models_get_a_clear_page(tiny_model: Callable[..., VAE]) -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    client = TestClient(create_app(tiny_model(shape=(5,), likelihood="gaussian")))
    page = client.get("/")
    assert page.status_code == 200 and "No latent explorer for this model" in page.text and "(5,)" in page.text
    assert client.get("/v1/model").json()["image"] is False
    assert np.asarray(client.post("/v1/sample", json={"n": 2}).json()["x"]).shape == (2, 5)
    assert_field_error(client.post("/v1/encode", json={"x": [[0.0] * 5], "raw": True}), 422, "raw", "no preprocessing")


@IN_PROCESS
def test_client_errors_log_no_traceback(model: VAE, caplog: pytest.LogCaptureFixture) -> None:
    """Only a genuine 500 logs (once, with its traceback); a bad request is the client's problem, not the log's."""
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    client = TestClient(create_app(model, Limits(max_batch=MAX_BATCH)))
    requests: list[tuple[str, Any]] = [("/v1/encode", {"json": body}) for body, _, _ in BAD_ENCODE_BODIES]
    requests += [("/v1/encode", {"json": {"x_npy": base64.b64encode(raw).decode()}}) for raw in GARBAGE_NPY_FILES]
    requests += [(path, {"json": body}) for path, body, _, _ in BAD_REQUESTS]
    json_type = {"content-type": "application/json"}
    for content in (b"{not json", b"[" * 100_000, b'"' + b"\\" * 11, unknown_keys_body(10_000).encode(), b"[]", b"7"):
        requests += [("/v1/sample", {"content": content, "headers": json_type})]
    with caplog.at_level(logging.DEBUG, logger="vaekit"):
        for path, kwargs in requests:
            response = client.post(path, **kwargs)
            assert 400 <= response.status_code < 500, (path, kwargs, response.text[:300])
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert logged == [], [r.getMessage() for r in logged]


@IN_PROCESS
def test_a_bug_is_logged_once_and_answered_500(
    tiny_model: Callable[..., VAE], caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    app = create_app(tiny_model())
    app.state.service.sample = lambda *args: 1 / 0  # a bug: the one kind of error that logs its traceback
    client = TestClient(app)  # raises whatever reaches the server, which would log it again
    with caplog.at_level(logging.DEBUG, logger="vaekit"):
        response = client.post("/v1/sample", json={"n": 1})
    assert response.status_code == 500 and response.json() == {"detail": "internal error; see the server log"}
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and logged[0].exc_info is not None and logged[0].name == "vaekit.serving.http"
    assert "POST /v1/sample" in logged[0].getMessage()


@IN_PROCESS
def test_conditional_models_take_labels(tiny_model: Callable[..., VAE]) -> None:
    from fastapi.testclient import TestClient

    from vaekit.serving.http import create_app

    model = tiny_model(num_classes=3).eval()
    client = TestClient(create_app(model))
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    assert_field_error(client.post("/v1/encode", json={"x": x.tolist()}), 422, "y", "conditional")
    assert_field_error(client.post("/v1/encode", json={"x": x.tolist(), "y": 3}), 422, "y", "0..2")
    assert_field_error(client.post("/v1/encode", json={"x": x.tolist(), "y": [0]}), 422, "y", "shape (2,)")
    mean = client.post("/v1/encode", json={"x": x.tolist(), "y": [0, 2]}).json()["mean"]
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(x), torch.tensor([0, 2])).mean.numpy()
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    decoded = client.post("/v1/decode", json={"z": mean, "y": 1}).json()["x"]
    assert np.asarray(decoded).shape == (2, 1, 8, 8)
    assert len(client.post("/v1/sample", json={"n": 3, "label": 1}).json()["x"]) == 3
    strip = client.post("/v1/interpolate", json={"z_a": mean[0], "z_b": mean[1], "steps": 3, "label": 2})
    assert np.asarray(strip.json()["x"]).shape == (3, 1, 8, 8)
    assert client.post("/v1/score", json={"x": x.tolist(), "y": 0, "k": 3}).status_code == 200


# -- property-based fuzz from the OpenAPI schema ------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_no_server_errors(case: Any) -> None:
    from schemathesis.checks import not_a_server_error

    case.call_and_validate(checks=[not_a_server_error])


def test_openapi_schema_documents_the_limits(client: Any) -> None:
    components = client.get("/openapi.json").json()["components"]["schemas"]
    sample = json.dumps(components["SampleRequest"])
    assert f'"maximum": {MAX_BATCH}' in sample

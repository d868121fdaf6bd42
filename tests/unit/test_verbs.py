"""Model verbs (sample, reconstruct, interpolate, traverse, embed), their maths helpers, and the plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.apps.embedding import embed
from vaekit.apps.interpolation import interpolate, lerp, slerp
from vaekit.apps.reconstruction import reconstruct
from vaekit.apps.sampling import sample
from vaekit.apps.traversal import traversal_latents, traverse
from vaekit.config import ModelConfig
from vaekit.data import Preprocessing
from vaekit.errors import ConfigError, OutputError
from vaekit.models.serialization import save_model
from vaekit.models.vae import VAE
from vaekit.plots import interleave_rows, plot_loss_curve, save_image_grid

LATENT = 4


@pytest.fixture(scope="module")
def digits_model() -> VAE:
    """An untrained MLP model of the 8x8 digits, with the preprocessing training would store."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=LATENT, hidden_dims=(16,)), (1, 8, 8))
    model.preprocessing = Preprocessing(shape=(1, 8, 8), kind="unit", scale=16.0, source="digits")
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(digits_model: VAE, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(digits_model, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def table_model() -> VAE:
    """A Gaussian model of 5-feature vectors (real-valued data: drawn as heat maps)."""
    model = VAE(ModelConfig(likelihood="gaussian", latent_dim=3, hidden_dims=(8,)), (5,))
    model.preprocessing = Preprocessing(shape=(5,), kind="real", source="table.csv")
    return model.eval()


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


def assert_captioned_grid(path: Path, cols: int, rows: int, *, cell: int = 34, text: tuple[str, ...] = ()) -> None:
    """The picture holds a grid of ``cols`` x ``rows`` cells of ``cell`` px (2 px padding), plus caption margins."""
    width, height = png_size(path)
    grid_w, grid_h = cols * cell + 2, rows * cell + 2
    assert width >= grid_w and height >= grid_h
    assert height - grid_h in (0, 15, 30)  # a title line and/or a line of column captions, 15 px each


# -- plots -----------------------------------------------------------------------------------------------
def test_image_grid_upscales_small_images(tmp_path: Path) -> None:
    path = save_image_grid(torch.rand(5, 1, 8, 8), tmp_path / "grid.png", nrow=5)
    # 8 px -> 4x = 32 px cells, 2 px padding: 5 * 34 + 2 wide, 1 * 34 + 2 high.
    assert png_size(path) == (172, 36)


def test_image_grid_rgb_and_default_rows(tmp_path: Path) -> None:
    path = save_image_grid(
        np.random.rand(4, 3, 10, 10) * 2 - 0.5, tmp_path / "rgb.png"
    )  # out of range: clipped
    assert png_size(path) == (66, 66)
    with Image.open(path) as image:
        assert image.mode == "RGB"


def test_image_grid_of_flat_rows_with_data_shape(tmp_path: Path) -> None:
    path = save_image_grid(np.random.rand(3, 64), tmp_path / "flat.png", nrow=3, data_shape=(1, 8, 8))
    assert png_size(path) == (3 * 34 + 2, 36)


def test_non_image_data_becomes_heat_map(tmp_path: Path) -> None:
    path = save_image_grid(np.random.randn(20, 7), tmp_path / "heat.png")
    width, height = png_size(path)
    assert width == 800 and height >= 250


def test_loss_curve(tmp_path: Path) -> None:
    metrics = [
        {"epoch": e, "train_loss": 50 - e, "val_elbo": -52 + e, "val_nll": 51 - e} for e in range(1, 6)
    ]
    assert png_size(plot_loss_curve(metrics, tmp_path / "loss.png")) == (600, 400)


def test_plot_to_unwritable_path_is_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        save_image_grid(torch.rand(2, 1, 8, 8), blocker / "grid.png")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


# -- interpolation maths ---------------------------------------------------------------------------------
def test_lerp_endpoints_and_midpoint() -> None:
    a, b = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    path = lerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(path, torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, -2.0]]))


def test_slerp_endpoints_exact_and_norm_preserved() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, generator=g)
    b = torch.randn(16, generator=g)
    b = b * a.norm() / b.norm()  # equal norms
    path = slerp(a, b, torch.linspace(0, 1, 11))
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(11))


def test_slerp_orthogonal_unit_vectors_midpoint() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0]) / math.sqrt(2))


@pytest.mark.parametrize("b", [torch.tensor([2.0, 4.0]), torch.tensor([-1.0, -2.0]), torch.zeros(2)])
def test_slerp_parallel_or_zero_falls_back_to_lerp(b: torch.Tensor) -> None:
    a = torch.tensor([1.0, 2.0])
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path, lerp(a, b, t))


# -- traversal maths -------------------------------------------------------------------------------------
def test_traversal_latents_vary_one_dimension_per_row() -> None:
    z0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    z = traversal_latents(z0, [2, 0], span=3.0, steps=7)
    assert z.shape == (2, 7, 4)
    for row, dim in enumerate([2, 0]):
        other = [d for d in range(4) if d != dim]
        assert torch.equal(z[row][:, other], z0[other].expand(7, 3))
        torch.testing.assert_close(z[row, :, dim], torch.linspace(-3, 3, 7))


# -- sample ----------------------------------------------------------------------------------------------
def test_sample_shape_seeding_and_files(model_dir: Path, tmp_path: Path) -> None:
    x = sample(model_dir, 6, seed=1, out=tmp_path / "s.png")
    assert x.shape == (6, 1, 8, 8) and x.dtype == np.float32
    assert ((x >= 0) & (x <= 1)).all()
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), x)
    assert_captioned_grid(tmp_path / "s.png", 3, 2)  # ceil(sqrt(6)) = 3 per row, and a title
    np.testing.assert_array_equal(sample(model_dir, 6, seed=1), x)
    assert not np.array_equal(sample(model_dir, 6, seed=2), x)


def test_sample_draw_decodes_seeded_draws_of_px_z_at_the_same_z(digits_model: VAE) -> None:
    n = 4000
    means = sample(digits_model, n, seed=3)
    state = torch.get_rng_state()
    draws = sample(digits_model, n, seed=3, draw=True)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state untouched
    np.testing.assert_array_equal(sample(digits_model, n, seed=3, draw=True), draws)  # seeded
    assert set(np.unique(draws)) == {0.0, 1.0}  # Bernoulli draws, not probabilities
    # the draws are Bernoulli(p) of the very z the means decode: their mean error is 0 within 5 standard errors
    standard_error = np.sqrt((means * (1 - means)).sum()) / means.size
    assert abs((draws - means).mean()) < 5 * standard_error
    # pixel by pixel, draws follow their own p: regressed on p, the slope is 1 (within 5 standard errors)
    p, d = means.ravel().astype(np.float64), draws.ravel().astype(np.float64)
    slope = np.cov(d, p)[0, 1] / p.var(ddof=1)
    slope_error = np.sqrt((p * (1 - p)).mean() / (p.var() * p.size))
    assert abs(slope - 1.0) < 5 * slope_error, (slope, slope_error)


def test_sample_temperature_zero_limit_is_prior_mean(digits_model: VAE) -> None:
    cold = sample(digits_model, 3, temperature=1e-8)
    expected = digits_model.decode(torch.zeros(1, LATENT)).mean.detach().numpy()
    np.testing.assert_allclose(cold, np.repeat(expected, 3, axis=0), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"n": 0}, "n must be"), ({"n": 2.5}, r"n must be at least 1 \(a whole number"),
                          ({"seed": None}, "seed must be an integer"), ({"temperature": 0.0}, "temperature")]
)
def test_sample_bad_arguments(digits_model: VAE, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        sample(digits_model, **kwargs)


def test_sample_out_must_be_png(digits_model: VAE, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"\.png"):
        sample(digits_model, 2, out=tmp_path / "s.jpg")
    (tmp_path / "s.npy").mkdir()  # the second file cannot be written: the first is not written either
    with pytest.raises(OutputError, match=r"s\.npy': it is a directory"):
        sample(digits_model, 2, out=tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_sample_real_valued_model_writes_heat_map(table_model: VAE, tmp_path: Path) -> None:
    x = sample(table_model, 4, out=tmp_path / "t.png")
    assert x.shape == (4, 5)
    assert png_size(tmp_path / "t.png")[0] == 800


# -- reconstruct -----------------------------------------------------------------------------------------
def test_reconstruct_first_examples(digits_model: VAE, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    originals, recon = reconstruct(digits_model, n=4, out=tmp_path / "r.png")
    assert originals.shape == recon.shape == (4, 1, 8, 8)
    expected = digits_model.reconstruct(torch.from_numpy(originals)).numpy()
    np.testing.assert_allclose(recon, expected, atol=1e-6)
    # digits' test split is its last 297 images; values are divided by 16.
    np.testing.assert_allclose(originals[0, 0], load_digits().images[-297] / 16.0)
    assert_captioned_grid(tmp_path / "r.png", 4, 2)  # originals row over reconstructions row, captioned


def test_interleave_rows_alternates_and_pads() -> None:
    a, b = np.zeros((3, 1)), np.ones((3, 1))
    rows = interleave_rows(a, b, width=2)  # [a0 a1][b0 b1][a2 --][b2 --]
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 1, 1, 0, np.nan, 1, np.nan])


def test_reconstruct_needs_preprocessing() -> None:
    bare = VAE(ModelConfig(latent_dim=2, hidden_dims=(4,)), (1, 8, 8))
    with pytest.raises(ConfigError, match="preprocessing"):
        reconstruct(bare)


# -- interpolate -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolate_ends_decode_posterior_means(digits_model: VAE, method: str, tmp_path: Path) -> None:
    x = interpolate(
        digits_model, "digits", index_a=2, index_b=5, steps=5, method=method, out=tmp_path / "i.png"
    )
    assert x.shape == (5, 1, 8, 8)
    originals, _ = reconstruct(digits_model, n=6)
    with torch.no_grad():
        ends = digits_model.decode(digits_model.encode(torch.from_numpy(originals[[2, 5]])).mean).mean.numpy()
    np.testing.assert_allclose(x[[0, -1]], ends, atol=1e-5)
    assert_captioned_grid(tmp_path / "i.png", 5, 1)  # a title and the end points' indices above the strip


def test_interpolate_errors(digits_model: VAE) -> None:
    with pytest.raises(ConfigError, match="index_b=297 is out of range"):
        interpolate(digits_model, index_b=297)
    with pytest.raises(ConfigError, match="linear, spherical"):
        interpolate(digits_model, method="cubic")
    with pytest.raises(ConfigError, match="steps"):
        interpolate(digits_model, steps=1)


# -- traverse --------------------------------------------------------------------------------------------
def test_traverse_from_prior_mean(digits_model: VAE, tmp_path: Path) -> None:
    x = traverse(digits_model, dims=[1, 3], steps=5, span=2.0, out=tmp_path / "t.png")
    assert x.shape == (2, 5, 1, 8, 8)
    z = traversal_latents(torch.zeros(LATENT), [1, 3], 2.0, 5).reshape(-1, LATENT)
    with torch.no_grad():
        expected = digits_model.decode(z).mean.numpy().reshape(2, 5, 1, 8, 8)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert_captioned_grid(tmp_path / "t.png", 5, 2)  # a row per dimension, values above, dimensions left


def test_traverse_from_example_defaults_to_all_small_latents(digits_model: VAE) -> None:
    x = traverse(digits_model, "digits", index=3, steps=3)
    assert x.shape == (LATENT, 3, 1, 8, 8)


def test_traverse_bad_dims(digits_model: VAE) -> None:
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        traverse(digits_model, dims=[LATENT])


# -- embed -----------------------------------------------------------------------------------------------
def test_embed_arrays_and_npy(model_dir: Path, digits_model: VAE, tmp_path: Path) -> None:
    mu, log_var = embed(str(model_dir), batch_size=100, out=tmp_path / "codes.npy")
    assert mu.shape == log_var.shape == (297, LATENT)
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), mu)
    np.testing.assert_array_equal(np.load(tmp_path / "codes_logvar.npy"), log_var)
    originals, _ = reconstruct(digits_model, n=3)
    with torch.no_grad():
        qz_x = digits_model.encode(torch.from_numpy(originals))
    np.testing.assert_allclose(mu[:3], qz_x.mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(log_var[:3], qz_x.variance.log().numpy(), atol=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_embed_tables(digits_model: VAE, tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    mu, log_var = embed(digits_model, out=tmp_path / f"codes{suffix}")
    frame = (
        pd.read_csv(tmp_path / "codes.csv")
        if suffix == ".csv"
        else pd.read_parquet(tmp_path / "codes.parquet")
    )
    expected = [f"mu_{i}" for i in range(LATENT)] + [f"logvar_{i}" for i in range(LATENT)] + ["label"]
    assert list(frame.columns) == expected and len(frame) == 297
    np.testing.assert_allclose(frame[[f"logvar_{i}" for i in range(LATENT)]].to_numpy(), log_var, rtol=1e-5)
    np.testing.assert_allclose(frame[[f"mu_{i}" for i in range(LATENT)]].to_numpy(), mu, rtol=1e-5, atol=1e-7)
    assert set(frame["label"]) <= set(range(10))


def test_embed_unknown_suffix(digits_model: VAE, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"\.npy, \.csv, \.parquet"):
        embed(digits_model, out=tmp_path / "codes.txt")
    (tmp_path / "c_logvar.npy").mkdir()
    with pytest.raises(OutputError, match=r"c_logvar\.npy': it is a directory"):
        embed(digits_model, out=tmp_path / "c.npy")
    assert not (tmp_path / "c.npy").exists()


def test_a_new_modality_writes_through_its_registered_writer(digits_model: VAE, tmp_path: Path, monkeypatch) -> None:
    """The verbs hand their examples to the writer of the model's modality: registering one is all a new kind of
    data needs (here a text writer for a model that says its examples are "text")."""
    from vaekit.apps.writers import WRITERS, Layout

    written: list[tuple[tuple[int, ...], Layout]] = []

    class TextWriter:
        suffixes = (".txt",)

        def write(self, model, x, out, layout):
            written.append((x.shape, layout))
            out.write_text("\n".join(" ".join(f"{v:.2f}" for v in row.ravel()[:4]) for row in x))
            return out

    monkeypatch.setitem(WRITERS._items, "text-test", TextWriter())
    monkeypatch.setattr(type(digits_model), "modality", lambda self: "text-test")
    sample(digits_model, 3, out=tmp_path / "s.txt")
    assert written[0][0] == (3, 1, 8, 8) and "samples" in written[0][1].title
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 3
    with pytest.raises(OutputError, match=r"\.txt"):
        sample(digits_model, 3, out=tmp_path / "s.png")


def test_grids_are_captioned(digits_model: VAE, tmp_path: Path) -> None:
    """Reconstructions say which rows are originals, traversals which dimension and value, interpolations where
    the end points are: the captions are drawn (dark pixels in the margins outside the grid)."""
    reconstruct(digits_model, "digits", n=4, out=tmp_path / "r.png")
    traverse(digits_model, dims=[0, 2], steps=5, span=2.0, out=tmp_path / "t.png")
    interpolate(digits_model, "digits", index_a=1, index_b=2, steps=4, out=tmp_path / "i.png")
    for name, cols, rows, left, top in [("r", 4, 2, True, False), ("t", 5, 2, True, True), ("i", 4, 1, False, True)]:
        with Image.open(tmp_path / f"{name}.png") as image:
            pixels = np.asarray(image.convert("L"))
        height, width = pixels.shape
        grid_w, grid_h = cols * 34 + 2, rows * 34 + 2
        assert pixels[: height - grid_h].min() < 128  # a title (and column captions) above the grid
        if left:
            assert width > grid_w and pixels[height - grid_h :, : width - grid_w].min() < 128  # row captions
        if top:
            assert height - grid_h == 30  # title line + a line of column captions


def test_embed_writes_csv_without_pandas(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The main job's install has no pandas; `vaekit embed --out codes.csv` (its --help's first example) works."""
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails, as without the extra
    mu, _ = embed(model_dir, "digits", out=tmp_path / "codes.csv")
    lines = (tmp_path / "codes.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["mu_0", "mu_1"] and lines[0].endswith(",label") and len(lines) == len(mu) + 1
    first = lines[1].split(",")
    np.testing.assert_array_equal(np.array(first[: mu.shape[1]], dtype=np.float32), mu[0])  # exact round trip
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(OutputError, match=r"pip install 'vaekit\[tables\]' \(in a source checkout: pip install -e"):
        embed(model_dir, "digits", out=tmp_path / "codes.parquet")
    assert not (tmp_path / "codes.parquet").exists()

"""Directories of shards, streamed: the split over ranks and loader workers, Parquet tables, bad shards, resume,
and one epoch over a dataset several times larger than a memory limit the training process runs under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.config import DataConfig
from vaekit.data import load_data, load_examples
from vaekit.data.shards import ShardedExamples
from vaekit.errors import DataError
from vaekit.training.loop import train


def _id_shards(folder: Path, sizes: list[int], features: int = 6, seed: int = 0) -> Path:
    """uint8 .npy shards whose first two values spell each example's id (base 256)."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    start = 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n)
        x = rng.integers(0, 256, (n, features)).astype(np.uint8)
        x[:, 0], x[:, 1] = ids // 256, ids % 256
        np.save(folder / f"part-{i:03d}.npy", x)
        start += n
    return folder


def _ids(x: torch.Tensor) -> np.ndarray:
    values = np.rint(x.numpy().reshape(len(x), -1)[:, :2] * 255).astype(np.int64)
    return values[:, 0] * 256 + values[:, 1]


def _epoch(split: ShardedExamples, **kwargs: object) -> list[np.ndarray]:
    return [_ids(x) for x, _ in split.batches(32, **kwargs)]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return _id_shards(tmp_path_factory.mktemp("data") / "shards", [400, 1, 333, 250, 517])  # 1,501 examples


def test_a_directory_of_npy_shards_loads_as_a_stream(shards):
    bundle = load_data(DataConfig(source=str(shards), val_fraction=0.1))
    assert isinstance(bundle.train, ShardedExamples) and isinstance(bundle.val, ShardedExamples)
    assert bundle.preprocessing.shape == (6,) and bundle.preprocessing.kind == "unit"
    assert bundle.preprocessing.scale == 255.0 and bundle.test is None
    val = np.concatenate(_epoch(bundle.val, shuffle=False))
    train_ids = np.concatenate(_epoch(bundle.train, epoch=0))
    assert len(val) == len(bundle.val) == 150 and len(train_ids) == len(bundle.train) == 1351
    assert sorted([*val, *train_ids]) == list(range(1501))  # the split covers every example once


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_read_disjoint_parts_that_cover_the_epoch(shards, world_size, num_workers):
    train_set = load_data(DataConfig(source=str(shards))).train
    n = len(train_set)
    per_rank = []
    for rank in range(world_size):
        batches = _epoch(train_set, epoch=3, rank=rank, world_size=world_size, num_workers=num_workers,
                         shuffle_buffer=100)
        assert len(batches) == train_set.num_batches(32, world_size, num_workers)  # the same on every rank
        per_rank.append(np.concatenate(batches))
    assert {len(ids) for ids in per_rank} == {n // world_size}
    together = np.concatenate(per_rank)
    assert len(np.unique(together)) == len(together) == n - n % world_size  # drops the same n % N as in memory
    again = np.concatenate(_epoch(train_set, epoch=3, rank=0, world_size=world_size, num_workers=num_workers,
                                  shuffle_buffer=100))
    assert np.array_equal(again, per_rank[0])  # the order is a function of (seed, epoch, rank, worker)


def test_every_epoch_is_reshuffled_and_the_buffer_mixes_across_shards(shards):
    train_set = load_data(DataConfig(source=str(shards))).train
    first = np.concatenate(_epoch(train_set, epoch=0, shuffle_buffer=200))
    second = np.concatenate(_epoch(train_set, epoch=1, shuffle_buffer=200))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    assert np.mean(np.diff(first) == 1) < 0.05  # not read in file order
    in_order = np.concatenate(_epoch(train_set, shuffle=False))
    assert np.all(np.diff(in_order) > 0)


def test_validation_is_split_over_ranks_without_dropping(shards):
    val = load_data(DataConfig(source=str(shards))).val
    parts = [np.concatenate(_epoch(val, rank=r, world_size=4, shuffle=False)) for r in range(4)]
    assert sum(len(p) for p in parts) == len(val) and len(np.unique(np.concatenate(parts))) == len(val)


def test_parquet_shards_with_labels_and_standardization(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder = tmp_path / "tables"
    folder.mkdir()
    rng = np.random.default_rng(1)
    frames = []
    for i, n in enumerate([120, 80, 200]):
        frame = pd.DataFrame({"a": rng.normal(5, 2, n), "b": rng.integers(0, 100, n), "label": rng.integers(0, 3, n)})
        frame.to_parquet(folder / f"part-{i}.parquet", row_group_size=50)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    bundle = load_data(DataConfig(source=str(folder), label_column="label", val_fraction=0.1))
    prep = bundle.preprocessing
    assert prep.kind == "real" and prep.columns == ("a", "b") and prep.label_column == "label"
    x, y = next(iter(bundle.train.batches(400, shuffle=False)))
    assert x.shape == (len(bundle.train), 2) and y is not None and y.dtype == torch.int64
    raw = x.numpy() * np.asarray(prep.std, np.float32) + np.asarray(prep.mean, np.float32)
    train_rows = np.array([np.flatnonzero((np.abs(table["a"] - a) < 1e-4) & (table["b"] == round(b)))[0]
                           for a, b in raw])
    assert np.array_equal(y.numpy(), table["label"].to_numpy()[train_rows])  # labels travel with their rows
    assert prep.mean[0] == pytest.approx(table["a"].to_numpy()[train_rows].mean(), rel=1e-4)  # fitted on train

    result = train(_tiny("tabular", folder, "data.label_column=label", "model.num_classes=3",
                         "model.likelihood=gaussian"), tmp_path / "run")
    assert result.model.num_classes == 3 and np.isfinite(result.metrics[-1]["val_elbo"])


@pytest.mark.parametrize("scaling", ["robust", "asinh"])
def test_shards_are_scaled_as_data_scaling_says_like_in_memory_data(tmp_path, monkeypatch, scaling):
    """A folder of shards was always standardized, whatever data.scaling said."""
    from vaekit.data import scaling as scaling_module
    from vaekit.data.scaling import fit_scaling

    monkeypatch.setattr(scaling_module, "MAX_QUANTILE_ROWS", 50)  # an even sample of every 9th of the 405 rows
    folder = tmp_path / "heavy"
    folder.mkdir()
    rng = np.random.default_rng(3)
    parts = [np.stack([rng.lognormal(0, 2, n), rng.normal(size=n), np.zeros(n)], 1).astype(np.float32)
             for n in (120, 80, 205)]
    parts[1][7, 1] = 1e6  # far beyond the reach limit
    for i, part in enumerate(parts):
        np.save(folder / f"part-{i}.npy", part)
    bundle = load_data(DataConfig(source=str(folder), val_fraction=0.0, scaling=scaling))
    prep = bundle.preprocessing
    x = np.concatenate(parts)
    centre, spread = fit_scaling(x, np.arange(len(x)), 1.0, scaling)
    assert prep.scaling == scaling
    np.testing.assert_array_equal(prep.mean, centre)  # the same sampled rows: the same quartiles
    np.testing.assert_allclose(prep.std, spread, rtol=1e-9)
    assert prep.std[0] != pytest.approx(float(x[:, 0].std()), rel=0.1)  # not the standard deviation
    batch, _ = next(iter(bundle.train.batches(len(x), shuffle=False)))
    expected = (x - np.asarray(centre)) / np.asarray(spread)
    expected = np.arcsinh(expected) if scaling == "asinh" else expected
    np.testing.assert_allclose(np.sort(batch.numpy(), 0), np.sort(expected, 0), rtol=1e-4, atol=1e-5)


def test_streamed_standardization_of_columns_far_from_zero(tmp_path):
    # E[x^2] - E[x]^2 cancels catastrophically for a column near 1e8 or a constant 1000.1; sums of x - (first row)
    # do not: the stored spreads are numpy's, a constant column's 1
    folder = tmp_path / "far"
    folder.mkdir()
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(0, 1, 3000), 1e8 + rng.normal(0, 1, 3000), np.full(3000, 1000.1)], 1)
    for i in range(3):
        np.save(folder / f"p{i}.npy", x[i * 1000 : (i + 1) * 1000])
    prep = load_data(DataConfig(source=str(folder), val_fraction=0.0)).preprocessing
    np.testing.assert_allclose(prep.std[:2], x[:, :2].std(0), rtol=1e-6)
    np.testing.assert_allclose(prep.mean, x.mean(0), rtol=1e-12)
    assert prep.std[2] == 1.0


def _tiny(preset: str, source: Path, *overrides: str):
    from vaekit.config import resolve_config
    from vaekit.presets import get_preset

    return resolve_config(get_preset(preset), overrides=[
        f"data.source={source}", "model.latent_dim=2", "model.hidden_dims=[8]", "train.epochs=2",
        "train.batch_size=64", "train.device=cpu", "train.num_images=4", *overrides])


def test_resume_over_shards_is_bit_exact(shards, tmp_path):
    config = _tiny("digits", shards, "data.binarize=dynamic", "data.shuffle_buffer=128")
    train(config, tmp_path / "a")
    train(_tiny("digits", shards, "data.binarize=dynamic", "data.shuffle_buffer=128", "train.epochs=1"),
          tmp_path / "b")
    train(config, tmp_path / "b", resume=True)
    for sub in ("last", "best"):
        a, b = (load_file(str(tmp_path / r / sub / "model.safetensors")) for r in ("a", "b"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def _save(path: Path, shape: tuple[int, ...], value: float = 0.0) -> None:
    np.save(path, np.full(shape, value))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (_save(d / "a.npy", (4, 3)), _save(d / "b.npy", (4, 5))), "write every shard"),
        (lambda d: (_save(d / "a.npy", (4, 3)), (d / "b.parquet").write_bytes(b"x")), "mixes .npy and .parquet"),
        (lambda d: (_save(d / "a.npy", (4, 3)), _save(d / "b.npy", (4, 3), np.nan)), "b.npy holds 12 NaN"),
        (lambda d: (d / "a.npy").write_bytes(b"\x93NUMPY junk"), "a.npy"),
        (lambda d: _save(d / "a.npy", (0, 3)), "0 examples"),
    ],
    ids=["shapes", "mixed", "nan", "corrupt", "empty"],
)
def test_bad_shards_fail_with_a_message_naming_them(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_data(DataConfig(source=str(tmp_path)))


def test_a_shard_directory_is_for_training_only(shards):
    with pytest.raises(DataError, match="only training streams; pass one shard file"):
        load_examples(str(shards), load_data(DataConfig(source=str(shards))).preprocessing)
    one = load_examples(str(shards / "part-000.npy"), load_data(DataConfig(source=str(shards))).preprocessing)
    assert len(one) == 400


# -- one epoch under a memory limit ---------------------------------------------------------------------------
CAP_MB = 128
FEATURES, SHARDS, ROWS = 1024, 8, 65536  # 8 shards of 64 MB: 512 MB on disk, 4 times the limit
# Batches of 256 rows (1 MB of float32 per tensor): a step's tensors, the shuffle buffer and one read need about
# 64 MB above the warm-up's footprint (measured: a 64 MB limit passes, 48 MB fails), half the limit. With
# batches of 2,048 (8 MB per tensor) they needed 96-112 MB, and glibc's caching of freed blocks made the
# test fail on one CI machine in 2026-12: the headroom must not depend on the allocator's history.
MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np
from vaekit.config import resolve_config
from vaekit.presets import get_preset

from vaekit.training import loop as train_module
original, seen, anon = train_module.compute_loss, [], []

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def loss(model, x, y, config, step, kl_weight):
    values = np.rint(x.numpy()[:, :3] * 255).astype(np.int64)
    seen.append(values[:, 0] * 65536 + values[:, 1] * 256 + values[:, 2])
    anon.append(status("RssAnon"))  # resident private memory; peak RSS would also count library code pages
    return original(model, x, y, config, step, kl_weight)

def run(source, out):
    config = resolve_config(get_preset("digits"), overrides=[
        f"data.source={source}", "data.val_fraction=0.01", "data.shuffle_buffer=4096", "model.latent_dim=2",
        "model.hidden_dims=[8]", "train.epochs=1", "train.batch_size=256", "train.device=cpu", "train.num_images=4"])
    return train_module.train(config, out)

big, small, out, cap, data_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) << 20, int(sys.argv[5])
# Warm up on one small shard of the same shape: imports, lazy initialisation, one training step's tensors and
# the figures cost memory whatever the data's size; what is measured next is what grows with it.
run(small, out + "-warm-up")
# RLIMIT_DATA bounds the private writable memory (heap and anonymous maps: every numpy or torch array) the
# process may add. RLIMIT_AS is no use: torch reserves far more address space than it ever touches.
limit = status("VmData") + cap
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
anon_before = status("RssAnon")
train_module.compute_loss = loss
result = run(big, out)
# The limit is enforced: whatever the process freed during the run (how much depends on the allocator, and so on
# the machine's load), an allocation past the limit is refused. The run above never had more than `cap` to use.
# A new private anonymous mapping is always counted against the limit (np.ones could instead reuse heap memory the
# allocator kept after the run, and succeed without asking the kernel for anything).
import mmap
headroom = limit - status("VmData")
try:
    mmap.mmap(-1, headroom + (16 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS).close()
    refused = False
except OSError:
    refused = True
seen = np.concatenate(seen)
print(json.dumps({"anon_growth": max(anon) - anon_before, "refused": refused, "n_seen": len(seen),
                  "unique": len(np.unique(seen)), "min": int(seen.min()), "max": int(seen.max()),
                  "val_elbo": result.metrics[-1]["val_elbo"]}))
"""


def _write_id_shards(folder: Path, shards: int, rows: int) -> None:
    """uint8 shards of FEATURES values per example, the first three spelling its id (base 256)."""
    folder.mkdir()
    for i in range(shards):
        ids = np.arange(i * rows, (i + 1) * rows)
        x = np.random.default_rng(i).integers(0, 256, (rows, FEATURES), dtype=np.uint8)
        x[:, 0], x[:, 1], x[:, 2] = ids >> 16, (ids >> 8) & 255, ids & 255
        np.save(folder / f"part-{i:03d}.npy", x)


def test_one_epoch_over_data_larger_than_the_memory_limit(tmp_path):
    _write_id_shards(tmp_path / "big", SHARDS, ROWS)
    _write_id_shards(tmp_path / "small", 1, 4096)
    data_bytes = SHARDS * ROWS * FEATURES
    assert data_bytes >= 4 * (CAP_MB << 20)
    (tmp_path / "script.py").write_text(textwrap.dedent(MEMORY_SCRIPT))
    command = [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "big"), str(tmp_path / "small"),
               str(tmp_path / "run"), str(CAP_MB), str(data_bytes)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["refused"], "the memory limit does not bind"
    assert report["anon_growth"] < CAP_MB << 20, report
    n_val = round(SHARDS * ROWS * 0.01)  # of all rows, shared among the shards
    assert report["n_seen"] == report["unique"] == SHARDS * ROWS - n_val  # every train example exactly once
    assert report["min"] >= 0 and report["max"] < SHARDS * ROWS and np.isfinite(report["val_elbo"])


def test_a_later_parquet_shard_with_text_is_a_one_line_error(tmp_path):
    pd = pytest.importorskip("pandas")
    folder = tmp_path / "mixed"
    folder.mkdir()
    pd.DataFrame({"a": np.arange(50.0), "b": np.ones(50)}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({"a": np.arange(50.0), "b": ["abc"] * 50}).to_parquet(folder / "part-1.parquet")
    with pytest.raises(DataError, match=r"cannot read row group 0 of shard .*part-1\.parquet.*columns numbers"):
        load_data(DataConfig(source=str(folder), val_fraction=0.0))  # read when the scaling is fitted


def test_many_small_shards_hold_out_the_fraction_of_all_rows(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    for i in range(60):
        np.save(folder / f"p{i:02d}.npy", np.random.default_rng(i).random((4, 3)).astype(np.float32))
    for fraction, held in ((0.1, 24), (0.3, 72)):  # round(240 x fraction), not a round() per shard of 4
        bundle = load_data(DataConfig(source=str(folder), val_fraction=fraction))
        assert (len(bundle.train), len(bundle.val)) == (240 - held, held)

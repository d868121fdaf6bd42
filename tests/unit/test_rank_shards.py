"""Per-rank shards of an epoch's permutation, the global-batch rule, the CUDA check and the --nproc shortcut."""

from __future__ import annotations

import pytest
import torch

from vaekit.cli.main import main
from vaekit.cli.train import _without_nproc
from vaekit.errors import ConfigError
from vaekit.training import distributed as distributed
from vaekit.training.loop import resolve_device


@pytest.mark.parametrize("n", [1, 7, 100, 1350])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_shards_are_disjoint_equal_and_cover_the_epoch(n, world_size):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [distributed.shard(perm, rank, world_size) for rank in range(world_size)]
    assert {len(s) for s in shares} == {n // world_size}  # every rank takes as many steps
    together = torch.cat(shares)
    assert len(set(together.tolist())) == len(together)  # disjoint
    assert sorted(together.tolist()) == sorted(perm[: n - n % world_size].tolist())  # all but the last n % N
    if world_size == 1:
        assert torch.equal(shares[0], perm)  # one process: exactly the one-process order


def test_rank_batches_split_each_global_batch():
    """Step i of N ranks covers the global batch perm[i*B:(i+1)*B] of one process: the same update on average."""
    perm = torch.randperm(1350, generator=torch.Generator().manual_seed(0))
    world_size, batch_size = 2, 64
    local = distributed.local_batch_size(batch_size, world_size)
    shares = [distributed.shard(perm, rank, world_size) for rank in range(world_size)]
    for i in range(len(shares[0]) // local):
        step = torch.cat([s[i * local : (i + 1) * local] for s in shares])
        assert sorted(step.tolist()) == sorted(perm[i * batch_size : (i + 1) * batch_size].tolist())


def test_reshuffled_every_epoch_from_the_shared_generator():
    generator = torch.Generator().manual_seed(1)
    first = distributed.shard(torch.randperm(100, generator=generator), 0, 2)
    second = distributed.shard(torch.randperm(100, generator=generator), 0, 2)
    assert not torch.equal(first, second)
    replay = torch.Generator().manual_seed(1)  # another rank with the same seed sees the same permutations
    assert torch.equal(distributed.shard(torch.randperm(100, generator=replay), 0, 2), first)


def test_global_batch_must_split_evenly():
    assert distributed.local_batch_size(256, 4) == 64
    assert distributed.local_batch_size(64, 1) == 64
    with pytest.raises(ConfigError, match=r"batch_size=100 is the global batch.*train\.batch_size=99 or 102"):
        distributed.local_batch_size(100, 3)


def test_rank_seeds_differ_and_rank0_keeps_the_seed():
    assert distributed.rank_seed(5, 0) == 5
    assert len({distributed.rank_seed(5, r) for r in range(4)}) == 4


def test_one_process_context_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.init_context(torch.device("cpu"))
    assert not ctx.distributed and ctx.is_main and not ctx.owns_group
    assert distributed.all_reduce_sum(ctx, [1.5, 2]) == [1.5, 2.0]
    assert distributed.gather_tensors(ctx, {"a": torch.ones(2)})[0]["a"].tolist() == [1.0, 1.0]


def test_world_size_without_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="launch with torchrun"):
        distributed.init_context(torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaekit: error: train.device=cuda") and len(err.splitlines()) == 1


def test_nproc_option_is_stripped_from_the_relaunched_command():
    argv = ["train", "--nproc", "2", "--out", "r", "train.lr=0.01", "--npr=3", "--epochs", "2"]
    assert _without_nproc(argv) == ["train", "--out", "r", "train.lr=0.01", "--epochs", "2"]


def test_nproc_checks_the_global_batch_before_starting_processes(tmp_path, capsys):
    code = main(["train", "--nproc", "3", "--out", str(tmp_path / "run"), "train.batch_size=64"])
    assert code == 2 and "must split evenly over 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_nproc_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under torchrun leave it out"):
        distributed.launch(2, ["train"])

"""Data-parallel training in real processes (gloo on CPU): ``vaekit train --nproc 2`` and ``torchrun``.

Each launch starts two Python processes that import torch (a few seconds on two cores), so the runs are few and
shared: one 4-epoch run for the files, the ELBO and as the resume reference (and the one-node reference of the
two-node run), one run that is stopped after 2 epochs and resumed, one run on two torchrun "nodes" on this machine,
and one torchrun script that streams shards through two workers per rank and injects a non-finite loss on one rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaekit.config import resolve_config
from vaekit.presets import get_preset
from vaekit.training.loop import train

TIMEOUT = 1200  # a guard against hangs only: generous, so a loaded machine's slowness never fails a run
RUN_FILES = {"config.json", "metrics.jsonl", "loss_curve.png", "samples.png", "reconstructions.png",
             "best", "last", "state"}
TINY = ["--device", "cpu", "--quiet", "model.latent_dim=3", "model.hidden_dims=[16]", "train.batch_size=64",
        "train.num_images=4", "data.binarize=dynamic"]
# Validation ELBO after 4 epochs of this setup (nats): one process, seeds 0..2, ranges over -34.8..-36.2; a wrong
# global batch (128 per update) gives about -40.6 and a doubled learning rate about -30.5. Two processes with
# the same global batch must land within this many nats of one process with the same seed.
ELBO_TOLERANCE = 2.0


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, breadth first (Linux ``/proc``; none found elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        found += below
        todo += below
    return found


def _kill_all(process: subprocess.Popen[str]) -> None:
    """SIGKILL a launcher's process group and every process below it. torchrun starts each rank in a session of its
    own, so the launcher's group alone would leave the ranks running, orphaned; they are found before any kill."""
    below = _descendants(process.pid)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _env() -> dict[str, str]:
    """One thread per rank; a rank that crashes prints its Python stack (faulthandler) into the launcher's log."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in its own session; on a timeout kill all of it (the launcher and every rank it started)."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env(), start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_all(process)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} hung for {TIMEOUT} s: {err[-2000:]}")
    assert process.returncode == 0, out + err
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _vaekit(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "vaekit", *argv], cwd=cwd)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "train_time_s"} for line in lines]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    result = _vaekit("train", "--nproc", "2", "--out", "run", "--epochs", "4", *TINY, cwd=root)
    return root / "run", result


def test_two_processes_write_one_run(two_process_run):
    run, result = two_process_run
    assert {p.name for p in run.iterdir()} == RUN_FILES  # nothing else, no leftovers of a second writer
    assert result.stdout.count("run directory:") == 1  # only rank 0 prints
    assert [r["epoch"] for r in _records(run)] == [1, 2, 3, 4]
    assert _records(run)[-1]["step"] == 4 * 22  # 1,350 examples: 675 per rank, 32 per step, 22 steps per epoch
    state = load_file(str(run / "state" / "state.safetensors"))
    assert {"rng.torch", "rng.rank1.torch", "rng.binarize", "rng.rank1.binarize"} <= set(state)
    assert not torch.equal(state["rng.torch"], state["rng.rank1.torch"])  # each rank has its own noise
    assert json.loads((run / "state" / "state.json").read_text())["counters"]["world_size"] == 2


def test_two_processes_reach_the_one_process_elbo(two_process_run, tiny_config, tmp_path):
    run, _ = two_process_run
    config = tiny_config("train.epochs=4", "data.binarize=dynamic")
    one = train(config, tmp_path / "one").metrics[-1]["val_elbo"]
    two = _records(run)[-1]["val_elbo"]
    assert abs(two - one) < ELBO_TOLERANCE, (one, two)


def test_two_process_resume_is_bit_exact(two_process_run, tmp_path):
    reference, _ = two_process_run
    _vaekit("train", "--nproc", "2", "--out", "run", "--epochs", "2", *TINY, cwd=tmp_path)
    _vaekit("train", "--nproc", "2", "--out", "run", "--resume", "--epochs", "4", "--quiet", cwd=tmp_path)
    run = tmp_path / "run"
    for sub in ("last", "best"):
        a, b = _weights(reference / sub), _weights(run / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    assert _records(run) == _records(reference)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_together(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start ``commands`` at once, each in its own session, and wait for all of them. When one fails or the time runs
    out, kill every one with all its ranks (:func:`_kill_all`): a node left alone would wait for its peer until
    torch's own timeouts (rendezvous join 10 min, collectives 10 min). Output goes to files (a pipe could fill)."""
    processes: list[subprocess.Popen[str]] = []
    logs = [(cwd / f"launcher{i}.out", cwd / f"launcher{i}.err") for i in range(len(commands))]
    deadline, timed_out = time.monotonic() + TIMEOUT, False
    try:
        for command, (out, err) in zip(commands, logs, strict=True):
            with out.open("w") as stdout, err.open("w") as stderr:
                processes.append(subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, text=True,
                                                  env=_env(), start_new_session=True))
        while None in (codes := [p.poll() for p in processes]) and not any(codes):  # poll every one, each time
            timed_out = time.monotonic() > deadline
            if timed_out:
                break
            time.sleep(0.2)
    finally:  # also when the test itself is interrupted
        if any(code is None or code for code in [p.poll() for p in processes]):  # a failure or a hang: end all
            for process in processes:
                _kill_all(process)
    results = [subprocess.CompletedProcess(c, p.returncode, out.read_text(), err.read_text())
               for c, p, (out, err) in zip(commands, processes, logs, strict=True)]
    report = "\n".join(f"{' '.join(r.args)} -> {r.returncode}: {r.stderr[-2000:]}" for r in results)
    if timed_out:
        pytest.fail(f"hung for {TIMEOUT} s:\n{report}")
    assert all(r.returncode == 0 for r in results), report
    return results


def test_two_nodes_replay_one_node_with_two_processes(two_process_run, tmp_path):
    """Two torchrun launchers on 127.0.0.1 (``--nnodes 2``, one process each, c10d rendezvous) against one launcher
    with two processes (``--standalone``, the fixture): bit for bit the same run.

    Both setups start two processes with (RANK, WORLD_SIZE) = (0, 2) and (1, 2), and a vaekit process derives its
    data share, its seeds and whether it writes from that pair only (LOCAL_RANK, 0 on both nodes here, only picks a
    GPU). Each all-reduce sums two values, and a + b == b + a exactly in floating point. So every update, every
    metric and every saved tensor must be equal. c10d ignores ``--node-rank`` and hands out the ranks itself (sorted
    by address, then launcher pid), so either node may hold rank 0: the run directory is shared (one cwd here). The
    4 epochs are the fixture's, reused as the one-node reference.
    """
    reference, _ = two_process_run
    endpoint, run_id = f"127.0.0.1:{_free_port()}", f"vaekit-test-{os.getpid()}"
    nodes = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id,
         "--local-addr", "127.0.0.1", "-m", "vaekit", "train", "--out", "run", "--epochs", "4", *TINY]
        for node in (0, 1)
    ]
    results = _run_together(nodes, cwd=tmp_path)
    run = tmp_path / "run"
    assert sum(r.stdout.count("run directory:") for r in results) == 1  # one rank 0, on either node
    assert {p.name for p in run.iterdir()} == RUN_FILES  # one writer, nothing left over
    assert _records(run) == _records(reference)  # every metric of every epoch, exactly (not the clock)
    for sub in ("last", "best"):
        a, b = _weights(reference / sub), _weights(run / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    # weights, Adam moments and the RNG streams of both ranks: either run would resume into the same epochs
    a, b = (load_file(str(r / "state" / "state.safetensors")) for r in (reference, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "state" / "state.json").read_text())["counters"]["world_size"] == 2


SCRIPT = """
import gc, json, math, os, sys
import numpy as np
import torch
from vaekit.config import resolve_config
from vaekit.presets import get_preset

from vaekit.training import loop as train_module
gc.disable()  # the worst case for the check at the end: no automatic collection before the process exits
original, seen, rank = train_module.compute_loss, [], int(os.environ["RANK"])

def loss(model, x, y, config, step, kl_weight):
    values = np.rint(x.numpy().reshape(len(x), -1)[:, :2] * 255).astype(int)
    seen.append((values[:, 0] * 256 + values[:, 1]).tolist())  # the example ids stored in the data
    terms = original(model, x, y, config, step, kl_weight)
    if rank == 1 and step == 3:  # one rank only: every rank must skip this update together
        terms.loss = terms.loss * math.nan
    return terms

train_module.compute_loss = loss
config = resolve_config(get_preset("tabular"), overrides=[
    f"data.source={sys.argv[1]}", "data.num_workers=2", "data.shuffle_buffer=300", "data.standardize=false",
    "model.latent_dim=2", "model.hidden_dims=[8]", "train.epochs=2", "train.batch_size=64", "train.device=cpu",
    "train.num_images=4"])
result = train_module.train(config, sys.argv[2])
wrappers = sum(type(o).__name__ == "DistributedDataParallel" for o in gc.get_objects())  # no collection first
with open(os.path.join(sys.argv[3], f"rank{rank}.json"), "w") as handle:
    json.dump({"seen": seen, "skipped": result.skipped_steps, "metrics": result.metrics, "wrappers": wrappers,
               "group": torch.distributed.is_initialized()}, handle)
"""


def _id_shards(folder: Path, sizes: list[int], features: int = 6) -> Path:
    """uint8 .npy shards whose first two values spell each example's id (base 256)."""
    folder.mkdir()
    start = 0
    rng = np.random.default_rng(0)
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n)
        x = rng.integers(0, 256, (n, features)).astype(np.uint8)
        x[:, 0], x[:, 1] = ids // 256, ids % 256
        np.save(folder / f"part-{i:03d}.npy", x)
        start += n
    return folder


def test_torchrun_streams_shards_and_skips_a_bad_step_on_every_rank(tmp_path):
    data = _id_shards(tmp_path / "shards", [700, 350, 901, 450])  # 2,401 examples, 240 held out
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(tmp_path / "script.py"), str(data), str(tmp_path / "run"), str(tmp_path)]
    _run(command)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == 1
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # all-reduced: the same numbers on every rank
    assert {p.name for p in (tmp_path / "run").iterdir()} == RUN_FILES
    # train() destroyed its group with no DDP wrapper left to hold it: the group's threads were joined then, not
    # at the interpreter's exit, where a joinable thread aborts the process (distributed.close)
    assert [(r["wrappers"], r["group"]) for r in ranks] == [(0, False), (0, False)]

    config = resolve_config(get_preset("tabular"), overrides=[f"data.source={data}"])
    from vaekit.data import load_data

    n_train = len(load_data(config.data).train)
    steps = len(ranks[0]["seen"]) // 2
    assert len(ranks[1]["seen"]) == 2 * steps  # the same number of steps on both ranks
    epochs = []
    for epoch in (0, 1):
        per_rank = [[i for batch in r["seen"][epoch * steps : (epoch + 1) * steps] for i in batch] for r in ranks]
        together = per_rank[0] + per_rank[1]
        assert len(set(together)) == len(together)  # no example twice, within or across ranks
        assert len(together) == n_train - n_train % 2  # every train example once (an odd count drops one)
        epochs.append(together)
    assert epochs[0] != epochs[1]  # reshuffled


def test_bf16_autocast_and_compile_run_on_cpu(tiny_config, tmp_path, monkeypatch):
    """The GPU options work unchanged on a CPU. torch.compile runs with the eager backend here: Dynamo traces the
    real training step, but inductor's C++ code generation takes minutes on two cores (see the slow test)."""
    fp32 = train(tiny_config("train.epochs=1"), tmp_path / "fp32").metrics[-1]
    bf16 = train(tiny_config("train.epochs=1", "train.amp=bf16"), tmp_path / "bf16").metrics[-1]
    assert np.isfinite(bf16["val_elbo"]) and abs(bf16["val_elbo"] - fp32["val_elbo"]) < 1.0

    compiled = []
    real_compile = torch.compile

    def eager_compile(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    result = train(tiny_config("train.epochs=1", "train.compile=true"), tmp_path / "compiled")
    assert len(compiled) == 1 and np.isfinite(result.metrics[-1]["val_elbo"])
    assert result.metrics[-1]["val_elbo"] == pytest.approx(fp32["val_elbo"], abs=1e-3)  # same maths


@pytest.mark.slow
def test_compile_with_inductor_on_cpu(tiny_config, tmp_path):
    result = train(tiny_config("train.epochs=1", "train.compile=true"), tmp_path / "run")
    assert np.isfinite(result.metrics[-1]["val_elbo"])


def test_the_latent_density_of_a_two_process_run_is_fitted_to_every_training_code(tmp_path):
    _vaekit("train", "--nproc", "2", "--out", "run", "--epochs", "1", *TINY, "model.latent_density=1", cwd=tmp_path)
    metadata = json.loads((tmp_path / "run" / "best" / "metadata.json").read_text())
    assert metadata["latent_density"]["examples"] == 1350  # not rank 0's 675

"""The glibc allocator settings of :mod:`vaekit.allocator`, side by side with glibc's defaults.

Each measurement runs in a fresh child process, with ``VAEKIT_DEFAULT_MALLOC=1`` (glibc's defaults) or
without it (tuned), alternating default and tuned ``--rounds`` times so drift on a shared machine hits both
alike. A child builds the preset's model, times ``--steps`` Adam steps of the ELBO at batch 128 on random data
of the right kind (after 5 warm-up steps), then times ``vaekit.evaluate`` (IWAE, k = ``--k``, its default
chunking) on ``--examples`` such examples. Reported: medians and the tuned/default speed-up.

    python benchmarks/allocator.py [--presets mnist8-hvae binarized-mnist-hvae mnist-mlp] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from common import save, table


def child(preset: str, steps: int, k: int, examples: int) -> dict:
    from vaekit import objectives
    from vaekit.allocator import tune_allocator
    from vaekit.config import resolve_config
    from vaekit.evaluation.report import evaluate
    from vaekit.models import build_model
    from vaekit.presets import get_preset

    tuned = tune_allocator()
    torch.manual_seed(0)
    config = resolve_config(get_preset(preset))
    model = build_model(config.model, (1, 28, 28))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def data(n: int) -> torch.Tensor:
        if config.model.likelihood == "bernoulli":
            return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3))
        return torch.randint(0, 256, (n, 1, 28, 28)).float() / 255

    x = data(128)

    def step() -> None:
        loss = -objectives.elbo(model, x).elbo.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    step_ms = 1000 * (time.perf_counter() - start) / steps
    test = data(examples)
    start = time.perf_counter()
    evaluate(model.eval(), test, k=k, seed=0)
    return {"tuned": tuned, "step_ms": step_ms, "eval_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mnist8-hvae", "binarized-mnist-hvae", "mnist-mlp"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.k, args.examples)))
        return
    rows = []
    for preset in args.presets:
        runs: dict[str, list[dict]] = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            for mode in ("default", "tuned"):
                env = {k: v for k, v in os.environ.items() if k != "VAEKIT_DEFAULT_MALLOC"}
                if mode == "default":
                    env["VAEKIT_DEFAULT_MALLOC"] = "1"
                argv = [
                    sys.executable,
                    __file__,
                    "--child",
                    preset,
                    "--steps",
                    str(args.steps),
                    "--k",
                    str(args.k),
                    "--examples",
                    str(args.examples),
                ]
                out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                assert result["tuned"] == (mode == "tuned"), result
                runs[mode].append(result)
        median = {
            mode: {key: statistics.median(r[key] for r in rs) for key in ("step_ms", "eval_s")}
            for mode, rs in runs.items()
        }
        rows.append(
            {
                "preset": preset,
                "step_ms_default": median["default"]["step_ms"],
                "step_ms_tuned": median["tuned"]["step_ms"],
                "train_speedup": median["default"]["step_ms"] / median["tuned"]["step_ms"],
                f"eval_s_default_k{args.k}": median["default"]["eval_s"],
                f"eval_s_tuned_k{args.k}": median["tuned"]["eval_s"],
                "eval_speedup": median["default"]["eval_s"] / median["tuned"]["eval_s"],
            }
        )
    print(table(rows))
    path = save("allocator", {"args": vars(args), "rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()

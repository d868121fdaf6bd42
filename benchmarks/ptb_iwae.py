"""Issue 13: the sentence VAE's test NLL at a larger IWAE k, the work split over processes.

``benchmarks/ptb.py`` evaluates the VAE at k = ``--k`` (100 in BENCHMARKS.md: 21 minutes on one thread); k = 500
takes five times as long. This script evaluates the trained model again, every N-th test sentence in part I of N
(one thread each, so that N processes share the cores), writes each sentence's importance-weighted NLL, then
``--join N`` gathers the parts: the mean NLL in nats per sentence and the perplexity exp(total NLL / tokens),
the tokens counting one ``<eos>`` per sentence, as ``vaekit evaluate`` reports them.

    OMP_NUM_THREADS=1 python benchmarks/ptb_iwae.py --k 500 --part 1/2 &
    OMP_NUM_THREADS=1 python benchmarks/ptb_iwae.py --k 500 --part 2/2
    python benchmarks/ptb_iwae.py --k 500 --join 2

Results: ``benchmarks/results/ptb_iwae_k<K>_part<I>of<N>.json`` and ``ptb_iwae_k<K>.json`` (``--name`` for another
stem).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from common import RESULTS, fail, parse_part, save

import vaekit
from vaekit.data.text import PAD
from vaekit.models.inputs import examples_for, model_data


def _name(args: argparse.Namespace) -> str:
    """The result files' stem: ``--name``, else ``ptb_iwae_k<K>``."""
    return str(args.name or f"ptb_iwae_k{args.k}")


def part(args: argparse.Namespace, index: int, count: int) -> None:
    """Per-sentence IWAE NLL (nats) of test sentences index-1, index-1+count, ...; into a part file."""
    model = vaekit.load(args.model)
    model.eval()
    x, _, source, _ = model_data(model, args.data, None, args.seed, examples=examples_for(model, args.data, None))
    rows = np.arange(index - 1, len(x), count)
    torch.manual_seed(args.seed + index)
    start, nll = time.perf_counter(), []
    for i in range(0, len(rows), args.batch):
        batch = x[torch.as_tensor(rows[i : i + args.batch])]
        nll.append(-model.log_likelihood(batch, k=args.k, chunk_size=min(args.k, args.chunk)))
        if i // args.batch % 20 == 0:
            print(f"part {index}/{count}: {i + len(batch)} of {len(rows)} sentences, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    values = torch.cat(nll).tolist()
    tokens = int((x[torch.as_tensor(rows)] != PAD).sum())  # words and one <eos> each
    save(f"{_name(args)}_part{index}of{count}",
         {"model": args.model, "source": source, "k": args.k, "rows": rows.tolist(), "nll": values, "tokens": tokens,
          "seconds": time.perf_counter() - start, "threads": torch.get_num_threads()})
    print(f"part {index}/{count}: mean NLL {np.mean(values):.3f} nats over {len(values)} sentences")


def join(args: argparse.Namespace, count: int) -> None:
    """The test NLL and perplexity from the parts' per-sentence figures."""
    parts = []
    for index in range(1, count + 1):
        path = RESULTS / f"{_name(args)}_part{index}of{count}.json"
        if not path.is_file():
            fail(f"{path} is missing; run --part {index}/{count} first")
        parts.append(json.loads(path.read_text()))
    nll = np.concatenate([p["nll"] for p in parts])
    tokens = sum(p["tokens"] for p in parts)
    result = {"model": parts[0]["model"], "k": args.k, "sentences": len(nll), "tokens": tokens,
              "test_nll": float(nll.mean()), "perplexity": math.exp(float(nll.sum()) / tokens),
              "bits_per_token": float(nll.sum()) / tokens / math.log(2),
              "cpu_seconds": sum(p["seconds"] * p["threads"] for p in parts)}
    path = save(_name(args), result)
    print(f"test NLL {result['test_nll']:.3f} nats per sentence (IWAE k={args.k}, {len(nll)} sentences), perplexity "
          f"{result['perplexity']:.2f} over {tokens:,} tokens (one <eos> per sentence); wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bench-ptb/ptb/best", help="the model benchmarks/ptb.py trained")
    parser.add_argument("--data", default=None, help="the test text; default the model's own test split")
    parser.add_argument("--k", type=int, default=500, help="importance samples per sentence (default 500)")
    parser.add_argument("--batch", type=int, default=10, help="sentences per batch")
    parser.add_argument("--chunk", type=int, default=100, help="importance samples decoded at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="stem of the result files (default ptb_iwae_k<K>), to keep earlier results")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--part", help="I/N: evaluate every N-th sentence from the I-th (from 1)")
    what.add_argument("--join", type=int, metavar="N", help="gather the N parts")
    args = parser.parse_args()
    if args.join:
        join(args, args.join)
        return
    part(args, *parse_part(args.part))


if __name__ == "__main__":
    main()

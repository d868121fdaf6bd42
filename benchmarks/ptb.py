"""Issue 13: the sentence VAE of the Penn Treebank against its language-model baseline, on one training budget.

Protocol: train the ``ptb`` preset (sentence VAE) and then the ``ptb-lm`` preset (the same LSTM decoder, no latent
variable) on ``ptb.train.txt``, each for ``--budget`` seconds of training time (validation excluded), one after the
other; the best model of each (highest validation ELBO; for the language model the ELBO is its exact
log-likelihood) is evaluated on all 3,761 sentences of ``ptb.test.txt``: NLL in nats per sentence (the VAE's
importance-weighted with k = ``--k`` samples, the language model's exact), perplexity exp(total NLL / tokens)
counting one ``<eos>`` per sentence (82,430 tokens), KL, active units, mutual information.

The curve: validation NLL against training time (the VAE's IWAE with k = ``--eval-k`` on the 3,370 validation
sentences every ``--eval-every`` epochs and at the end, its -ELBO in between; the language model's exact NLL every
epoch). Then, with the VAE: ten samples from the prior (greedy decodes, and ten drawn word by word at temperature
1), five reconstructions (the first five test sentences of 5 to 20 words, greedy decodes of their posterior means)
and two homotopies (between test sentences of 5 to 12 words, five steps). For both models: the AUROC of the NLL
telling test sentences from word-shuffled copies (``--auroc-sentences`` of them, VAE IWAE k = ``--auroc-k``); the
test NLL as a code length in bits per character beside gzip, bz2 and xz (``vaekit compress`` refuses text:
bits-back over token sequences is not implemented). Last, training throughput in tokens/s of vaekit's loop on the
``ptb-lm`` and ``ptb`` presets beside a plain PyTorch LSTM language-model loop of ``ptb-lm``'s size (same batches,
same layers, same optimiser), in one process.

``--remedies`` runs the ablation of the remedies for posterior collapse instead: the ``ptb`` preset with one
remedy changed at a time (and the plain VAE with none of them, and the language model), each trained for
``--budget`` seconds (or ``--epochs`` epochs), all evaluated alike on the test set (k = ``--k``): NLL, KL, mutual
information and active units show what each remedy does.

    python benchmarks/ptb.py --data ../shared/data/ptb --budget 3600              # the full run (~3 hours)
    python benchmarks/ptb.py --data ../shared/data/ptb --budget 300 --k 50 --eval-k 5 --auroc-sentences 200
    python benchmarks/ptb.py --remedies --budget 900 --k 100                     # 8 models x 15 minutes

``--part I/N`` trains and evaluates every N-th model of the ablation, starting at the I-th (from 1), into
``results/ptb_remedies_IofN.json``, so that N processes can share the work; ``--remedies --join N`` then gathers the
N parts into one table, ``results/ptb_remedies.json``:

    OMP_NUM_THREADS=1 python benchmarks/ptb.py --remedies --part 1/2 &
    OMP_NUM_THREADS=1 python benchmarks/ptb.py --remedies --part 2/2
    python benchmarks/ptb.py --remedies --join 2

On a 2-core machine the two models can train side by side, one thread each (each still gets ``--budget`` seconds
of one core), and the rest then runs on the saved results:

    OMP_NUM_THREADS=1 python benchmarks/ptb.py --only ptb &  OMP_NUM_THREADS=1 python benchmarks/ptb.py --only ptb-lm
    python benchmarks/ptb.py --skip-train          # reuses results/ptb_ptb.json and results/ptb_ptb-lm.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, ROOT, fail, parse_part, save, table

from vaekit.apps.text import interpolate_text, reconstruct_text, sample_text, shuffle_auroc
from vaekit.config import Config, resolve_config
from vaekit.data import load_data
from vaekit.data.examples import DataBundle
from vaekit.data.text import PAD, TextExamples, TextPreprocessing
from vaekit.evaluation.report import evaluate
from vaekit.presets import get_preset
from vaekit.training.loop import train

DEFAULT_PTB = ROOT.parent / "shared" / "data" / "ptb"
PRESETS = ("ptb", "ptb-lm")
REMEDIES = {  # name: (preset, overrides): the ptb preset with one remedy changed at a time
    "ptb (BN-VAE + cyclical annealing)": ("ptb", []),
    "+ word dropout 0.25": ("ptb", ["model.word_dropout=0.25"]),
    "no BN-VAE": ("ptb", ["model.posterior_batchnorm=0"]),
    "no BN-VAE, word dropout 0.25": ("ptb", ["model.posterior_batchnorm=0", "model.word_dropout=0.25"]),
    "linear KL warm-up, not cyclical": ("ptb", ["objective.kl_cycles=0", "objective.kl_warmup_steps=4000"]),
    "free bits 0.25/dim, not BN-VAE": ("ptb", ["model.posterior_batchnorm=0", "objective.free_bits=0.25"]),
    "no remedy (plain VAE)": ("ptb", ["model.posterior_batchnorm=0", "objective.kl_cycles=0"]),
    "language model": ("ptb-lm", []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_PTB), help="folder of ptb.{train,valid,test}.txt")
    parser.add_argument("--budget", type=float, default=3600.0, help="training seconds per model")
    parser.add_argument("--k", type=int, default=500, help="importance samples of the VAE's test NLL")
    parser.add_argument("--eval-k", type=int, default=10, help="importance samples of the VAE's validation curve")
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between the VAE's validation IWAE NLLs")
    parser.add_argument("--auroc-k", type=int, default=20)
    parser.add_argument("--auroc-sentences", type=int, default=1000)
    parser.add_argument("--throughput-sentences", type=int, default=6400)
    parser.add_argument("--out", default="runs/bench-ptb")
    parser.add_argument("--skip-train", action="store_true",
                        help="evaluate the models already in --out (reusing results/ptb_PRESET.json from --only runs)")
    parser.add_argument("--only", choices=PRESETS,
                        help="train and evaluate this preset alone, into results/ptb_PRESET.json")
    parser.add_argument("--remedies", action="store_true", help="the ablation of the remedies for posterior collapse")
    parser.add_argument("--vae-report", metavar="MODEL", type=Path,
                        help="for a VAE trained by --only ptb: its samples, reconstructions, homotopies and shuffle "
                             "AUROC, the throughput table, and ptb.png from results/ptb_ptb.json and "
                             "ptb_ptb-lm.json; into results/ptb_vae_report.json")
    parser.add_argument("--epochs", type=int, help="--remedies: train this many epochs instead of --budget")
    parser.add_argument("--part", help="--remedies: I/N, every N-th model from the I-th (N processes share the work)")
    parser.add_argument("--join", type=int, help="--remedies: gather the results of --part 1/N .. N/N")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of both presets (e.g. train.batch_size=32)")
    args = parser.parse_args()
    out = Path(args.out)
    if args.remedies:
        remedies(args, out)
        return
    if args.vae_report:
        vae_report(args, args.vae_report)
        return
    if args.only:
        path = save(f"ptb_{args.only}", {"budget_s": args.budget, "preset": args.only,
                                           **_train_and_evaluate(args.only, out / args.only, args)})
        print(f"results: {path}")
        return
    results: dict[str, Any] = {"presets": {}}
    for preset in PRESETS:
        results["presets"][preset] = _reused(preset, args) or _train_and_evaluate(preset, out / preset, args)
    rows = [{"model": preset, **{key: r[key] for key in ("test_nll", "k", "perplexity", "kl", "active_units",
                                                          "mutual_information", "epochs", "train_time_s")}}
            for preset, r in results["presets"].items()]
    print("\n" + table(rows))
    vae_dir = out / PRESETS[0] / "best"
    results["examples"] = _examples(vae_dir, args.data)
    results["auroc"] = {preset: _auroc(out / preset / "best", args) for preset in PRESETS}
    results["bits_per_character"] = bits_per_character(results["presets"], args.data)
    results["throughput"] = throughput(args.data, args.throughput_sentences, args.overrides)
    print("\n" + table(results["throughput"]["rows"]))
    _plot(results["presets"])
    path = save("ptb", {"budget_s": args.budget, "k": args.k, "eval_k": args.eval_k, "rows": rows, **results})
    print(f"results: {path}")


def vae_report(args: argparse.Namespace, model_dir: Path) -> None:
    """What the full run reports of the VAE beyond its NLL, for a VAE model trained on its own (``--only ptb``):
    the language model's figures stay those of its own run."""
    result: dict[str, Any] = {"model": str(model_dir), "examples": _examples(model_dir, args.data),
                              "auroc": _auroc(model_dir, args)}
    result["throughput"] = throughput(args.data, args.throughput_sentences, args.overrides)
    print("\n" + table(result["throughput"]["rows"]))
    _plot({preset: json.loads((RESULTS / f"ptb_{preset}.json").read_text()) for preset in PRESETS})
    path = save("ptb_vae_report", result)
    print(f"results: {path}")


def _reused(preset: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """With --skip-train, the result of an earlier ``--only PRESET`` run on the same budget and k, if there is one."""
    path = RESULTS / f"ptb_{preset}.json"
    if not args.skip_train or not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    if result["budget_s"] != args.budget or (preset == "ptb" and result["k"] != args.k):
        return None
    print(f"{preset}: reusing {path} ({result['date']}): test NLL {result['test_nll']:.2f} nats, k={result['k']}")
    return result


def _config(preset: str, args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    vae = get_preset(preset).model.latent_dim > 0
    budget = ([f"train.epochs={args.epochs}", "train.time_budget_s=0"] if getattr(args, "epochs", None)
              else [f"train.time_budget_s={args.budget}"])
    return resolve_config(get_preset(preset), overrides=[
        *budget, f"train.eval_k={args.eval_k if vae else 0}", f"train.eval_every={args.eval_every}",
        *args.overrides, *(extra or []),
    ], data={"source": args.data})


def remedies(args: argparse.Namespace, out: Path) -> None:
    """Each remedy for posterior collapse switched off in turn: one model per row, evaluated alike."""
    if args.join:
        paths = [RESULTS / f"ptb_remedies_{i}of{args.join}.json" for i in range(1, args.join + 1)]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            fail(f"--join {args.join}: no {', '.join(missing)} in {RESULTS}; run the missing "
                             f"--part I/{args.join} first")
        parts = [json.loads(p.read_text()) for p in paths]
        settings = {(p["budget_s"], p["epochs"], p["k"]) for p in parts}
        if len(settings) != 1:
            fail(f"the parts were run with different --budget/--epochs/--k: {sorted(settings)}")
        found = {row["model"]: row for p in parts for row in p["rows"]}
        rows = [found[name] for name in REMEDIES if name in found]
        print(table(rows))
        path = save("ptb_remedies", {"budget_s": parts[0]["budget_s"], "epochs": parts[0]["epochs"],
                                     "k": parts[0]["k"], "parts": [p["date"] for p in parts], "rows": rows})
        print(f"results: {path}")
        return
    first, step = parse_part(args.part) if args.part else (1, 1)
    rows = []
    for i, (name, (preset, extra)) in enumerate(REMEDIES.items()):
        if i % step != first - 1:
            continue
        result = _train_and_evaluate(preset, out / f"remedy-{i}", args, extra)
        rows.append({"model": name, **{key: result[key] for key in (
            "test_nll", "k", "perplexity", "elbo", "kl", "mutual_information", "active_units", "epochs",
            "train_time_s")}})
        print("\n" + table(rows))
    name = f"ptb_remedies_{first}of{step}" if args.part else "ptb_remedies"
    path = save(name, {"budget_s": args.budget, "epochs": args.epochs, "k": args.k, "rows": rows})
    print(f"results: {path}")


def _train_and_evaluate(preset: str, out: Path, args: argparse.Namespace,
                        extra: list[str] | None = None) -> dict[str, Any]:
    config = _config(preset, args, extra)
    wall = time.perf_counter()
    if not args.skip_train:
        shutil.rmtree(out, ignore_errors=True)
        train(config, out)
    wall_s = time.perf_counter() - wall
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vae = config.model.latent_dim > 0
    curve = [{"epoch": m["epoch"], "train_time_s": m["train_time_s"],  # -ELBO where no IWAE estimate was logged
              "val_nll": m["val_nll"] if vae and "val_nll" in m else -m["val_elbo"],
              "estimate": f"IWAE k={args.eval_k}" if vae and "val_nll" in m else ("exact" if not vae else "-ELBO"),
              "val_kl": m["val_kl"]} for m in metrics]
    print(f"\n{preset}: {len(metrics)} epochs, {metrics[-1]['train_time_s']:.0f} s of training, {wall_s:.0f} s wall")
    print(table(curve))
    report = evaluate(out / "best", args.data, k=args.k, seed=0)
    print(report.format_table())
    return {"test_nll": report.nll_nats, "k": report.k, "perplexity": report.extras["perplexity"],
            "elbo": report.elbo, "kl": report.kl, "active_units": report.active_units,
            "mutual_information": report.extras["mutual_information"], "epochs": len(metrics),
            "train_time_s": metrics[-1]["train_time_s"], "curve": curve, "report": report.to_dict(),
            "config": config.to_dict()}


def _test_sentences(data: str, low: int, high: int, count: int) -> list[str]:
    lines = (Path(data) / "ptb.test.txt").read_text().splitlines()
    return [" ".join(line.split()) for line in lines if low <= len(line.split()) <= high][:count]


def _examples(model_dir: Path, data: str) -> dict[str, Any]:
    """Samples, reconstructions and homotopies of the VAE, printed as they come."""
    greedy = sample_text(model_dir, 10, decoding="greedy", seed=0)
    drawn = sample_text(model_dir, 10, decoding="sample", temperature=1.0, seed=0)
    pairs = reconstruct_text(model_dir, _test_sentences(data, 5, 20, 5))
    ends = _test_sentences(data, 5, 12, 4)
    paths = [interpolate_text(model_dir, ends[0], ends[1], steps=5), interpolate_text(model_dir, ends[2], ends[3],
                                                                                       steps=5)]
    print("\nsamples (z ~ N(0, I), greedy):", *greedy, sep="\n  ")
    print("\nsamples (z ~ N(0, I), words drawn at temperature 1):", *drawn, sep="\n  ")
    print("\nreconstructions (greedy decode of the posterior mean):")
    for original, decoded in pairs:
        print(f"  {original}\n    -> {decoded}")
    for i, path in enumerate(paths):
        print(f"\nhomotopy {i + 1} (linear, 5 steps):", *path, sep="\n  ")
    return {"samples_greedy": greedy, "samples_drawn": drawn, "reconstructions": pairs, "homotopies": paths}


def _auroc(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    test = shuffle_auroc(model_dir, args.data, k=args.auroc_k, limit=args.auroc_sentences)
    print(f"\n{model_dir.parent.name}: {test.sentences} test sentences against word-shuffled copies (NLL k={test.k}; "
          f"mean {test.nll_original:.2f} vs {test.nll_shuffled:.2f} nats): AUROC {test.auroc:.4f} of the NLL per "
          f"sentence, {test.auroc_per_token:.4f} per token, {test.auroc_relative:.4f} relative to the unigram model")
    return test.__dict__


def bits_per_character(presets: dict[str, dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """The test text (one sentence a line, words separated by one space: what the tokens determine) in bits per
    character: each model's NLL as a code length (ideal: what an entropy coder driven by the model would approach;
    ``vaekit compress`` does not code text) beside gzip, bz2 and xz at their strongest settings."""
    import bz2
    import gzip
    import lzma

    text = "".join(" ".join(line.split()) + "\n" for line in (Path(data) / "ptb.test.txt").read_text().splitlines()
                   if line.split()).encode()
    rows = [{"coder": f"{name} (NLL as code length)", "bits_per_character":
             r["test_nll"] * r["report"]["num_examples"] / math.log(2) / len(text)} for name, r in presets.items()]
    for name, pack in (("gzip -9", lambda b: gzip.compress(b, 9)), ("bz2 -9", lambda b: bz2.compress(b, 9)),
                       ("xz -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))):
        rows.append({"coder": name, "bits_per_character": 8 * len(pack(text)) / len(text)})
    print(f"\nptb.test.txt, {len(text):,} characters:\n" + table(rows))
    return rows


# -- throughput ---------------------------------------------------------------------------------------------------
def throughput(data: str, sentences: int, overrides: list[str]) -> dict[str, Any]:
    """Training tokens/s of one epoch over the first ``sentences`` training sentences: vaekit's loop (ptb-lm, ptb)
    and a plain PyTorch loop of the ptb-lm model's size, on the same length-bucketed batches."""
    bundle = load_data(resolve_config(get_preset("ptb-lm"), data={"source": data}).data)
    rows = torch.arange(sentences)
    train_set = TextExamples(bundle.train.raw, bundle.preprocessing, bundle.train.stats, rows.numpy())
    subset = DataBundle(train=train_set, val=bundle.val, test=None, preprocessing=bundle.preprocessing)
    tokens = int(train_set.lengths.sum())
    results = []
    for preset in ("ptb-lm", "ptb"):
        config = resolve_config(get_preset(preset), overrides=["train.epochs=1", "train.time_budget_s=0",
                                                              "train.num_images=2", *overrides],
                                data={"source": data})
        out = Path("runs/bench-ptb-throughput") / preset
        shutil.rmtree(out, ignore_errors=True)
        record = train(config, out, data=subset).metrics[-1]
        results.append({"loop": f"vaekit train --preset {preset}", "tokens": tokens,
                        "seconds": record["train_time_s"], "tokens_per_s": tokens / record["train_time_s"]})
    seconds = plain_lstm_loop(train_set, bundle.preprocessing, get_preset("ptb-lm"), tokens)
    results.append({"loop": "plain PyTorch LSTM LM (ptb-lm's size)", "tokens": tokens, "seconds": seconds,
                    "tokens_per_s": tokens / seconds})
    ratio = results[0]["tokens_per_s"] / results[-1]["tokens_per_s"]
    print(f"\nvaekit ptb-lm / plain PyTorch loop: {ratio:.3f} of the tokens/s ({torch.get_num_threads()} threads)")
    return {"rows": results, "ratio_lm_to_plain": ratio, "threads": torch.get_num_threads()}


def plain_lstm_loop(examples: TextExamples, record: TextPreprocessing, config: Config, tokens: int) -> float:
    """Seconds of one epoch of a plain PyTorch LSTM language model (embedding, LSTM, dropout, adaptive softmax, Adam,
    gradient clipping) over ``examples`` in vaekit's bucketed batch order, after one untimed step."""
    mc, tc = config.model, config.train
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(record.vocab_size, mc.embedding_dim, padding_idx=PAD)
    lstm = torch.nn.LSTM(mc.embedding_dim, mc.hidden_dims[-1], batch_first=True)
    dropout = torch.nn.Dropout(mc.dropout)
    output = torch.nn.AdaptiveLogSoftmaxWithLoss(mc.hidden_dims[-1], record.vocab_size, list(mc.softmax_cutoffs),
                                                 div_value=4.0)
    params = [*embedding.parameters(), *lstm.parameters(), *output.parameters()]
    optimizer = torch.optim.Adam(params, lr=tc.lr, fused=True)
    generator = torch.Generator().manual_seed(1)
    batches = examples.batch_order(torch.randperm(len(examples), generator=generator), tc.batch_size, generator)
    start = 0.0
    for i, idx in enumerate([batches[0], *batches]):  # an untimed first step, as vaekit's FLOP count before its epoch
        if i == 1:
            start = time.perf_counter()
        x = examples.batch(idx)
        x = x[:, : int((x != PAD).sum(1).max())]
        inputs = torch.cat([torch.full((len(x), 1), 2), x[:, :-1]], dim=1)
        h, _ = lstm(dropout(embedding(inputs)))
        mask = x != PAD
        loss = -output(dropout(h[mask]), x[mask]).output.sum() / len(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
    return time.perf_counter() - start


def _plot(presets: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, result) in enumerate(presets.items()):
        colour = f"C{i % 10}"
        # one line per estimate: the VAE's IWAE points and its -ELBO points (an upper bound on the NLL) apart
        for estimate, style in (("exact", "o-"), ("IWAE", "o-"), ("-ELBO", "x:")):
            points = [c for c in result["curve"] if c.get("estimate", "exact").startswith(estimate)]
            if points:
                label = f"{name}: validation " + ("-ELBO (bound)" if estimate == "-ELBO" else
                                                  f"NLL ({points[0].get('estimate', 'exact')})")
                ax.plot([c["train_time_s"] / 60 for c in points], [c["val_nll"] for c in points], style,
                        color=colour, label=label)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("NLL (nats per sentence)")
    ax.set_title("Penn Treebank: validation NLL against training time")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "ptb.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()

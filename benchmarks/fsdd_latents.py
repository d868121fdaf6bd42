"""Benchmark: where the FSDD conditional model's sampling latents come from (issue 15), on the model that
``benchmarks/fsdd.py`` trained (``runs/bench-fsdd/fsdd-cvae/best``; run that first).

For 1, 2, 3, 5 and 8 Gaussians per digit fitted to the training codes (``model.latent_density``; the preset uses 8), and
for the prior N(0, I), at temperatures 1, 0.9 and 0.8: the share of 1,000 conditional samples (digits 0-9 in turn)
that vaekit's spoken-digit classifier hears as the digit asked for, and the FID of 150 samples against half A of
the test split beside half B's (the halves of ``fsdd.py``: every (digit, speaker) group split at random), from one
draw of samples (``fsdd.py`` averages five).

    OMP_NUM_THREADS=1 python benchmarks/fsdd_latents.py [--model runs/bench-fsdd/fsdd-cvae/best] [--name NAME]

Results: ``benchmarks/results/fsdd_latents.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from common import save, table
from fsdd import DEFAULT_FSDD, refit_latent_density, test_halves

import vaekit
from vaekit.config import resolve_config
from vaekit.data import load_data
from vaekit.evaluation.classifier import get_classifier
from vaekit.evaluation.quality import class_accuracy, fid
from vaekit.presets import get_preset


def measure(model: Any, classifier: Any, bundle: Any, halves: tuple[np.ndarray, np.ndarray], latents: str,
            temperature: float) -> dict[str, float]:
    """Conditional accuracy of 1,000 samples and FID of len(A) samples against half A (beside half B's)."""
    asked = np.arange(1000) % model.num_classes
    x = vaekit.sample(model, 1000, seed=123, label=asked, temperature=temperature, latents=latents)
    accuracy, _ = class_accuracy(classifier, x, asked)
    a, b = halves
    x_test, labels = bundle.test.tensor(), bundle.test.labels
    features_a, features_b = classifier.features(x_test[a]), classifier.features(x_test[b])
    drawn = np.random.default_rng(0).choice(labels[a], len(a))  # half A's digit frequencies
    samples = vaekit.sample(model, len(a), seed=7, label=drawn, temperature=temperature, latents=latents)
    value, real = fid(classifier.features(samples), features_a), fid(features_b, features_a)
    return {"accuracy": accuracy, "fid": value, "real_fid": real, "fid_ratio": value / real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bench-fsdd/fsdd-cvae/best")
    parser.add_argument("--data", default=str(DEFAULT_FSDD), help="FSDD's recordings/ folder")
    parser.add_argument("--name", default="fsdd_latents", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = vaekit.load(args.model)
    bundle = load_data(resolve_config(get_preset("fsdd-cvae"), overrides=[f"data.source={args.data}"]).data)
    classifier = get_classifier(args.data, model.preprocessing)
    halves = test_halves(args.data, model.preprocessing)
    rows = []
    for per_class in (0, 1, 2, 3, 5, 8):
        if per_class:
            refit_latent_density(model, bundle, per_class)
        for temperature in (1.0, 0.9, 0.8):
            figures = measure(model, classifier, bundle, halves, "fitted" if per_class else "prior", temperature)
            rows.append({"latents": f"{per_class} Gaussians per digit" if per_class else "prior N(0, I)",
                         "temperature": temperature, **figures})
            print(table(rows[-1:]), flush=True)
    print(table(rows))
    print(f"wrote {save(args.name, {'model': args.model, 'classifier': classifier.describe(), 'rows': rows})}")


if __name__ == "__main__":
    main()

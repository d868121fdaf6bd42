"""Honest evaluation of a trained model: ELBO and its parts, importance-weighted NLL, bits/dim, active units.

All figures are means over the evaluated examples, in nats per example, summed over data dimensions and
over latent dimensions. The NLL is the importance-weighted bound -L_k (Burda et al. 2015,
arXiv:1509.00519) with ``k`` samples, computed ``chunk_size`` samples at a time so memory stays bounded.
Binary-data models trained with dynamic binarization are evaluated on one Bernoulli draw of the data seeded
by ``seed`` (stated in the report). A model without a latent variable (``latent_dim = 0``: a language model) has
an exact likelihood, equal to every importance-weighted bound, and is evaluated with k = 1.

A kind of data adds figures of its own through :data:`REPORT_EXTENSIONS`, keyed by the model's modality (text:
perplexity, bits per token, out-of-vocabulary words, mutual information; :mod:`vaekit.evaluation.text`): its
``measure`` returns JSON-ready numbers (``EvalReport.extras``) and table rows, and ``omits`` names the generic
figures that mean nothing for that data (bits per padded "dimension", squared error of token ids), which the table
leaves out and the JSON reports as ``null``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.errors import ConfigError, DataError
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.bounds import bits_per_dim, elbo, iwae_bound
from vaekit.models.inputs import as_model_dtype, examples_for, model_data, unlabelled
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

ACTIVE_UNIT_THRESHOLD = 0.01  # variance of the posterior mean across data (Burda et al. 2015)


class ReportExtension(Protocol):
    """What one modality adds to the evaluation report (see the module docstring)."""

    omits: tuple[str, ...]  # EvalReport fields that mean nothing for this data

    def measure(
        self, model: LatentVariableModel, x: torch.Tensor, examples: Any, report: EvalReport, seed: int
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """JSON-ready figures and the table rows that show them, for the evaluated examples ``x`` (read as
        ``examples``, ``None`` for a tensor) and the generic ``report``."""
        ...


REPORT_EXTENSIONS: Registry[ReportExtension] = Registry("evaluation report extension")  # keyed by modality


@dataclass
class EvalReport:
    """Evaluation results (nats per example unless the name says otherwise)."""

    data: str
    num_examples: int
    num_dims: int
    binarization: str
    k: int
    chunk_size: int
    seed: int
    elbo: float
    log_px_z: float
    kl: float
    nll_nats: float
    bits_per_dim: float
    elbo_bits_per_dim: float
    active_units: int
    latent_dim: int
    recon_mse: float
    kl_per_dim: list[float] = field(default_factory=list)
    kl_per_layer: list[float] = field(default_factory=list)
    seconds: float = 0.0
    sample_quality: dict[str, Any] | None = None  # vaekit.quality.QualityReport.to_dict(), with samples > 0
    heldout: dict[str, Any] | None = None  # metrics of held-out targets the data carries (ranking of interactions)
    extras: dict[str, Any] = field(default_factory=dict)  # figures of a REPORT_EXTENSIONS entry
    omitted: list[str] = field(default_factory=list)  # fields that mean nothing for this data (null in JSON)
    extra_rows: list[tuple[str, str]] = field(default_factory=list)  # the table rows of the extras

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the omitted ones ``null``; the extras' table rows left out)."""
        data = asdict(self)
        data.pop("extra_rows")
        data.update({name: None for name in self.omitted})
        return data

    def format_table(self) -> str:
        """A human-readable table."""
        rows = [
            ("data", f"{self.data} ({self.num_examples} examples, D = {self.num_dims}, {self.binarization})"),
            ("ELBO", f"{self.elbo:.3f} nats"),
            ("  E_q[log p(x|z)]", f"{self.log_px_z:.3f} nats"),
            ("  KL(q(z|x) || p(z))", f"{self.kl:.3f} nats"),
            ("NLL (exact: no latent variable)" if self.latent_dim == 0 else f"NLL (IWAE, k={self.k})",
             f"{self.nll_nats:.3f} nats"),
            ("bits/dim (NLL)", f"{self.bits_per_dim:.4f}"),
            ("bits/dim (-ELBO)", f"{self.elbo_bits_per_dim:.4f}"),
            ("active units", f"{self.active_units} / {self.latent_dim} (Var[mu] > {ACTIVE_UNIT_THRESHOLD})"),
            ("reconstruction MSE", f"{self.recon_mse:.5f} per dimension"),
            *(
                [("KL per layer (top first)", " ".join(f"{v:.2f}" for v in self.kl_per_layer) + " nats")]
                if len(self.kl_per_layer) > 1
                else []
            ),
            (
                "KL per latent dim",
                " ".join(f"{v:.2f}" for v in self.kl_per_dim)
                if len(self.kl_per_dim) <= 64
                else f"{len(self.kl_per_dim)} values (in the JSON report)",
            ),
            *self.extra_rows,
            ("time", f"{self.seconds:.1f} s (k={self.k} in chunks of {self.chunk_size}, seed {self.seed})"),
        ]
        shown = {"bits_per_dim": "bits/dim (NLL)", "elbo_bits_per_dim": "bits/dim (-ELBO)",
                 "recon_mse": "reconstruction MSE"}
        hidden = {shown.get(name, name) for name in self.omitted}
        rows = [(name, value) for name, value in rows if name not in hidden]
        if self.sample_quality is not None:
            from vaekit.evaluation.quality import quality_rows

            rows += quality_rows(self.sample_quality)
        if self.heldout:
            rows += heldout_rows(self.heldout)
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def heldout_rows(heldout: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows of the held-out metrics (:meth:`vaekit.data.interactions.InteractionExamples.heldout_metrics`)."""
    users = heldout.get("users", 0)
    rows = [("held-out items", f"{users} users: their fold-in items in, the held-out ones ranked among the items "
             "not folded in")]
    rows += [(f"  {name.replace('recall', 'Recall').replace('ndcg', 'NDCG')}", f"{value:.4f}")
             for name, value in heldout.items() if name != "users"]
    return rows


@torch.no_grad()
def evaluate(
    model: LatentVariableModel | str | Path,
    data: str | torch.Tensor | None = None,
    *,
    k: int = 1000,
    data_dir: str | None = None,
    batch_size: int = 256,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    samples: int = 0,
    halves: str = "ordered",
) -> EvalReport:
    """Evaluate a model on held-out data.

    Parameters
    ----------
    model
        A model or a model/run directory.
    data
        A dataset name or path (read through the model's preprocessing), a tensor (N, *shape) already
        preprocessed, or ``None`` for the model's own source (the test split of a built-in dataset).
    k
        Importance samples of the NLL estimate (k = 1 gives a one-sample ELBO).
    batch_size
        Examples per batch.
    chunk_size
        Importance samples per decoder pass (default: as many as keep about 25,600 decoded examples in memory).
    seed
        Seed of the posterior samples and of the binarization draw.
    progress
        Show a progress bar.
    labels
        (N,) labels of a tensor ``data`` for a conditional model (read from the dataset otherwise).
    samples
        If positive, also draw this many samples and report FID, KID, precision/recall (and the
        class-conditional accuracy of a conditional model) in the feature space of a classifier trained on
        the model's dataset, each named beside its extractor (see :func:`vaekit.evaluation.quality.sample_quality`;
        the real data is the test split of ``data`` when it is a name or path, else of the model's source).
    halves
        How that test split is cut into the reference half and the real-data half: ``ordered`` (first and
        second half) or ``random`` (a seeded shuffle first; for splits whose order makes the halves differ).

    Returns
    -------
    EvalReport
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}; use --k 1000 for a meaningful NLL")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}; omit it for the default")
    model = as_model(model)
    model.eval()
    if samples and model.modality() == "text":  # refused before the NLL pass, not after it
        raise ConfigError("the sample-quality metrics (FID, KID, precision/recall) are for images and audio; a text "
                          "model has none: drop --samples (vaekit text shuffle-auroc and text sample judge text)")
    if samples:
        from vaekit.evaluation.quality import check_quality_request

        check_quality_request(model, samples, halves=halves)  # before the NLL pass, not after it
    if model.latent_dim == 0 and k > 1:  # no latent variable: every bound is the exact log-likelihood
        logger.info("the model has no latent variable: its likelihood is exact, evaluated once (k=1, not %d)", k)
        k = 1
    examples = None
    x_all: torch.Tensor | None = None
    if isinstance(data, torch.Tensor):
        y_all = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        x_all, source, how = as_model_dtype(model, data), "tensor", "as given"
        rows: _Rows = _TensorRows(x_all, y_all if model.num_classes else None)
    elif getattr(examples := examples_for(model, data, data_dir), "read_by_batch", False):
        # sparse rows (interactions): densified a batch at a time, never the whole set at once
        rows, source, how = _SetRows(examples, model.device), data or model.preprocessing.source, "no binarization"
    else:
        x_all, y_all, source, how = model_data(model, data, data_dir, seed, examples=examples)
        rows = _TensorRows(x_all, y_all if model.num_classes else None)  # unconditional models ignore labels
    if len(rows) == 0:
        raise DataError(f"no examples to evaluate in {source!r}; pass a non-empty dataset")
    if model.num_classes and isinstance(rows, _TensorRows) and rows.y is None:
        raise unlabelled(model)
    chunk = chunk_size or max(1, min(k, 25_600 // batch_size))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)  # seeded here, the caller's global RNG left as it was
        sums = _accumulate(model, rows, k, chunk, batch_size, progress)
    report = _report(model, sums, len(rows), source, how, k, chunk, seed, time.perf_counter() - start)
    if model.modality() in REPORT_EXTENSIONS and x_all is not None:
        extension = REPORT_EXTENSIONS.get(model.modality())
        report.extras, report.extra_rows = extension.measure(model, x_all, examples, report, seed)
        report.omitted = list(extension.omits)
        report.seconds = time.perf_counter() - start
    if not math.isfinite(report.nll_nats):
        logger.warning("the NLL estimate is not finite; the model may have diverged")
    hook = getattr(examples, "heldout_metrics", None)  # data with held-out targets: interactions' ranking metrics
    if hook is not None:
        report.heldout = hook(lambda x: model.reconstruct(x.to(model.device))) or None
    if samples:
        from vaekit.evaluation.quality import sample_quality

        named = data if isinstance(data, str) else None
        report.sample_quality = sample_quality(model, samples, data=named, data_dir=data_dir, seed=seed,
                                               halves=halves).to_dict()
    return report


@dataclass
class _Sums:
    """Sums over the evaluated examples (nats), the per-dimension KL and the posterior means."""

    elbo: float = 0.0
    log_px_z: float = 0.0
    kl: float = 0.0
    nll: float = 0.0
    sq_err: float = 0.0
    kl_dims: torch.Tensor | None = None
    means: list[torch.Tensor] = field(default_factory=list)


class _Rows(Protocol):
    """The evaluated examples, read a batch at a time."""

    def __len__(self) -> int: ...

    def rows(self, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class _TensorRows:
    """Examples held as one tensor (N, *shape), with labels (N,) or ``None``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.x[begin:end]
        return x, None if self.y is None else self.y[begin:end].to(x.device)


class _SetRows:
    """Examples of a set read a batch at a time (``examples.batch``), e.g. sparse interaction rows."""

    def __init__(self, examples: Any, device: torch.device) -> None:
        self.examples, self.device = examples, device

    def __len__(self) -> int:
        return len(self.examples)

    def rows(self, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.examples.batch(np.arange(begin, end)).to(self.device), None


def _accumulate(
    model: LatentVariableModel, examples: _Rows, k: int, chunk: int, batch_size: int, progress: bool,
) -> _Sums:
    sums = _Sums(kl_dims=torch.zeros(model.latent_dim, dtype=torch.float64))
    batches = range(0, len(examples), batch_size)
    for begin in tqdm(batches, desc=f"evaluate (k={k})", disable=not progress, leave=False):
        x, y = examples.rows(begin, min(begin + batch_size, len(examples)))
        model.check_input(x)
        terms = elbo(model, x, y=y)
        sums.elbo += float(terms.elbo.sum())
        sums.log_px_z += float(terms.log_px_z.sum())
        sums.kl += float(terms.kl.sum())
        if terms.kl_per_dim is not None and sums.kl_dims is not None:
            sums.kl_dims += terms.kl_per_dim.sum(0).double().cpu()
        sums.nll -= float(iwae_bound(model, x, k, chunk, y=y).sum())
        qz_x = model.encode(x, y)
        sums.means.append(qz_x.mean.double().cpu())
        x_hat = model.decode(qz_x.mean, y).mean
        sums.sq_err += float(((x_hat - x) ** 2).sum())
    return sums


def _report(
    model: LatentVariableModel, sums: _Sums, n: int, source: str, how: str, k: int, chunk: int, seed: int,
    seconds: float,
) -> EvalReport:
    mu = torch.cat(sums.means)
    variances = mu.var(dim=0, unbiased=True) if n > 1 and model.latent_dim else torch.zeros(model.latent_dim)
    kl_dims = sums.kl_dims if sums.kl_dims is not None else torch.zeros(model.latent_dim, dtype=torch.float64)
    nll = sums.nll / n
    return EvalReport(
        data=source,
        num_examples=n,
        num_dims=model.num_dims,
        binarization=how,
        k=k,
        chunk_size=chunk,
        seed=seed,
        elbo=sums.elbo / n,
        log_px_z=sums.log_px_z / n,
        kl=sums.kl / n,
        kl_per_layer=[round(float(part.sum()) / n, 6) for part in kl_dims.split(model.layer_sizes)],
        nll_nats=nll,
        bits_per_dim=float(bits_per_dim(nll, model.num_dims)),
        elbo_bits_per_dim=float(bits_per_dim(-sums.elbo / n, model.num_dims)),
        active_units=int((variances > ACTIVE_UNIT_THRESHOLD).sum()),
        latent_dim=model.latent_dim,
        recon_mse=sums.sq_err / (n * model.num_dims),
        kl_per_dim=[round(float(v) / n, 6) for v in kl_dims],
        seconds=seconds,
    )

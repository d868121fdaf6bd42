"""Anomaly scores: one number per example, higher for more anomalous examples; thresholds and 0/1 decisions.

=========  =========================================================================  ===============
method     score                                                                      unit
=========  =========================================================================  ===============
``iwae``   -L_k: the importance-weighted NLL estimate with k samples (the default,    nats / bits-dim
           Burda et al. 2015, arXiv:1509.00519)
``elbo``   -ELBO: -(1/k) sum_i log p(x|z_i) + KL(q(z|x) || p(z)) (analytic KL)         nats / bits-dim
``recon``  squared error between x and the decoded posterior mean, summed over dims   squared error
=========  =========================================================================  ===============

The likelihood-based scores (``iwae``, ``elbo``) are in nats per example, or bits/dim with ``unit="bits"``
(nats / (D ln 2)). On grayscale data scored by a Bernoulli model they are cross-entropies, not normalised
likelihoods (see :class:`vaekit.likelihoods.BernoulliLikelihood`), and a cross-entropy holds the entropy of
the image itself, sum_d H(x_d) (H(x_d) = -x_d log x_d - (1 - x_d) log(1 - x_d)): images with little grey (few
strokes) look likely to any model. ``relative=True`` subtracts it. In general it adds log p_sat(x), the
log-likelihood of x under the best parameters the likelihood family allows (decoded mean = x, the "saturated
model" of a GLM), so the score is the NLL *in excess of* what any decoder could reach (for a Bernoulli decoder
that is half the deviance, sum_d KL(Bern(x_d) || Bern(p_d)), averaged over q, plus the KL term). It changes no
ranking for binary data (H = 0) or Gaussian decoders (log p_sat is the same for every x); it is registered per
likelihood in :data:`SATURATED`.

The k posterior draws are *common random numbers*: one seeded set of k standard-normal vectors eps_i (k, L)
is shared by every example, z_i = mu(x) + sigma(x) * eps_i. So an example's score is a deterministic function
of the example and ``seed``: it does not depend on the batch it is scored in or on the other examples, and two
runs give the same scores. (The training objectives in :mod:`vaekit.objectives` draw from torch's global RNG
instead, which is what training wants.)

Thresholds turn scores into 0/1 decisions, ``decision = score > threshold`` (1 = flagged as anomalous)::

    threshold=T        a score value given by the user
    fpr=a              the (1 - a) quantile of the scores of held-out *normal* data (the model's validation
                       split by default): about a fraction a of normal examples is flagged
    contamination=c    the (1 - c) quantile of the scored data's own scores: a fraction c of it is flagged
"""

from __future__ import annotations

import logging
import math
import numbers
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.apps.neighbors import DETECTOR_KEY, SavedDetector, finite_scores, posterior_means, z_scores
from vaekit.apps.streaming import set_chunks, stream_scores, table_chunks, write_csv_in_chunks
from vaekit.apps.writers import check_output
from vaekit.config import Config
from vaekit.data import ExampleSet, load_data
from vaekit.errors import ConfigError, DataError, OutputError
from vaekit.files import atomic_write_bytes, csv_bytes, npy_bytes
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.bounds import bits_per_dim, kl_per_dimension, repeat_batch
from vaekit.models.inputs import as_model_dtype, check_source, model_data, unlabelled
from vaekit.models.likelihoods import Likelihood
from vaekit.models.posteriors import Posterior
from vaekit.models.serialization import find_model_dir
from vaekit.plots import pyplot, save_figure
from vaekit.registry import Registry

logger = logging.getLogger(__name__)

ScoreFn = Callable[[LatentVariableModel, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SCORES: Registry[ScoreFn] = Registry("anomaly score", "--method")
UNITS = ("nats", "bits")
OUTPUT_FORMATS = (".csv", ".npy")
NOISE_CHUNK = 100  # posterior draws decoded at once: memory holds NOISE_CHUNK * batch_size decoded examples
SCORE_LABELS = {
    "iwae": "importance-weighted NLL (k={k})",
    "elbo": "-ELBO (k={k})",
    "recon": "reconstruction squared error",
}
SaturatedFn = Callable[[LatentVariableModel, torch.Tensor], torch.Tensor]
SATURATED: Registry[SaturatedFn] = Registry("saturated log-likelihood")  # keyed by ModelConfig.likelihood


@SATURATED.register("bernoulli")
def _bernoulli_saturated(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """log p(x | p = x) = sum_d x log x + (1 - x) log(1 - x) = -sum_d H(x_d): (B,) nats, 0 for binary data."""
    flat = x.flatten(1)
    return (torch.special.xlogy(flat, flat) + torch.special.xlogy(1 - flat, 1 - flat)).sum(1)


@SATURATED.register("gaussian")
def _gaussian_saturated(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """log N(x | mean = x, sigma) = -sum_d (log sigma_d + log(2 pi) / 2): (B,) nats, the same for every x."""
    log_scale = _feature_log_scale(model)  # per-feature scales of GaussianLikelihood
    if isinstance(log_scale, torch.nn.Parameter):  # learned: floored as GaussianLikelihood floors it
        log_scale = log_scale.clamp(min=-7.0)
    value = -(log_scale.sum() + 0.5 * math.log(2 * math.pi) * log_scale.numel())
    return value.to(x.dtype).expand(x.shape[0])


def _feature_log_scale(model: LatentVariableModel) -> torch.Tensor:
    """The per-feature log-scales of a Gaussian or Laplace likelihood; ConfigError when the decoder predicts them
    (the saturated model would then depend on z)."""
    if model.config.likelihood_scale != "feature":
        raise ConfigError(
            "relative scores need a likelihood whose scale does not depend on z, but this model's decoder predicts "
            "its scales (model.likelihood_scale=decoder); score without --relative"
        )
    return cast(torch.Tensor, model.likelihood.log_scale)


@SATURATED.register("laplace")
def _laplace_saturated(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """log Laplace(x | loc = x, b) = -sum_d log(2 b_d): (B,) nats, the same for every x."""
    log_scale = _feature_log_scale(model).clamp(min=-7.0)  # as LaplaceLikelihood
    value = -(log_scale.sum() + math.log(2.0) * log_scale.numel())
    return value.to(x.dtype).expand(x.shape[0])


def _log_px_z(model: LatentVariableModel, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log p(x|z_i) for latents z (c, B, L) of a batch x (B, *shape): (c, B) nats."""
    c, batch = z.shape[:2]
    x_rep, y_rep = repeat_batch(x, y, c)  # (c B, ...) in the same sample-major order as z
    return model.decode(z.reshape(c * batch, z.shape[-1]), y_rep).log_prob(x_rep).reshape(c, batch)  # L may be 0


def _latents(qz_x: Posterior, noise: torch.Tensor) -> Iterator[torch.Tensor]:
    """The draws z_i (c, B, L) made with the noise ``noise`` (k, L) shared by the batch, chunk by chunk: mu + sigma *
    eps_i for a diagonal Gaussian, layer by layer for a hierarchical posterior (its own ``reparameterize``)."""
    for eps in noise.split(NOISE_CHUNK):
        yield qz_x.reparameterize(eps[:, None, :].expand(len(eps), qz_x.batch_shape[0], eps.shape[-1]))


@SCORES.register("iwae")
def _iwae(model: LatentVariableModel, x: torch.Tensor, noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    qz_x, pz = model.encode(x, y), model.prior()
    running = torch.full((x.shape[0],), -math.inf, device=x.device)
    for z in _latents(qz_x, noise):
        log_w = _log_px_z(model, x, z, y) + pz.log_prob(z) - qz_x.log_prob(z)  # (c, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
    return -(running - math.log(len(noise)))


@SCORES.register("elbo")
def _elbo(model: LatentVariableModel, x: torch.Tensor, noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    qz_x, pz = model.encode(x, y), model.prior()
    log_px_z = torch.zeros(x.shape[0], device=x.device)
    kl_mc = torch.zeros(x.shape[0], device=x.device)
    for z in _latents(qz_x, noise):
        log_px_z += _log_px_z(model, x, z, y).sum(0)
        kl_mc += (qz_x.log_prob(z) - pz.log_prob(z)).sum(0)
    kl_dims = kl_per_dimension(qz_x, pz)
    kl = kl_mc / len(noise) if kl_dims is None else kl_dims.sum(-1)
    return -(log_px_z / len(noise) - kl)


@SCORES.register("recon")
def _recon(model: LatentVariableModel, x: torch.Tensor, noise: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    x_hat = model.decode(model.encode(x, y).mean, y).mean
    return ((x_hat - x) ** 2).flatten(1).sum(1)


@torch.no_grad()
def anomaly_scores(
    model: LatentVariableModel,
    x: torch.Tensor,
    method: str = "iwae",
    *,
    k: int = 100,
    unit: str = "nats",
    y: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
    relative: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Score examples: higher means more anomalous.

    Parameters
    ----------
    model
        A trained model.
    x
        (N, *data_shape) preprocessed examples.
    method
        ``iwae`` (default), ``elbo`` or ``recon``; see the module docstring.
    k
        Importance samples (``iwae``) or posterior samples averaged (``elbo``); unused by ``recon``.
    unit
        ``nats`` per example, or ``bits`` per dimension (likelihood scores only).
    y
        (N,) labels for a conditional model.
    batch_size
        Examples per batch (memory holds about ``batch_size * min(k, 100)`` decoded examples).
    seed
        Seed of the k standard-normal draws shared by every example (see the module docstring).
    relative
        Likelihood scores only: subtract the saturated model's NLL (see the module docstring).
    progress
        Show a progress bar over the batches.

    Returns
    -------
    torch.Tensor
        (N,) scores on the CPU, in the model's floating-point precision.

    Raises
    ------
    ConfigError
        An unknown method or unit, ``unit="bits"`` or ``relative`` with ``recon``, ``relative`` for a likelihood
        without a registered saturated form, or ``k`` / ``batch_size`` below 1.
    DataError
        Data of another shape than the model's, or NaN / infinite values.
    """
    score_fn = SCORES.get(method)
    if unit not in UNITS:
        raise ConfigError(f"unknown score unit {unit!r}; choose one of: {', '.join(UNITS)}")
    if unit == "bits" and method == "recon":
        raise ConfigError("the recon score is a squared error, not a rate; use unit=nats with method=recon")
    if unit == "bits" and model.modality() == "text":  # a sentence's length varies: no fixed number of dimensions
        raise ConfigError("a text model scores sentences in nats; bits per token are vaekit evaluate's (use unit=nats)")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if (relative or method == "recon") and not isinstance(getattr(model, "likelihood", None), Likelihood):
        raise ConfigError(  # a family whose p(x|z) is its own (text): no decoded mean to compare, no saturated form
            f"the {model.family!r} family's p(x|z) is its own distribution, not a registered likelihood: score it with "
            "method iwae or elbo, without relative"
        )
    saturated = _saturated_fn(model, method) if relative else None
    model.eval()
    x = as_model_dtype(model, x)  # float64 or 0/1 integer data for a float32 model
    model.check_input(x)
    if model.num_classes and y is None:
        raise unlabelled(model)
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype  # the model's float type: text's token ids are integers
    noise = torch.randn(k, model.latent_dim, generator=generator).to(model.device, dtype)  # (k, L), shared
    scores = []
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=f"score ({method}, k={k})", disable=not progress, leave=False, unit="batch"):
        xb = x[start : start + batch_size].to(model.device)
        yb = None if y is None else y[start : start + batch_size].to(model.device)
        batch_scores = score_fn(model, xb, noise, yb)
        if saturated is not None:
            batch_scores = batch_scores + saturated(model, xb)  # NLL - NLL_sat
        scores.append(batch_scores.cpu())
    result = torch.cat(scores) if scores else torch.zeros(0)
    if unit == "bits":
        result = bits_per_dim(result, model.num_dims)  # type: ignore[assignment]
    return result


def _saturated_fn(model: LatentVariableModel, method: str) -> SaturatedFn:
    if method == "recon":
        raise ConfigError("relative applies to the likelihood scores (iwae, elbo); recon is a squared error")
    name = model.config.likelihood
    if name not in SATURATED:
        raise ConfigError(
            f"relative scores need the saturated log-likelihood of the {name!r} likelihood, which vaekit knows only "
            f"for {', '.join(SATURATED.names())}; score with relative=False"
        )
    return SATURATED.get(name)


# -- thresholds ---------------------------------------------------------------------------------------------
def check_rate(value: float, name: str, upper: float = 1.0, *, include_upper: bool = False) -> float:
    """``value`` as a float if it lies in (0, upper) (or (0, upper] with ``include_upper``); ConfigError if not."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy floats too
    inside = real and (0.0 < value < upper or (include_upper and value == upper))
    if not inside:
        closing = "]" if include_upper else ")"
        raise ConfigError(f"{name}={value!r} is outside its range (0, {upper:g}{closing}; give a fraction such as 0.05")
    return float(value)


def quantile_threshold(scores: np.ndarray, rate: float) -> float:
    """The score above which a fraction ``rate`` of ``scores`` lies: their (1 - rate) quantile (linear).

    Parameters
    ----------
    scores
        (M,) finite scores, higher = more anomalous.
    rate
        Fraction to flag, in (0, 1).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise DataError("no examples to compute a threshold from (the data, or the calibration data, is empty); "
                        "give a non-empty set")
    return float(np.quantile(scores, 1.0 - rate))


@dataclass
class ScoreResult:
    """The scores of one dataset and, with a threshold, the 0/1 decisions.

    Attributes
    ----------
    scores
        (N,) float64, higher = more anomalous, in ``unit``.
    labels
        (N,) int64 labels of the data when known, else ``None``.
    decisions
        (N,) int8, 1 = flagged (``score > threshold``), or ``None`` without a threshold.
    threshold
        The threshold in the score's unit, or ``None``.
    threshold_rule
        How the threshold was chosen, e.g. ``"fpr=0.05 on 150 held-out normal examples (validation split)"``.
    method, k, unit, relative, source
        What was scored and how (``unit`` ``z`` for a saved detector's sum of z-scores).
    description
        What a saved detector's sum of z-scores is (``None`` for the scores of :data:`SCORES`).
    """

    scores: np.ndarray
    labels: np.ndarray | None
    decisions: np.ndarray | None
    threshold: float | None
    threshold_rule: str
    method: str
    k: int
    unit: str
    source: str
    relative: bool = False
    description: str | None = None  # what the score is, when not one of SCORE_LABELS (a saved detector's)

    @property
    def num_flagged(self) -> int:
        """Examples flagged as anomalous (0 without a threshold)."""
        return 0 if self.decisions is None else int(self.decisions.sum())

    @property
    def score_name(self) -> str:
        """What the score is, with its unit, for tables and axis labels."""
        if self.description is not None:
            return self.description
        unit = "squared error" if self.method == "recon" else (
            "bits/dim" if self.unit == "bits" else "nats per example"
        )
        name = SCORE_LABELS.get(self.method, self.method).format(k=self.k)
        if self.relative:
            name += " relative to the saturated model"
        return name if self.method == "recon" else f"{name}, {unit}"

    def to_records(self) -> np.ndarray:
        """A structured array (N,) with fields ``index``, ``label`` (when known), ``score``, ``decision``
        (with a threshold), as written to ``.npy``."""
        fields: list[tuple[str, np.ndarray]] = [("index", np.arange(len(self.scores), dtype=np.int64))]
        if self.labels is not None:
            fields.append(("label", self.labels.astype(np.int64)))
        fields.append(("score", self.scores.astype(np.float64)))
        if self.decisions is not None:
            fields.append(("decision", self.decisions.astype(np.int8)))
        records = np.empty(len(self.scores), dtype=[(name, values.dtype) for name, values in fields])
        for name, values in fields:
            records[name] = values
        return records


def _write_scores(result: ScoreResult, out: Path) -> None:
    records = result.to_records()
    if out.suffix.lower() == ".npy":
        atomic_write_bytes(out, npy_bytes(records))
        return
    atomic_write_bytes(out, csv_bytes({name: records[name] for name in records.dtype.names or ()}))


def plot_score_histogram(result: ScoreResult, path: str | Path, *, bins: int = 50) -> Path:
    """Histogram PNG of the scores: normal (0) and flagged (1) examples in two colours, the threshold as a
    dashed line; all examples in one colour without a threshold.

    Parameters
    ----------
    result
        Scores (and decisions) from :func:`score`.
    path
        Target ``.png`` file (600 x 400 px).
    bins
        Number of equal-width bins over the range of the scores.
    """
    path = check_output(None, path, option="--histogram")
    plt = pyplot()
    scores = result.scores
    edges = np.histogram_bin_edges(scores[np.isfinite(scores)], bins=bins)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    if result.decisions is None:
        ax.hist(scores, bins=edges, color="tab:blue", label=f"all examples ({len(scores)})")
    else:
        flagged = result.decisions.astype(bool)
        ax.hist(scores[~flagged], bins=edges, color="tab:blue", alpha=0.7, label=f"normal ({int((~flagged).sum())})")
        ax.hist(scores[flagged], bins=edges, color="tab:red", alpha=0.7, label=f"flagged ({int(flagged.sum())})")
        ax.axvline(float(result.threshold), color="black", linestyle="--", label="threshold")  # type: ignore[arg-type]
    ax.set_xlabel(textwrap.fill(result.score_name, 80), fontsize=9)  # a detector's description is long
    ax.set_ylabel("examples")
    ax.set_title(f"anomaly scores of {result.source}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _validation_split(model: LatentVariableModel, data_dir: str | None, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The model's validation split (held out from training) and its labels (``None`` without), rebuilt from the
    training config it carries."""
    config_dict = model.metadata.get("training", {}).get("config")
    source = (config_dict or {}).get("data", {}).get("source")
    if not config_dict or not source or source == "array":
        raise ConfigError(
            "this model does not record a data source its validation split can be rebuilt from; pass held-out "
            "normal data to calibrate the threshold on (calibrate=..., --calibrate NAME_OR_PATH)"
        )
    config = Config.from_dict(config_dict)
    data_config = config.data if data_dir is None else Config.from_dict(
        {**config_dict, "data": {**config_dict["data"], "data_dir": data_dir}}
    ).data
    val = load_data(data_config).val
    if not isinstance(val, ExampleSet):  # a sharded dataset streams; its split is not held as rows
        raise ConfigError(f"the validation split of {source!r} is streamed; pass held-out data with --calibrate")
    examples = ExampleSet(val.raw, model.preprocessing, None, val.rows, val.binarize_seed)
    x = examples.tensor()
    if data_config.binarize == "dynamic":  # one seeded draw, like the evaluation data
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    y = None if val.labels is None else torch.as_tensor(val.labels, dtype=torch.long)
    return x, y, f"{len(x)} held-out normal examples (the validation split of {source})"


def _check_rules(threshold: float | None, fpr: float | None, contamination: float | None, calibrate: str | None,
                 out: str | Path | None, histogram: str | Path | None) -> None:
    """:func:`score`'s threshold rules and output paths, checked before any work (ConfigError, OutputError)."""
    rules = {"threshold": threshold, "fpr": fpr, "contamination": contamination}
    given = [name for name, value in rules.items() if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of threshold, fpr, contamination, not {' and '.join(given)}")
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"threshold={threshold!r} is outside its range (a finite score); give a number")
    if fpr is not None:
        check_rate(fpr, "fpr")
    if contamination is not None:
        check_rate(contamination, "contamination", 0.5, include_upper=True)
    if calibrate is not None and fpr is None:
        raise ConfigError("calibrate= (--calibrate) sets the data for fpr=; give fpr= too (e.g. fpr=0.05)")
    if out is not None and Path(out).suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError(f"cannot write scores to {str(out)!r}; use a file ending in {', '.join(OUTPUT_FORMATS)}")
    if histogram is not None:
        check_output(None, histogram, option="--histogram")


def detector_scores(model: LatentVariableModel, detector: SavedDetector, x: torch.Tensor, *, batch_size: int = 256,
                    seed: int = 0, progress: bool = False) -> np.ndarray:
    """A saved AnomalyDetector's scores (higher = more anomalous) of prepared examples ``x``: its likelihood score
    with its own method, k and relative, and its neighbour terms (:mod:`vaekit.apps.neighbors`), in float64
    (``model``, the detector's network, in float64 too) as the detector scores."""
    return detector.anomaly_scores(*_detector_inputs(model, detector, x, batch_size, seed, progress))


def detector_terms(model: LatentVariableModel, detector: SavedDetector, x: torch.Tensor, *, batch_size: int = 256,
                   seed: int = 0, progress: bool = False) -> np.ndarray:
    """What each term adds to :func:`detector_scores` (arguments the same): (n, T), the terms' robust z-scores in
    the order of ``detector.term_names``, which sum to the score; with one term, the likelihood score itself."""
    inputs = _detector_inputs(model, detector, x, batch_size, seed, progress)
    if detector.n_terms == 1:
        return inputs[0][:, None]
    return z_scores(detector.terms(*inputs), detector.center, detector.scale).T


def _detector_inputs(model: LatentVariableModel, detector: SavedDetector, x: torch.Tensor, batch_size: int,
                     seed: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The likelihood scores (n,), codes (n, L) and flattened rows (n, D) a detector's terms are computed from
    (empty (n, 0) codes or rows without their term)."""
    x = x.to(model.device, torch.float64)
    scores = anomaly_scores(model, x, detector.method, k=detector.k, batch_size=batch_size, seed=seed,
                            relative=detector.relative, progress=progress)
    codes = posterior_means(model, x) if detector.neighbors else np.zeros((len(x), 0))
    rows = x.reshape(len(x), -1).cpu().numpy() if detector.input_neighbors else np.zeros((len(x), 0))
    return finite_scores(scores), codes, rows


def _calibration_data(model: LatentVariableModel, calibrate: str | None, data_dir: str | None, seed: int, *,
                      detector: bool) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The held-out normal examples an ``fpr`` threshold is a quantile of, their labels and what they are: those
    of ``calibrate``, or the model's validation split (refused for a saved detector, which keeps none, and for a
    conditional model without labels)."""
    if calibrate is not None:
        x_cal, y_cal, cal_source, _ = model_data(model, calibrate, data_dir, seed)
        return x_cal, y_cal, f"{len(x_cal)} held-out normal examples of {cal_source}"
    if detector:
        raise ConfigError("a saved AnomalyDetector keeps no validation split; pass held-out normal rows "
                          "with --calibrate (calibrate=), or use --threshold or --contamination")
    x_cal, y_cal, what = _validation_split(model, data_dir, seed)
    if model.num_classes and y_cal is None:
        raise ConfigError("a conditional model needs labelled calibration data; pass --calibrate")
    return x_cal, y_cal, what


def _detector_description(detector: SavedDetector) -> str:
    """What a saved detector's sum of z-scores is, for logs and tables."""
    what = SCORE_LABELS.get(detector.method, detector.method).format(k=detector.k)
    what += " relative to the saturated model" if detector.relative else ""
    distances = []
    if detector.neighbors:
        distances.append("nearest training code" if detector.neighbors == 1
                         else f"{detector.neighbors} nearest training codes")
    if detector.input_neighbors:
        distances.append("nearest training row" if detector.input_neighbors == 1
                         else f"{detector.input_neighbors} nearest training rows")
    near = " and to the ".join(distances)
    return f"AnomalyDetector score: robust z-scores of the {what} and of the distance to the {near}, summed"


def _with_detector(model: LatentVariableModel | str | Path, method: str | None, k: int | None, unit: str,
                   relative: bool, detector: bool, seed: int | None = None,
                   ) -> tuple[LatentVariableModel, SavedDetector | None]:
    """The model to score and, when ``model`` is the directory of a saved AnomalyDetector (and ``detector``), that
    detector, with the network in float64 as the detector scores. A model object saved as a detector is refused
    (its neighbours are in its directory), and so is a setting of the likelihood score given for a detector."""
    if isinstance(model, LatentVariableModel):
        if detector and DETECTOR_KEY in getattr(model, "metadata", {}):
            raise ConfigError("this model was saved as an AnomalyDetector: pass its directory to score it as the "
                              "detector (or AnomalyDetector.load), or detector=False for the likelihood alone")
        return model, None
    loaded = as_model(model)
    if not detector and DETECTOR_KEY not in loaded.metadata:
        raise ConfigError(f"--likelihood-only (detector=False) is for a saved AnomalyDetector, and {str(model)!r} is "
                          "a plain model, which scores its likelihood anyway; drop it")
    saved = SavedDetector.read(find_model_dir(model), loaded.metadata) if detector else None
    if saved is None:
        return loaded, None
    given = [name for name, value in (("--method", method), ("--k", k), ("--seed", seed)) if value is not None]
    given += ["--relative"] * relative + ["--unit bits"] * (unit == "bits")
    if given:
        raise ConfigError(
            f"{str(model)!r} is a saved AnomalyDetector, which scores with its own settings ({saved.method}, "
            f"k={saved.k}, seed 0); drop {', '.join(given)}, or add --likelihood-only (detector=False) to score its "
            "network's likelihood alone"
        )
    return loaded.double(), saved


def score(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    method: str | None = None,
    k: int | None = None,
    unit: str = "nats",
    data_dir: str | None = None,
    out: str | Path | None = None,
    threshold: float | None = None,
    fpr: float | None = None,
    contamination: float | None = None,
    calibrate: str | None = None,
    histogram: str | Path | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    relative: bool = False,
    progress: bool = False,
    detector: bool = True,
) -> ScoreResult:
    """Score every example of a dataset (higher = more anomalous) and, with a threshold, decide 0/1.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory. The directory of a saved
        :class:`~vaekit.apps.estimators.AnomalyDetector` is scored as that detector scores (its likelihood score
        and neighbour distances as robust z-scores, summed: :mod:`vaekit.apps.neighbors`), with its own
        ``method``, ``k`` and ``relative``, in float64.
    data
        A built-in dataset (its test split) or a path; default the model's own source.
    method, k, unit, batch_size, seed, relative, progress
        As :func:`anomaly_scores` (with a threshold from ``fpr``, the calibration data is scored too); ``method``,
        ``k`` and ``seed`` default to ``iwae``, 100 and 0. A saved detector scores with its own (its seed is 0, as
        it scored its training rows): giving any of them for it is refused.
    detector
        ``False``: score a saved detector's network by its likelihood alone, like any model.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    out
        ``.csv`` or ``.npy`` file of one row per example: ``index``, ``label`` (when the data has labels),
        ``score`` and ``decision`` (with a threshold). ``.npy`` holds a structured array with those fields.
    threshold
        Flag examples whose score exceeds this value (in the score's unit).
    fpr
        Target false-positive rate in (0, 1): the threshold is the (1 - fpr) quantile of the scores of
        held-out normal data (``calibrate``).
    contamination
        Expected fraction of anomalies in ``data``, in (0, 0.5]: the threshold is the (1 - contamination)
        quantile of ``data``'s own scores.
    calibrate
        Held-out normal data (dataset name or path) for ``fpr``; default the model's validation split,
        rebuilt from the training config stored with the model.
    histogram
        ``.png`` file for a histogram of the scores, normal vs flagged.

    Returns
    -------
    ScoreResult

    Raises
    ------
    ConfigError
        More than one of ``threshold``, ``fpr``, ``contamination``; a rate outside its range; a non-finite
        threshold; ``calibrate`` without ``fpr``; ``method``, ``k``, ``relative`` or bits for a saved detector.
    DataError
        Data of other shapes than the model was trained on, or holding NaN or infinite values.
    OutputError
        ``out`` not ending in ``.csv`` / ``.npy``, ``histogram`` not ending in ``.png``, or unwritable paths.
    """
    _check_rules(threshold, fpr, contamination, calibrate, out, histogram)
    check_source(data)
    model, saved = _with_detector(model, method, k, unit, relative, detector, seed)
    seed = 0 if seed is None else seed
    method, k = (saved.method, saved.k) if saved is not None else (method or "iwae", 100 if k is None else k)

    def scores_of(x: torch.Tensor, y: torch.Tensor | None, show: bool = progress) -> np.ndarray:
        y = y if model.num_classes else None  # only a conditional model reads labels
        if saved is not None:
            return detector_scores(model, saved, x, batch_size=batch_size, seed=seed, progress=show)
        scores = anomaly_scores(
            model, x, method, k=k, unit=unit, y=y, batch_size=batch_size, seed=seed, relative=relative,
            progress=show,
        )
        return scores.double().numpy()

    rule = "none"  # the threshold rules that do not depend on the scored data come first (streamed tables)
    if threshold is not None:
        rule = f"threshold={threshold:g} (given)"
    elif fpr is not None:
        x_cal, y_cal, what = _calibration_data(model, calibrate, data_dir, seed, detector=saved is not None)
        threshold = quantile_threshold(scores_of(x_cal, y_cal), fpr)
        rule = f"fpr={fpr:g} on {what}"
    chunks = table_chunks(model, data)  # a table file: read and scored chunk by chunk, never whole
    if chunks is None:
        chunks = set_chunks(model, data, data_dir)  # sparse rows (interactions): densified a chunk at a time
    stream_out = None
    if chunks is None:
        x, y, source, how = model_data(model, data, data_dir, seed)
        scores = scores_of(x, y)
        labels = None if y is None else y.cpu().numpy().astype(np.int64)
    else:
        if out is not None and Path(out).suffix.lower() == ".csv" and contamination is None:
            stream_out = Path(out)  # written as the chunks are scored
        scores, labels = stream_scores(chunks, lambda x, y: scores_of(x, y, False), stream_out, threshold, progress)
        source, how = data or model.preprocessing.source, "read in chunks"
    logger.info("scored %d examples of %s (%s)", len(scores), source, how)
    if contamination is not None:
        threshold = quantile_threshold(scores, contamination)
        rule = f"contamination={contamination:g} of the scored data"
    decisions = None if threshold is None else (scores > threshold).astype(np.int8)
    result = ScoreResult(
        scores=scores,
        labels=labels,
        decisions=decisions,
        threshold=threshold,
        threshold_rule=rule,
        method=method,
        k=k,
        unit=unit if saved is None or saved.n_terms == 1 else "z",
        source=source,
        relative=relative if saved is None else saved.relative,
        description=_detector_description(saved) if saved is not None and saved.n_terms > 1 else None,
    )
    if out is not None and stream_out is None:
        if chunks is not None and Path(out).suffix.lower() == ".csv":
            write_csv_in_chunks(Path(out), scores, labels, decisions)  # bounded memory for large tables
        else:
            _write_scores(result, Path(out))
    if histogram is not None:
        plot_score_histogram(result, histogram)
    return result

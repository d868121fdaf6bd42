"""A density fitted to the training codes, for sampling (``model.latent_density``: Gaussians per class).

A VAE's prior p(z) = N(0, I) and its aggregate posterior q(z) = E_x q(z|x) differ: parts of the prior that no
training example's code occupies ("holes") decode to examples unlike the data, and a conditional model's encoder
can still put the class into z (the label enters the decoder, but nothing stops the code from carrying it too),
so prior draws decoded with label 7 can come out as other digits. Ex-post density estimation (Ghosh et al.
2020, "From variational to deterministic autoencoders", arXiv:1903.12436; the two-stage VAE of Dai and Wipf
2019, arXiv:1903.05789, learns it instead) fits a Gaussian mixture to the posterior means of the training
examples after training, per class for a conditional model, and draws the latents of new samples from it.

It changes what ``sample`` draws, not the model: the ELBO, the NLL, anomaly scores and compression still use
p(z) = N(0, I), so samples drawn from the fitted density are not draws of the distribution the NLL measures.
``vaekit sample --latents prior`` (``latents="prior"``) draws from the model itself.

The mixture lives in the model's weights as buffers of fixed shape (``components`` per class, or in all for an
unconditional model), so ``model.safetensors`` carries it and a model without one loads as before. Components
are fitted by scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (full covariances, ``reg_covar`` added to
their diagonals); a class with fewer training examples than components gets as many components as it has
examples, and a class absent from the training data keeps N(0, I).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from vaekit.errors import ConfigError, DataError

REG_COVAR = 1e-4  # added to every covariance's diagonal: codes of a few examples have a singular covariance
LATENTS = ("auto", "prior", "fitted")  # where sampling takes its latents from


class FittedLatents(nn.Module):
    """A Gaussian mixture over z with ``components`` full-covariance components per class (``num_classes`` >= 1
    classes; 1 for an unconditional model). Unfitted until :meth:`fit`; then :meth:`draw` samples it.

    Buffers (saved with the weights): ``weights`` (C,) mixture weights, summing to 1 within each class;
    ``means`` (C, L); ``scale_tril`` (C, L, L) Cholesky factors of the covariances; ``classes`` (C,) the class of
    each component; ``fitted`` () 1 once fitted.
    """

    weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor
    classes: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, latent_dim: int, components: int, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.components, self.num_classes = latent_dim, components, num_classes
        groups = max(1, num_classes)
        total = groups * components
        weights = torch.zeros(total)
        weights[::components] = 1.0  # unfitted: each class is N(0, I), its first component
        self.register_buffer("weights", weights)
        self.register_buffer("means", torch.zeros(total, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).expand(total, -1, -1).clone())
        self.register_buffer("classes", torch.arange(groups).repeat_interleave(components))
        self.register_buffer("fitted", torch.zeros(()))

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has filled the mixture."""
        return bool(self.fitted)

    def fit(self, codes: np.ndarray, labels: np.ndarray | None = None, seed: int = 0) -> None:
        """Fit the mixture to ``codes`` (N, L), the posterior means of training examples, with their ``labels``
        (N,) for a conditional model."""
        from sklearn.mixture import GaussianMixture

        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim or not len(codes):
            raise DataError(f"fitting the latent density needs codes of shape (N, {self.latent_dim}) with N >= 1, "
                            f"got {codes.shape}")
        if not np.isfinite(codes).all():
            raise DataError("the training codes hold NaN or infinite values; the model diverged, retrain it")
        if self.num_classes and labels is None:
            raise DataError("a conditional model's latent density is fitted per class; pass the labels")
        labels = np.zeros(len(codes), dtype=np.int64) if not self.num_classes else np.asarray(labels, dtype=np.int64)
        weights, means = torch.zeros_like(self.weights), torch.zeros_like(self.means)
        tril = torch.eye(self.latent_dim).expand(len(self.weights), -1, -1).clone()
        for group in range(max(1, self.num_classes)):
            first = group * self.components
            own = codes[labels == group]
            if not len(own):
                weights[first] = 1.0  # a class never seen in training keeps N(0, I)
                continue
            k = min(self.components, len(own))
            mixture = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR, random_state=seed).fit(own)
            weights[first : first + k] = torch.from_numpy(mixture.weights_)
            means[first : first + k] = torch.from_numpy(mixture.means_)
            tril[first : first + k] = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_))
        device = self.means.device
        self.weights.copy_(weights.to(device))
        self.means.copy_(means.to(device))
        self.scale_tril.copy_(tril.to(device))
        self.fitted.fill_(1.0)

    def draw(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(n, L) seeded draws, the spread about each component's mean scaled by ``temperature``; ``y`` (n,): the
        class of each draw (a conditional mixture needs it)."""
        if self.num_classes and y is None:
            raise ConfigError("this model's fitted latent density is per class; pass a label for each sample")
        device = self.means.device
        rows = torch.zeros(n, dtype=torch.long, device=device) if y is None else y.to(device).long()  # (n,)
        probs = self.weights.unsqueeze(0) * (self.classes.unsqueeze(0) == rows.unsqueeze(1))  # (n, C)
        component = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (n,)
        eps = torch.randn(n, self.latent_dim, 1, generator=generator, device=device, dtype=self.means.dtype)
        return self.means[component] + temperature * (self.scale_tril[component] @ eps).squeeze(-1)


def check_latents(latents: str) -> str:
    """``latents`` if it names a source of sampling latents, else a ConfigError listing them."""
    if latents not in LATENTS:
        raise ConfigError(f"latents must be one of {', '.join(LATENTS)}, got {latents!r}")
    return latents


MAX_CODES = 100_000  # training examples whose codes the density is fitted to (a seeded sample of larger sets)


@torch.no_grad()
def fit_latent_density(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], seed: int = 0
) -> int:
    """Fit ``model.latent_density`` to the posterior means of the examples in ``batches`` ((x, y) pairs, y the
    labels of a conditional model or None), at most :data:`MAX_CODES` of them; returns how many were used.

    Raises ConfigError for a model built without ``model.latent_density``."""
    density = getattr(model, "latent_density", None)
    if density is None:
        raise ConfigError("this model was built without model.latent_density; set it (e.g. 1) and train again")
    was_training = model.training
    model.eval()
    codes, labels, used = [], [], 0
    for x, y in batches:
        x, y = x[: MAX_CODES - used], None if y is None else y[: MAX_CODES - used]
        codes.append(model.encode(x, y).mean.float().cpu())  # type: ignore[operator]
        labels.append(None if y is None else y.cpu())
        used += len(x)
        if used >= MAX_CODES:
            break
    model.train(was_training)
    if not used:
        raise DataError("no training examples to fit the latent density to")
    y_all = None if labels[0] is None else torch.cat(labels).numpy()  # type: ignore[arg-type]
    density.fit(torch.cat(codes).double().numpy(), y_all, seed=seed)
    return used

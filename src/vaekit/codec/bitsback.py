"""Bits-back coding with a trained model: the glue between the model contract and the codecs of
:mod:`vaekit.codec.codecs`.

BB-ANS (Townsend, Bird and Barber 2019, arXiv:1901.04866) codes an example x at a net cost of
-log p(x|z) - log p(z) + log q(z|x) bits, the negative ELBO, using only the model contract::

    x symbols (B, D) ──to_input──> x ──encode──> q(z|x) ──buckets──> Categorical over 2^b buckets ─┐ pop z
                                                                                                  ▼
    z buckets (B, L) ──centres──> z ──decode──> p(x|z) ──likelihood codec──> push x; Uniform(2^b) push z

Latents are discretized as in the paper: each dimension of the prior is cut into ``2^latent_bits`` buckets of
equal prior mass, so p(z) is uniform over buckets (exactly ``latent_bits`` bits per dimension) and a bucket is
decoded as its centre (the prior quantile at (j + 1/2) / 2^b). q(z|x) gives each bucket its Gaussian mass,
coded in two levels (coarse bucket, then the bucket inside it).

:meth:`BitsBackModel.prepare` is the explicit step that builds these tables from the model (the bucket edges
and centres of its prior) and records the model's fingerprint; coding before it, or after the weights
changed, raises :class:`NotPreparedError`.

Parts and their coding precision (all in :class:`CodingConfig`):

==============  ===========================================================================================
part            precision
==============  ===========================================================================================
p(z)            ``latent_bits`` (default 12): buckets per latent dimension, 2^latent_bits, uniform
q(z|x)          ``posterior_precision`` (default 24): bits of the integer tables of the bucket masses
p(x|z)          ``likelihood_precision`` (default 24): bits of the integer tables of the data symbols
==============  ===========================================================================================

At 24 bits (the ANS coder's own precision) constriction quantizes the probabilities itself; below, vaekit
rounds them first (:func:`vaekit.codecs.quantize`) and the coder codes those tables exactly. Either way every
value keeps a frequency of at least 1, so any data can be coded.

Symbols: every likelihood that can code discrete data registers a :class:`SymbolCoding` in
:data:`SYMBOL_CODINGS`: ``bernoulli`` codes 0/1, ``discretized_logistic`` codes the 256 levels of 8-bit data
(in two levels of 16, coarse then fine).

Chunks are coded independently (:func:`encode_chunk`, :func:`decode_chunk`). Each starts from fixed
pseudo-random words (:func:`vaekit.codecs.initial_words`) that the first pop reads; only the part consumed
is stored, and it is the coder's one-off overhead per chunk (about ``latent_dim * latent_bits`` bits, the
"initial bits" of the paper). Batches start at one example and grow only as fast as the bits already on the
stack allow, so later pops never reach into the initial words. Decoding runs the batches in reverse with the
same sizes, and chunks are coded on one thread (matrix products round differently on different thread counts),
so the networks see exactly the inputs and batch shapes they saw when encoding and the decoder recomputes
identical tables. (Floating point may differ between CPU types and torch builds, so decompress on the platform
that compressed; a mismatch is caught by checksums, never returned as data.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal

from vaekit.codec.codecs import (
    Autoregressive,
    BitsBack,
    Categorical,
    Codec,
    CodecError,
    TwoLevel,
    Uniform,
    ans_coder,
    initial_words,
)
from vaekit.config import Config
from vaekit.errors import ConfigError, DataError
from vaekit.models import LatentVariableModel, family_name
from vaekit.models.likelihoods import LEVELS, DiscretizedLogisticMixture, Likelihood
from vaekit.registry import Registry


class NotPreparedError(CodecError):
    """Coding was asked of a model whose tables were not built (or were built for other weights)."""


@dataclass(frozen=True)
class CodingConfig:
    """Parameters of bits-back coding; written into every compressed file, so decompress uses the same.

    Parameters
    ----------
    latent_bits
        Each latent dimension is cut into 2^latent_bits buckets of equal prior mass (4..20). More buckets track
        the continuous ELBO more closely and cost only a few more initial bits per chunk.
    posterior_precision
        Bits of the integer probability tables of q(z|x) over buckets (8..24).
    likelihood_precision
        Bits of the integer probability tables of p(x|z) over data symbols (8..24).
    batch_size
        Most examples per network pass (batches start at 1 in each chunk and grow to this).
    threads
        Each batch is cut into this many blocks of examples, whose networks and tables are computed on parallel
        threads (each on one PyTorch thread). The cut fixes the shapes the networks see, so it is stored in the
        file and decompress makes the same cut on any machine.
    """

    latent_bits: int = 12
    posterior_precision: int = 24
    likelihood_precision: int = 24
    batch_size: int = 256
    threads: int = 2

    def __post_init__(self) -> None:
        if not 4 <= self.latent_bits <= 20:
            raise ConfigError(f"latent_bits must be in 4..20, got {self.latent_bits}; 12 is the default")
        for name in ("posterior_precision", "likelihood_precision"):
            value = getattr(self, name)
            if not 8 <= value <= 24:
                raise ConfigError(f"{name} must be in 8..24 bits, got {value}; 24 is the default")
        if self.posterior_precision <= self.latent_bits - self.latent_bits // 2:
            raise ConfigError(
                f"posterior_precision={self.posterior_precision} cannot code buckets in groups of "
                f"2^{self.latent_bits - self.latent_bits // 2}; raise it or lower latent_bits"
            )
        if not 1 <= self.batch_size <= 65536:
            raise ConfigError(f"batch_size must be in 1..65536, got {self.batch_size}")
        if not 1 <= self.threads <= 64:
            raise ConfigError(f"threads must be in 1..64, got {self.threads}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> CodingConfig:
        """Rebuild from :meth:`to_dict`; raises DataError for anything else."""
        names = {f for f in cls.__dataclass_fields__}
        if not isinstance(data, dict) or set(data) != names or not all(type(v) is int for v in data.values()):
            raise DataError(f"coding parameters {data!r} are malformed; the compressed file is corrupted")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise DataError(f"coding parameters in the compressed file are invalid ({exc})") from None


# -- symbols of each likelihood -------------------------------------------------------------------------------
def _masses(cdf_at_edges: torch.Tensor) -> torch.Tensor:
    """Masses between consecutive edges from the CDF there, (..., K + 1) -> (..., K), in the CDF's dtype.

    Plain differences: their absolute error (float32: ~6e-8; float64: ~1e-16) is at most the 2^-24 quantum of
    the tables, and masses smaller than that quantum are raised to it when the tables are built anyway.
    """
    return torch.diff(cdf_at_edges, dim=-1).clamp_(min=0)


@dataclass(frozen=True)
class Tables:
    """Probability tables of a block of N symbols: one level, or a coarse level then a fine one.

    Attributes
    ----------
    coarse
        (N, K) probabilities of the symbol (one level) or of its coarse part s // fine_size.
    fine
        Coarse values (N,) -> (N, fine_size) probabilities of the fine part s % fine_size; ``None`` for one level.
    fine_size
        Number of fine values per coarse value.
    """

    coarse: torch.Tensor
    fine: Callable[[torch.Tensor], torch.Tensor] | None = None
    fine_size: int = 1


def _bernoulli_tables(px_z: Distribution) -> Tables:
    if not isinstance(px_z, Independent) or not hasattr(px_z.base_dist, "logits"):
        raise ConfigError("the bernoulli likelihood did not return Bernoulli logits; it cannot be coded")
    logits = px_z.base_dist.logits.detach().double().reshape(-1)  # (N,)
    return Tables(torch.stack([torch.sigmoid(-logits), torch.sigmoid(logits)], dim=1))  # (N, 2): P(0), P(1)


_GROUP = 16  # 256 levels = 16 groups of 16: two tables of 16 instead of one of 256
# Where level e begins, in units of x: (e - 1/2) / 255, from -inf (level 0) to +inf (level 256, past the end).
_LEVEL_EDGES = torch.cat([
    torch.tensor([-math.inf]), (torch.arange(1, LEVELS) - 0.5) / (LEVELS - 1), torch.tensor([math.inf])
]).float()


def _logistic_tables(px_z: Distribution) -> Tables:
    if not isinstance(px_z, DiscretizedLogisticMixture):
        raise ConfigError("the discretized_logistic likelihood returned another distribution; it cannot be coded")
    m = px_z.means.shape[1]
    # float32 keeps the CDF within ~2^-24 of exact, the resolution of the tables, at half the cost of float64.
    weights = torch.softmax(px_z.logit_weights.detach().float(), dim=1).movedim(1, -1).reshape(-1, m, 1)  # (N,M,1)
    means = px_z.means.detach().float().movedim(1, -1).reshape(-1, m, 1)  # (N, M, 1)
    inv_scales = torch.exp(-px_z.log_scales.detach().float()).movedim(1, -1).reshape(-1, m, 1)

    def masses(edge_levels: torch.Tensor) -> torch.Tensor:
        """Probabilities of the level ranges between edges (N or 1, K + 1): level e begins at (e - 1/2) / 255."""
        cdf = ((_LEVEL_EDGES[edge_levels].unsqueeze(1) - means) * inv_scales).sigmoid_()  # (N, M, K + 1)
        if m > 1:  # the mixture's CDF
            cdf = (weights * cdf).sum(dim=1, keepdim=True)  # (N, 1, K + 1)
        return _masses(cdf[:, 0])  # (N, K)

    def fine(groups: torch.Tensor) -> torch.Tensor:
        return masses(groups.long().unsqueeze(1) * _GROUP + torch.arange(_GROUP + 1))

    return Tables(masses(torch.arange(0, LEVELS + 1, _GROUP).unsqueeze(0)), fine, _GROUP)


@dataclass(frozen=True)
class SymbolCoding:
    """How one likelihood codes data: its symbols, their model input, and the codec of p(x|z).

    Attributes
    ----------
    levels
        Symbols are the integers 0..levels-1.
    scale
        The model input of symbol s is s / scale.
    integer_only
        Whether the data must be stored as integers (else 0.0 / 1.0 floats are accepted too).
    describe
        The support in words, for error messages.
    tables
        p(x|z) of a block of examples -> the :class:`Tables` of its flattened symbols.
    """

    levels: int
    scale: float
    integer_only: bool
    describe: str
    tables: Callable[[Distribution], Tables] = field(repr=False)


SYMBOL_CODINGS: Registry[SymbolCoding] = Registry("likelihood for lossless coding")
SYMBOL_CODINGS.register("bernoulli")(SymbolCoding(2, 1.0, False, "binary values {0, 1}", _bernoulli_tables))
SYMBOL_CODINGS.register("discretized_logistic")(
    SymbolCoding(LEVELS, float(LEVELS - 1), True, "8-bit integers 0..255", _logistic_tables)
)


def symbol_coding(model: LatentVariableModel) -> SymbolCoding:
    """The :class:`SymbolCoding` of a model's likelihood, or ConfigError naming those that can code data."""
    if not isinstance(getattr(model, "likelihood", None), Likelihood):  # p(x|z) is the family's own (text)
        raise ConfigError(
            f"compress codes data under the registered likelihoods ({', '.join(SYMBOL_CODINGS.names())}); the "
            f"{model.family!r} family's p(x|z) is its own (for text: an autoregressive decoder over token sequences), "
            "and bits-back coding of it is not implemented: compress the text with gzip, bz2 or xz"
        )
    name = model.config.likelihood
    if name not in SYMBOL_CODINGS:
        why = "it is continuous" if name != "multinomial" else "it models counts over items, not symbols to code"
        raise ConfigError(
            f"a model with the {name!r} likelihood cannot code data losslessly ({why}); train one with "
            f"model.likelihood set to one of: {', '.join(SYMBOL_CODINGS.names())}"
        )
    return SYMBOL_CODINGS.get(name)


# -- the model, prepared -----------------------------------------------------------------------------------------
MODEL_KEYS_0_1 = ("architecture", "likelihood", "latent_dim", "hidden_dims", "channels", "activation", "gaussian_scale",
                  "num_classes", "mixture_components", "latent_layers", "residual_blocks", "weight_norm")


def model_fingerprint(model: LatentVariableModel) -> str:
    """SHA-256 (hex) of the model's config, data shape and every weight: which model coded a file.

    Config keys added after vaekit 0.1 (``family``, ``prior``, ``input_norm``, ...) are left out while they hold what
    0.1 models were (the family ``auto`` picks, every other one its default), so files coded by 0.1, or before a
    key was added, still decompress."""
    digest = hashlib.sha256()
    config = {**Config(model=model.config).to_dict()["model"], "data_shape": list(model.data_shape)}
    if family_name(dataclasses.replace(model.config, family="auto")) == model.family:
        del config["family"]
    defaults = Config().to_dict()["model"]
    for key in set(config) - set(MODEL_KEYS_0_1) - {"family", "data_shape"}:
        if config[key] == defaults[key]:
            del config[key]
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.numpy().astype(array.numpy().dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run PyTorch on one thread inside the block (and restore the setting after it).

    Matrix products and convolutions split their sums differently on different thread counts, so their last bits
    depend on it. Chunks are coded on one thread, so a file decompresses whatever the thread setting of either
    side. (Switching per network pass would cost more than it gains: each switch restarts the thread pool.)
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _weights_version(model: LatentVariableModel) -> tuple[tuple[int, int], ...]:
    """Identity and in-place version counter of every weight: any optimizer step or load changes it."""
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())


@dataclass(frozen=True)
class _Tables:
    edges: np.ndarray  # (2^b + 1,) float64 bucket edges of N(0, 1), -inf and +inf at the ends
    scaled_edges: torch.Tensor  # (2^b + 1,) float64, -edges / sqrt(2) (for erfc)
    centres: torch.Tensor  # (2^b,) float32 bucket centres of N(0, 1)
    prior_loc: torch.Tensor  # (L,) float64
    prior_scale: torch.Tensor  # (L,) float64
    fingerprint: str
    version: tuple[tuple[int, int], ...]


class BitsBackModel:
    """A VAE made ready for bits-back coding (BB-ANS, Townsend et al. 2019, arXiv:1901.04866).

    Parameters
    ----------
    model
        An unconditional VAE whose likelihood is in :data:`SYMBOL_CODINGS` and whose prior and posterior are
        diagonal Gaussians.
    config
        Coding precisions and the batch size.

    Examples
    --------
    >>> coder = BitsBackModel(model).prepare()          # doctest: +SKIP
    >>> coder.codec(batch).push(ans, symbols)           # doctest: +SKIP
    """

    def __init__(self, model: LatentVariableModel, config: CodingConfig | None = None) -> None:
        self.model = model
        self.config = config or CodingConfig()
        self.coding = symbol_coding(model)
        if model.num_classes:
            raise ConfigError(
                "compress codes data with unconditional models; this model is conditional on labels "
                f"(model.num_classes={model.num_classes}), train one with model.num_classes=0"
            )
        self._tables: _Tables | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare` built tables for the model's current weights."""
        return self._tables is not None and self._tables.version == _weights_version(self.model)

    @property
    def fingerprint(self) -> str:
        return self._checked().fingerprint

    @torch.no_grad()
    def prepare(self) -> BitsBackModel:
        """Build the quantized tables: equal-mass buckets of the prior and the model fingerprint. Returns self."""
        pz = self.model.prior()
        base = pz.base_dist if isinstance(pz, Independent) else pz
        if not isinstance(base, Normal):
            raise ConfigError("bits-back coding needs a diagonal Gaussian prior p(z)")
        self.model.eval()
        buckets = 2**self.config.latent_bits
        quantiles = torch.arange(buckets + 1, dtype=torch.float64) / buckets
        edges = torch.special.ndtri(quantiles)  # -inf, ..., +inf
        centres = torch.special.ndtri((torch.arange(buckets, dtype=torch.float64) + 0.5) / buckets)
        loc = base.loc.detach().double().cpu().expand(self.model.latent_dim)
        scale = base.scale.detach().double().cpu().expand(self.model.latent_dim)
        self._tables = _Tables(
            edges=edges.numpy(), scaled_edges=edges * -math.sqrt(0.5), centres=centres.float(), prior_loc=loc,
            prior_scale=scale,
            fingerprint=model_fingerprint(self.model), version=_weights_version(self.model),
        )
        return self

    def _checked(self) -> _Tables:
        if self._tables is None:
            raise NotPreparedError(
                "the model is not prepared for coding: call BitsBackModel.prepare() first (it builds the "
                "quantized latent tables)"
            )
        if self._tables.version != _weights_version(self.model):
            raise NotPreparedError(
                "the model's weights changed after prepare(); call prepare() again to rebuild the tables"
            )
        return self._tables

    # -- the three codecs of BB-ANS ---------------------------------------------------------------------------
    def to_input(self, symbols: np.ndarray) -> torch.Tensor:
        """Model input (n, *data_shape) float32 of flat or (n, D) symbols."""
        x = torch.from_numpy(np.asarray(symbols, dtype=np.float32)) / self.coding.scale
        return x.reshape(-1, *self.model.data_shape).to(self.model.device)

    def _latents(self, buckets: np.ndarray, width: int | None = None) -> torch.Tensor:
        """Bucket indices -> latent values (n, width): the first ``width`` (default all) latent dimensions."""
        tables = self._checked()
        width = self.model.latent_dim if width is None else width
        index = torch.from_numpy(np.ascontiguousarray(buckets)).long().reshape(-1, width)  # (n, width)
        z = tables.prior_loc[:width] + tables.prior_scale[:width] * tables.centres[index].double()
        return z.float().to(self.model.device)

    def _blocks(self, n: int) -> list[slice]:
        """The example rows of a batch of n, cut into ``threads`` blocks (a function of n alone)."""
        parts = min(self.config.threads, n)
        sizes = [n // parts + (i < n % parts) for i in range(parts)]
        bounds = np.cumsum([0, *sizes]).tolist()
        return [slice(a, b) for a, b in itertools.pairwise(bounds)]

    def _map(self, fn: Callable[[int], Any], count: int) -> list[Any]:
        """[fn(0), ..., fn(count - 1)], on parallel threads when there are several."""
        if count == 1:
            return [fn(0)]
        if self._pool is None:
            # A new thread does not inherit torch.set_num_threads(1): each worker sets it for itself, or its matrix
            # products would split over a thread count that varies from run to run (and so would their last bits).
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.threads, thread_name_prefix="vaekit-coder",
                initializer=torch.set_num_threads, initargs=(1,),
            )
        return list(self._pool.map(fn, range(count)))

    def _codec(self, blocks: list[Tables], rows: list[slice], precision: int) -> Codec:
        """One codec of the concatenated blocks; the fine tables of a two-level code are built block by block."""
        coarse = Categorical.from_probabilities(torch.cat([b.coarse for b in blocks]), precision)
        first = blocks[0]
        if first.fine is None:
            return coarse

        def fine(groups: np.ndarray) -> Codec:
            values = torch.from_numpy(groups)
            parts = self._map(lambda i: blocks[i].fine(values[rows[i]]), len(blocks))  # type: ignore[misc]
            return Categorical.from_probabilities(torch.cat(parts), precision)

        return TwoLevel(coarse, fine, first.fine_size)

    @torch.no_grad()
    def likelihood_codec(self, buckets: np.ndarray) -> Codec:
        """Codec of x under p(x|z), z the centres of ``buckets`` (n * L,)."""
        latents = self._latents(buckets)  # (n, L)
        blocks = self._blocks(len(latents))
        tables = self._map(lambda i: self.coding.tables(self.model.decode(latents[blocks[i]])), len(blocks))
        dims = self.model.num_dims
        rows = [slice(b.start * dims, b.stop * dims) for b in blocks]
        return self._codec(tables, rows, self.config.likelihood_precision)

    @torch.no_grad()
    def posterior_codec(self, symbols: np.ndarray) -> Codec:
        """Codec of the buckets of z under q(z|x) for x given as symbols (n * D,).

        A model of several stochastic layers (:mod:`vaekit.models.hierarchical`) is coded layer by layer, top
        first: each layer's q is computed given the bucket centres already fixed for the layers above it, on the
        encoder's and the decoder's side alike."""
        x = self.to_input(symbols)  # (n, *shape)
        blocks = self._blocks(len(x))
        sizes = self.model.layer_sizes
        if len(sizes) > 1:
            encode = self.model.encode
            posteriors = self._map(lambda i: encode(x[blocks[i]]).layers(), len(blocks))

            def layer(j: int, earlier: np.ndarray) -> Codec:
                upper = self._latents(earlier, width=earlier.shape[1]) if earlier.size else None
                tables = self._map(
                    lambda i: self._gaussian_tables(*posteriors[i].conditional(j, _rows(upper, blocks[i], x))),
                    len(blocks),
                )
                rows = [slice(b.start * sizes[j], b.stop * sizes[j]) for b in blocks]
                return self._codec(tables, rows, self.config.posterior_precision)

            return Autoregressive(tuple(sizes), layer)
        tables = self._map(lambda i: self._posterior_tables(x[blocks[i]]), len(blocks))
        latent = self.model.latent_dim
        rows = [slice(b.start * latent, b.stop * latent) for b in blocks]
        return self._codec(tables, rows, self.config.posterior_precision)

    def _posterior_tables(self, x: torch.Tensor) -> Tables:
        """Bucket masses of q(z|x), coarse bucket then the bucket inside it, for a block of examples."""
        tables = self._checked()
        qz_x = self.model.encode(x)
        base = qz_x.base_dist if isinstance(qz_x, Independent) else qz_x
        if not isinstance(base, Normal):
            raise ConfigError("bits-back coding needs a diagonal Gaussian posterior q(z|x)")
        # Standardize by the prior, whose buckets are those of N(0, 1).
        loc, scale = base.loc.detach().double().cpu(), base.scale.detach().double().cpu()
        return self._gaussian_tables((loc - tables.prior_loc) / tables.prior_scale, scale / tables.prior_scale)

    def _gaussian_tables(self, mean: torch.Tensor, std: torch.Tensor) -> Tables:
        """Bucket masses of N(mean, std^2) in the prior's standardized coordinates, coarse then fine."""
        tables = self._checked()
        mu = mean.detach().double().cpu().reshape(-1, 1)
        sigma = std.detach().double().cpu().reshape(-1, 1)
        fine_size = 2 ** (self.config.latent_bits - self.config.latent_bits // 2)
        # Phi(t) = erfc(-t / sqrt 2) / 2, with t = (edge - mu) / sigma: erfc of (scaled edge + shift) * gain.
        shift, gain = mu * math.sqrt(0.5), 1.0 / sigma

        def masses(index: torch.Tensor) -> torch.Tensor:
            cdf = torch.erfc((tables.scaled_edges[index] + shift).mul_(gain))  # (n L, K + 1): 2 Phi(t)
            return (cdf[:, 1:] - cdf[:, :-1]).clamp_(min=0)  # twice the bucket masses (tables normalize)

        def fine(groups: torch.Tensor) -> torch.Tensor:
            return masses(groups.long().unsqueeze(1) * fine_size + torch.arange(fine_size + 1))

        coarse_index = torch.arange(0, len(tables.edges), fine_size).unsqueeze(0)  # (1, 2^coarse + 1)
        return Tables(masses(coarse_index), fine, fine_size)

    def codec(self, n: int) -> BitsBack:
        """The BB-ANS codec of a batch of ``n`` examples, given as (n, D) symbols."""
        self._checked()
        prior = Uniform(2**self.config.latent_bits, n * self.model.latent_dim)
        return BitsBack(prior=prior, likelihood=self.likelihood_codec, posterior=self.posterior_codec)


def _rows(upper: torch.Tensor | None, rows: slice, x: torch.Tensor) -> torch.Tensor:
    """The fixed upper-layer latents of a block of examples; (n, 0) for the top layer, which has none."""
    return upper[rows] if upper is not None else x.new_zeros(rows.stop - rows.start, 0)


# -- chunks ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedChunk:
    """One independently decodable chunk: its ANS words above the untouched initial words, and how to undo it.

    Attributes
    ----------
    words
        uint32 words of the stack, above the first ``prefix`` initial words (which are not stored).
    initial
        How many initial words the stack started from.
    prefix
        How many of them were never touched.
    schedule
        Batch sizes in coding order.
    """

    words: np.ndarray
    initial: int
    prefix: int
    schedule: tuple[int, ...]

    @property
    def initial_bits(self) -> int:
        """Bits of the initial words the chunk consumed: the coder's one-off overhead."""
        return 32 * (self.initial - self.prefix)


def initial_word_count(model: LatentVariableModel, config: CodingConfig) -> int:
    """Initial words per chunk: room for several first pops (their cost is only what is read)."""
    return 4 * math.ceil(model.latent_dim * (config.latent_bits + 8) / 32) + 8


def encode_chunk(
    coder: BitsBackModel, symbols: np.ndarray, on_batch: Callable[[int], None] | None = None
) -> EncodedChunk:
    """Code (n, D) symbols into one chunk with bits-back ANS.

    Batches start at one example; each next batch holds as many examples as the bits already pushed above the
    initial words can pay for (``latent_dim * latent_bits`` bits each), up to ``batch_size``.
    """
    config = coder.config
    count = initial_word_count(coder.model, config)
    start_words = initial_words(count)
    ans = ans_coder(start_words)
    base_bits = int(ans.num_valid_bits())
    pop_bits = coder.model.latent_dim * config.latent_bits
    schedule: list[int] = []
    done, n = 0, len(symbols)
    with single_threaded():
        while done < n:
            room = max(0, int(ans.num_valid_bits()) - base_bits) // pop_bits
            size = min(config.batch_size, n - done, max(1, room))
            coder.codec(size).push(ans, symbols[done : done + size])
            schedule.append(size)
            done += size
            if on_batch is not None:
                on_batch(size)
    words = ans.get_compressed()
    same = words[: len(start_words)] == start_words[: len(words)]
    prefix = int(np.argmin(same)) if not same.all() else len(same)
    prefix = min(prefix, len(words) - 1)  # keep at least the top word in the stored part
    return EncodedChunk(words[prefix:].copy(), count, prefix, tuple(schedule))


def decode_chunk(
    coder: BitsBackModel, chunk: EncodedChunk, on_batch: Callable[[int], None] | None = None
) -> np.ndarray:
    """Decode a chunk back to its (n, D) symbols (int64).

    Raises
    ------
    DataError
        If the words are not a valid stack or the stack does not end as it began (the data or the model
        differ from those that coded it).
    """
    start_words = initial_words(chunk.initial)
    if not 0 <= chunk.prefix <= chunk.initial:
        raise DataError("a chunk header is inconsistent (initial words); the compressed file is corrupted")
    try:
        ans = ans_coder(np.concatenate([start_words[: chunk.prefix], chunk.words]))
    except ValueError:
        raise DataError("a chunk's coded words are invalid; the compressed file is corrupted") from None
    dims = coder.model.num_dims
    n = sum(chunk.schedule)
    out = np.empty((n, dims), dtype=np.int64)
    ends = np.cumsum(chunk.schedule)
    with single_threaded():
        for size, end in zip(reversed(chunk.schedule), reversed(ends.tolist()), strict=True):
            out[end - size : end] = coder.codec(size).pop(ans).reshape(size, dims)
            if on_batch is not None:
                on_batch(size)
    if not np.array_equal(ans.get_compressed(), start_words):
        raise DataError(
            "decoding did not end where encoding began: the file is corrupted, or the model computes differently "
            "here than where the file was compressed"
        )
    return out

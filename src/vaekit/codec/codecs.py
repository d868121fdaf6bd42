"""Entropy codecs: (push, pop) pairs on an ANS stack, composable up to bits-back coding.

A codec codes a fixed number of integer symbols. ``push(coder, symbols)`` adds them to the ANS stack and
``pop(coder)`` takes them off again, so ``pop`` after ``push`` returns the symbols and leaves the stack bit for
bit as it was. The stack is `constriction`'s ``AnsCoder`` (Bamler 2022, arXiv:2201.01741): vaekit writes no
coder of its own, only codecs built from it::

    Categorical(table)         N symbols, each with its own quantized table over K values
    Uniform(size, count)       count symbols uniform over 0..size-1
    TwoLevel(coarse, fine, m)  symbols s = c * m + f: c with ``coarse``, then f with ``fine(c)``; a table over
                               K = (number of coarse values) * m values costs two tables of sqrt(K) entries
    BitsBack(prior, likelihood, posterior)
                               BB-ANS (Townsend, Bird and Barber 2019, arXiv:1901.04866), a codec for x:

        push(x):  z <- pop with q(z|x)    push x with p(x|z)    push z with p(z)
        pop():    z <- pop with p(z)      x <- pop with p(x|z)  push z with q(z|x)

The pop from q(z|x) reads bits that are already on the stack (the "bits back"), so the net cost of x is
-log p(x|z) - log p(z) + log q(z|x): the negative ELBO, in expectation. Whatever sits on the stack before the
first push must be random-looking bits (see :func:`initial_words`).

Probabilities become integer frequencies that sum to 2^precision, every value getting at least 1 so any
symbol can be coded: at 24 bits, the coder's own precision, constriction quantizes them itself (fast,
deterministic); at fewer bits :func:`quantize` rounds them here first, and the coder then codes those tables
exactly.

:func:`round_trip` pushes and pops with any codec and checks both results bit for bit; every codec's tests use
it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from vaekit.errors import VaeKitError
from vaekit.extras import import_optional

MAX_PRECISION = 24  # constriction's AnsCoder: 32-bit words, 64-bit state, probabilities in units of 2^-24


class CodecError(VaeKitError, RuntimeError):
    """A codec was misused, or a round trip did not give back what was pushed."""


def _constriction() -> Any:
    return import_optional("constriction", "compress", "lossless compression", CodecError)


def ans_coder(words: np.ndarray | None = None) -> Any:
    """A constriction ``AnsCoder`` holding ``words`` (uint32, bottom of the stack first), or an empty one."""
    stack = _constriction().stream.stack
    if words is None:
        return stack.AnsCoder()
    return stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))


def initial_words(count: int) -> np.ndarray:
    """``count`` fixed pseudo-random uint32 words (SHAKE-256 of a constant): the bits the first pop reads.

    Both sides regenerate them, so they need not be stored; only the part the coder consumed costs space.
    """
    if count < 0:
        raise CodecError(f"count must be non-negative, got {count}")
    data = hashlib.shake_256(b"vaekit bits-back initial words").digest(4 * count)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if count:
        words[-1] |= np.uint32(1 << 31)  # a full top word: an ANS stack never ends in a zero word
    return words


class Codec(Protocol):
    """Codes a fixed number of symbols on an ANS stack; ``pop`` exactly undoes ``push``."""

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        """Add ``symbols`` to the stack."""
        ...

    def pop(self, coder: Any) -> np.ndarray:
        """Take the symbols off the stack (int64, the shape ``push`` was given, flattened)."""
        ...


def quantize(probabilities: np.ndarray | torch.Tensor, precision: int) -> np.ndarray:
    """Integer frequencies summing to 2^precision per row, each at least 1, close to ``probabilities``.

    Deterministic (one float64 scaling, then exact integer arithmetic in float64, whose 53-bit mantissa holds
    every sum), so encoder and decoder build identical tables from identical inputs. Rows that sum to zero or
    are not finite become uniform.

    Parameters
    ----------
    probabilities
        (N, K) non-negative weights (need not be normalized), numpy or torch.
    precision
        Bits of the frequency total, ``log2(K) < precision <= 24``.

    Returns
    -------
    np.ndarray
        (N, K) float64 holding integers: the frequencies.
    """
    weights = torch.as_tensor(probabilities, dtype=torch.float64)
    if weights.ndim != 2:
        raise CodecError(f"probabilities must be (N, K), got shape {tuple(weights.shape)}")
    k = weights.shape[1]
    if not (k < 2**precision and precision <= MAX_PRECISION):
        raise CodecError(f"precision {precision} cannot hold {k} values; use log2(K) < precision <= 24")
    weights = weights.clamp(min=0.0)  # a copy; negatives become 0, NaN rows are caught below
    total = weights.sum(dim=1, keepdim=True)  # (N, 1)
    bad = ~((total > 0) & (total < math.inf))[:, 0]
    if bool(bad.any()):
        weights[bad] = 1.0
        total[bad] = float(k)
    free = float(2**precision - k)  # every value first gets 1
    frequencies = weights.mul_(free / total).floor_().add_(1.0)
    deficit = 2.0**precision - frequencies.sum(dim=1)  # in 0..K: floors lose less than 1 each
    # The last value takes the remainder (at most K / 2^precision of distortion); a row whose floors rounded
    # up (deficit < 0, float rounding) gives it to its largest value instead.
    frequencies[:, -1] += deficit.clamp(min=0.0)
    short = deficit < 0
    if bool(short.any()):
        rows = short.nonzero()[:, 0]
        frequencies[rows, frequencies[rows].argmax(dim=1)] += deficit[rows]
    return frequencies.numpy()


def _flat_symbols(symbols: np.ndarray, count: int, what: str) -> np.ndarray:
    flat = np.asarray(symbols).reshape(-1)
    if flat.size != count:
        raise CodecError(f"{what} codes {count} symbols, got {flat.size}")
    return flat.astype(np.int32)


def normalizable(probabilities: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, K) weights as the coder takes them: rows with a positive finite sum (others become uniform).

    Checked with two reductions; rows are repaired only when one is bad (NaN, negative or all-zero weights).
    """
    weights = torch.as_tensor(probabilities)
    if weights.ndim != 2 or not weights.is_floating_point():
        raise CodecError(f"probabilities must be a float (N, K) array, got shape {tuple(weights.shape)}")
    if not weights.numel():
        return weights.numpy()
    total = weights.sum(dim=1)
    if not bool(((total > 0) & (total < math.inf)).all()) or float(weights.min()) < 0:
        weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0).clamp(min=0)
        bad = ~(weights.sum(dim=1) > 0)
        weights[bad] = 1.0
    return weights.numpy()


@dataclass(frozen=True)
class Categorical:
    """N symbols, symbol i coded with its own table ``table[i]`` over K values.

    The coder (constriction) turns each row into integer frequencies summing to 2^24, giving every value at
    least one, deterministically; rows already quantized by :func:`quantize` to fewer bits are kept exactly.
    """

    table: np.ndarray  # (N, K) float32 or float64, rows with a positive finite sum

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray | torch.Tensor, precision: int) -> Categorical:
        """A codec of (N, K) probabilities coded with ``precision`` bits (24: the coder's own quantization)."""
        if precision >= MAX_PRECISION:
            return cls(normalizable(probabilities))
        return cls(quantize(probabilities, precision))

    def _model(self) -> tuple[Any, np.ndarray]:
        return _constriction().stream.model.Categorical(perfect=False), self.table

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        flat = _flat_symbols(symbols, len(self.table), "this Categorical")
        if flat.size and (flat.min() < 0 or flat.max() >= self.table.shape[1]):
            raise CodecError(f"symbols must lie in 0..{self.table.shape[1] - 1}")
        if flat.size:
            coder.encode_reverse(flat, *self._model())

    def pop(self, coder: Any) -> np.ndarray:
        if not len(self.table):
            return np.zeros(0, dtype=np.int64)
        return np.asarray(coder.decode(*self._model()), dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    """``count`` symbols, each uniform over 0..size-1 (exact when ``size`` is a power of 2 up to 2^24)."""

    size: int
    count: int

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        flat = _flat_symbols(symbols, self.count, "this Uniform")
        if flat.size and (flat.min() < 0 or flat.max() >= self.size):
            raise CodecError(f"symbols must lie in 0..{self.size - 1}")
        if flat.size:
            coder.encode_reverse(flat, _constriction().stream.model.Uniform(self.size))

    def pop(self, coder: Any) -> np.ndarray:
        if not self.count:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(coder.decode(_constriction().stream.model.Uniform(self.size), self.count), np.int64)


@dataclass(frozen=True)
class TwoLevel:
    """Symbols s = c * fine_size + f, coded as c with ``coarse`` and then f with ``fine(c)``.

    One table over K values becomes two small ones; ``fine`` gets the coarse values (flat int64) and returns the
    codec of the fine parts. ``pop`` takes c off first, so ``push`` puts f on first.
    """

    coarse: Codec
    fine: Callable[[np.ndarray], Codec]
    fine_size: int

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        flat = np.asarray(symbols, dtype=np.int64).reshape(-1)
        c, f = np.divmod(flat, self.fine_size)
        self.fine(c).push(coder, f)
        self.coarse.push(coder, c)

    def pop(self, coder: Any) -> np.ndarray:
        c = self.coarse.pop(coder)
        f = self.fine(c).pop(coder)
        return c * self.fine_size + f


@dataclass(frozen=True)
class Autoregressive:
    """N examples of ``sum(sizes)`` symbols coded block by block: block i (columns of ``sizes[i]`` symbols of each
    example) with a codec that depends on the blocks before it, ``block(i, earlier)``, where ``earlier`` is
    (N, sum(sizes[:i])). Pop goes from block 0 on; push runs the blocks in reverse, as a stack must.

    Codes the layers of a hierarchical posterior q(z_S|x) q(z_S-1|z_S, x) ... one after another."""

    sizes: tuple[int, ...]
    block: Callable[[int, np.ndarray], Codec]

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        values = np.asarray(symbols, dtype=np.int64).reshape(-1, sum(self.sizes))
        bounds = np.cumsum([0, *self.sizes]).tolist()
        codecs = [self.block(i, values[:, : bounds[i]]) for i in range(len(self.sizes))]
        for i in reversed(range(len(self.sizes))):
            codecs[i].push(coder, values[:, bounds[i] : bounds[i + 1]])

    def pop(self, coder: Any) -> np.ndarray:
        parts: list[np.ndarray] = []
        for i, size in enumerate(self.sizes):
            earlier = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), dtype=np.int64)
            parts.append(np.asarray(self.block(i, earlier).pop(coder), dtype=np.int64).reshape(-1, size))
        return np.concatenate(parts, axis=1).reshape(-1)


@dataclass(frozen=True)
class BitsBack:
    """Bits-back coding of x with a latent variable model (BB-ANS, Townsend et al. 2019, arXiv:1901.04866).

    Parameters
    ----------
    prior
        Codec of the latent symbols z under p(z).
    likelihood
        z (flat int64) -> codec of x under p(x|z).
    posterior
        x (flat int64) -> codec of z under q(z|x).
    """

    prior: Codec
    likelihood: Callable[[np.ndarray], Codec]
    posterior: Callable[[np.ndarray], Codec]

    def push(self, coder: Any, symbols: np.ndarray) -> None:
        x = np.asarray(symbols, dtype=np.int64).reshape(-1)
        z = self.posterior(x).pop(coder)  # bits back: decode z with q(z|x) from what is on the stack
        self.likelihood(z).push(coder, x)
        self.prior.push(coder, z)

    def pop(self, coder: Any) -> np.ndarray:
        z = self.prior.pop(coder)
        x = self.likelihood(z).pop(coder)
        self.posterior(x).push(coder, z)  # give the borrowed bits back
        return x


@dataclass(frozen=True)
class RoundTrip:
    """What :func:`round_trip` measured."""

    bits: int  # bits the push added to the stack (can be negative for bits-back codecs)
    words: np.ndarray  # the stack after the push


def round_trip(codec: Codec, symbols: np.ndarray, *, initial: int = 32) -> RoundTrip:
    """Push ``symbols`` with ``codec`` onto a stack of ``initial`` random words, pop them back, and check that
    the symbols and the stack are restored bit for bit.

    Raises
    ------
    CodecError
        If the popped symbols or the final stack differ from what was pushed or was there before.
    """
    start = initial_words(initial)
    coder = ans_coder(start)
    before = coder.num_valid_bits()
    codec.push(coder, symbols)
    pushed = coder.get_compressed()
    bits = int(coder.num_valid_bits()) - int(before)
    coder = ans_coder(pushed)
    decoded = codec.pop(coder)
    expected = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if decoded.shape != expected.shape or not np.array_equal(decoded, expected):
        mismatch = int(np.argmax(decoded != expected)) if decoded.shape == expected.shape else -1
        raise CodecError(f"round trip changed the symbols (first difference at index {mismatch})")
    if not np.array_equal(coder.get_compressed(), start):
        raise CodecError("round trip did not restore the stack bit for bit")
    return RoundTrip(bits=bits, words=pushed)

"""The ANS codecs: quantized tables, and every codec checked bit-exactly by the one round-trip helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaekit.codec.codecs import (
    BitsBack,
    Categorical,
    CodecError,
    TwoLevel,
    Uniform,
    ans_coder,
    initial_words,
    normalizable,
    quantize,
    round_trip,
)


def _probabilities(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(k, 0.3), size=n)


# -- quantize ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", [8, 12, 24])
@pytest.mark.parametrize("k", [2, 16, 64])
def test_quantize_sums_to_the_precision_and_never_drops_a_value(precision, k):
    p = _probabilities(500, k)
    p[0] = 0.0
    p[0, 3 % k] = 1.0  # a one-hot row: every other value still gets frequency 1
    freq = quantize(p, precision)
    assert freq.shape == p.shape and freq.dtype == np.float64
    assert np.array_equal(freq, np.round(freq))  # integers
    assert (freq >= 1).all()
    assert (freq.sum(1) == 2**precision).all()


def test_quantize_is_close_and_deterministic():
    p = _probabilities(300, 16, seed=1)
    freq = quantize(p, 24)
    assert np.abs(freq / 2**24 - p).max() < 1e-5
    assert np.array_equal(freq, quantize(p.copy(), 24))
    assert np.array_equal(freq, quantize(torch.from_numpy(p), 24))


def test_quantize_does_not_modify_its_input_and_repairs_bad_rows():
    p = _probabilities(4, 8)
    p[1] = 0.0
    p[2, 0] = np.nan
    p[3, 1] = -1.0
    before = p.copy()
    freq = quantize(p, 12)
    assert np.array_equal(p, before, equal_nan=True)
    assert (freq[1] == 2**12 / 8).all() and (freq[2] == 2**12 / 8).all()  # empty and NaN rows: uniform
    assert freq[3, 1] == 1 and freq[3].sum() == 2**12  # a negative weight counts as 0


@pytest.mark.parametrize(("shape", "precision"), [((3, 16), 4), ((3, 4), 25), ((12,), 12)])
def test_quantize_rejects_bad_requests(shape, precision):
    with pytest.raises(CodecError):
        quantize(np.ones(shape), precision)


# -- the round-trip helper over every codec ------------------------------------------------------------------------
def test_initial_words_are_fixed_and_end_in_a_full_word():
    words = initial_words(40)
    assert words.dtype == np.uint32 and len(words) == 40
    assert np.array_equal(words, initial_words(40))
    assert words[-1] >= 2**31
    assert np.array_equal(initial_words(41)[:39], words[:39])


def test_categorical_round_trip_costs_the_information_content():
    p = _probabilities(2000, 16, seed=2)
    rng = np.random.default_rng(3)
    symbols = np.array([rng.choice(16, p=row) for row in p])
    ideal = -np.log2(p[np.arange(2000), symbols]).sum()
    for precision in (24, 16):  # constriction's own quantization; ours to 16 bits, then coded exactly
        codec = Categorical.from_probabilities(p, precision)
        result = round_trip(codec, symbols)
        assert abs(result.bits - ideal) < 0.001 * ideal + 64  # the tables are close to p
    exact = -np.log2(codec.table[np.arange(2000), symbols] / 2**16).sum()
    assert abs(result.bits - exact) < 64  # ANS adds at most a word or two to the tables' information content


def test_uniform_round_trip_costs_log2_size_per_symbol():
    symbols = np.random.default_rng(4).integers(0, 4096, 1000)
    result = round_trip(Uniform(4096, 1000), symbols)
    assert abs(result.bits - 12 * 1000) < 64


def test_two_level_round_trip_equals_one_big_table():
    rng = np.random.default_rng(5)
    p = _probabilities(500, 256, seed=6)
    symbols = np.array([rng.choice(256, p=row) for row in p])
    groups = p.reshape(500, 16, 16)
    coarse = Categorical.from_probabilities(groups.sum(-1), 24)

    def fine(c: np.ndarray) -> Categorical:
        return Categorical.from_probabilities(groups[np.arange(len(c)), c], 24)

    two_level = round_trip(TwoLevel(coarse, fine, 16), symbols)
    flat = round_trip(Categorical.from_probabilities(p, 24), symbols)
    assert abs(two_level.bits - flat.bits) < 0.001 * flat.bits + 64


def _toy_bits_back(n: int) -> tuple[BitsBack, np.ndarray]:
    """A latent variable model small enough to write by hand: z in 0..7, x in 0..3, p(x|z) and q(z|x) tables."""
    px_z = np.random.default_rng(7).dirichlet(np.ones(4), size=8)  # (8, 4)
    joint = px_z / 8  # p(z) uniform
    qz_x = (joint / joint.sum(0)).T  # the exact posterior, (4, 8)
    codec = BitsBack(
        prior=Uniform(8, n),
        likelihood=lambda z: Categorical.from_probabilities(px_z[z], 24),
        posterior=lambda x: Categorical.from_probabilities(qz_x[x], 24),
    )
    return codec, px_z.mean(0)


def test_bits_back_round_trip_and_rate_is_minus_log_marginal():
    rng = np.random.default_rng(8)
    n = 4000
    codec, marginal = _toy_bits_back(n)
    x = rng.integers(0, 4, n)
    result = round_trip(codec, x, initial=3 * n // 32 + 64)  # enough initial bits for the one pop of n latents
    # With the exact posterior, bits-back costs -log2 p(x) per symbol (the ELBO is tight).
    ideal = -np.log2(marginal[x]).sum()
    assert abs(result.bits - ideal) < 0.01 * ideal + 64


def test_bits_back_without_enough_initial_bits_still_round_trips():
    codec, _ = _toy_bits_back(500)
    round_trip(codec, np.random.default_rng(9).integers(0, 4, 500), initial=2)  # pops past the bottom: still exact


def test_round_trip_catches_a_codec_whose_pop_does_not_undo_its_push():
    class Lossy:
        def push(self, coder, symbols):
            Uniform(4, len(symbols)).push(coder, np.asarray(symbols) % 4)

        def pop(self, coder):
            return Uniform(4, 10).pop(coder)

    with pytest.raises(CodecError, match="changed the symbols"):
        round_trip(Lossy(), np.arange(10))


def test_codecs_reject_wrong_symbol_counts_and_ranges():
    coder = ans_coder(initial_words(8))
    with pytest.raises(CodecError, match="codes 3 symbols"):
        Uniform(4, 3).push(coder, np.arange(2))
    with pytest.raises(CodecError, match=r"0\.\.3"):
        Uniform(4, 2).push(coder, np.array([1, 4]))
    with pytest.raises(CodecError, match=r"0\.\.1"):
        Categorical.from_probabilities(np.full((2, 2), 0.5), 12).push(coder, np.array([0, 2]))


def test_bad_probability_rows_still_code():
    p = np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0], [-1.0, 2.0, 1.0], [0.2, 0.3, 0.5]])
    table = normalizable(p)
    assert np.array_equal(table[0], [1, 1, 1]) and np.array_equal(table[1], [0, 1, 1]) and table[2, 0] == 0
    assert np.array_equal(table[3], p[3])
    for precision in (24, 12):
        round_trip(Categorical.from_probabilities(p, precision), np.array([2, 0, 0, 1]))  # even impossible values


def test_empty_codecs_are_no_ops():
    assert round_trip(Uniform(4, 0), np.zeros(0, dtype=np.int64)).bits == 0
    assert round_trip(Categorical(np.zeros((0, 3))), np.zeros(0, dtype=np.int64)).bits == 0
    assert round_trip(Categorical.from_probabilities(np.zeros((0, 3)), 24), np.zeros(0, dtype=np.int64)).bits == 0
    assert math.isclose(round_trip(Uniform(2, 1), np.array([1])).bits, 1, abs_tol=1)

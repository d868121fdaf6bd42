"""Bits-back coding with a VAE: the discretized logistic likelihood, the prepare step, the model's codecs and
chunks, all checked with the same bit-exact round-trip helper as the codecs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaekit.codec.bitsback import (
    BitsBackModel,
    CodingConfig,
    NotPreparedError,
    decode_chunk,
    encode_chunk,
    model_fingerprint,
)
from vaekit.codec.codecs import round_trip
from vaekit.errors import ConfigError, DataError
from vaekit.models.likelihoods import DiscretizedLogisticMixture, logistic_interval_log_mass


def _symbols(n: int, dims: int, levels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, levels, (n, dims))


# -- the discretized (mixture of) logistics --------------------------------------------------------------------
@pytest.mark.parametrize(("mean", "log_scale"), [(0.3, -3.0), (-0.4, -7.0), (1.7, 0.5), (0.5, -6.9), (0.0, 3.0)])
def test_discretized_logistic_masses_sum_to_one(mean, log_scale):
    k = torch.arange(256, dtype=torch.float64)
    mean_t, log_scale_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
    log_mass = logistic_interval_log_mass(k, k, mean_t, log_scale_t)
    assert torch.isfinite(log_mass).all()
    assert math.isclose(float(log_mass.exp().sum()), 1.0, rel_tol=1e-9)
    # a range of levels has the mass of its levels
    group = logistic_interval_log_mass(k[16], k[31], mean_t, log_scale_t)
    assert math.isclose(float(group.exp()), float(log_mass[16:32].exp().sum()), rel_tol=1e-9, abs_tol=1e-300)


def test_mixture_log_prob_mean_and_samples_agree_with_brute_force():
    torch.manual_seed(0)
    weights, means, log_scales = torch.randn(2, 3, 1, 2).double(), torch.rand(2, 3, 1, 2).double(), \
        torch.randn(2, 3, 1, 2).double() - 3
    dist = DiscretizedLogisticMixture(weights, means, log_scales)
    levels = torch.arange(256, dtype=torch.float64) / 255
    # P(level) for every level of every element, by brute force over the mixture
    pi = torch.softmax(weights, 1)  # (2, 3, 1, 2)
    k = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1, 1)
    per_level = (pi * logistic_interval_log_mass(k, k, means, dist.log_scales).exp()).sum(2)  # (256, 2, 1, 2)
    assert torch.allclose(per_level.sum(0), torch.ones(2, 1, 2, dtype=torch.float64))
    x = torch.tensor([[[0.0, 1.0]], [[17 / 255, 200 / 255]]], dtype=torch.float64)  # (2, 1, 2)
    level = (x * 255).round().long()
    expected = torch.tensor([
        sum(math.log(per_level[level[b, 0, j], b, 0, j]) for j in range(2)) for b in range(2)
    ], dtype=torch.float64)
    assert torch.allclose(dist.log_prob(x), expected)
    assert torch.allclose(dist.mean, (per_level * levels.view(256, 1, 1, 1)).sum(0))
    sample = dist.sample()
    assert sample.shape == (2, 1, 2) and torch.equal(sample, torch.round(sample * 255) / 255)


def test_discretized_logistic_support_and_config_errors(tiny_model):
    model = tiny_model(likelihood="discretized_logistic")
    model.check_input(torch.randint(0, 256, (3, 1, 8, 8)) / 255.0)
    with pytest.raises(DataError, match="8-bit data"):
        model.check_input(torch.full((1, 1, 8, 8), 0.5))
    with pytest.raises(DataError, match="8-bit data"):
        model.check_input(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ConfigError, match="mixture_components"):
        tiny_model(likelihood="discretized_logistic", mixture_components=0)
    assert tiny_model(likelihood="discretized_logistic", mixture_components=4).likelihood.param_channels == 12


# -- prepare --------------------------------------------------------------------------------------------------------
def test_coding_before_prepare_fails_and_says_so(tiny_model):
    coder = BitsBackModel(tiny_model())
    assert not coder.prepared
    with pytest.raises(NotPreparedError, match=r"prepare\(\)"):
        coder.codec(2)
    coder.prepare()
    assert coder.prepared
    with torch.no_grad():
        next(coder.model.parameters()).add_(0.01)  # e.g. one more training step
    assert not coder.prepared
    with pytest.raises(NotPreparedError, match="weights changed"):
        coder.codec(2)
    assert coder.prepare().prepared


def test_models_that_cannot_code_data_are_refused(tiny_model):
    with pytest.raises(ConfigError, match=r"gaussian.*continuous"):
        BitsBackModel(tiny_model(likelihood="gaussian"))
    with pytest.raises(ConfigError, match="conditional"):
        BitsBackModel(tiny_model(num_classes=3))


@pytest.mark.parametrize(
    "fields",
    [{"latent_bits": 3}, {"latent_bits": 21}, {"posterior_precision": 25}, {"likelihood_precision": 7},
     {"batch_size": 0}, {"latent_bits": 20, "posterior_precision": 10}, {"threads": 0}],
)
def test_coding_config_is_checked(fields):
    with pytest.raises(ConfigError):
        CodingConfig(**fields)


def test_fingerprint_names_config_and_weights(tiny_model):
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(tiny_model(seed=1))
    assert model_fingerprint(a) != model_fingerprint(tiny_model(seed=0, activation="tanh"))


# -- the model's codecs, bit-exact --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("likelihood", "levels", "fields"),
    [("bernoulli", 2, {}), ("discretized_logistic", 256, {}),
     ("discretized_logistic", 256, {"mixture_components": 3, "architecture": "conv"})],
)
def test_model_codecs_round_trip(tiny_model, likelihood, levels, fields):
    model = tiny_model(likelihood=likelihood, **fields)
    coder = BitsBackModel(model, CodingConfig(latent_bits=12, posterior_precision=20)).prepare()
    x = _symbols(5, 64, levels)
    z = np.random.default_rng(1).integers(0, 2**12, 5 * 3)
    round_trip(coder.likelihood_codec(z), x)
    round_trip(coder.posterior_codec(x), z)
    round_trip(coder.codec(5), x, initial=64)


def test_likelihood_codec_costs_minus_log2_p_x_given_z(tiny_model):
    model = tiny_model(likelihood="discretized_logistic", mixture_components=2)
    coder = BitsBackModel(model).prepare()
    z = np.random.default_rng(2).integers(0, 2**12, 20 * 3)
    with torch.no_grad():
        px_z = model.decode(coder._latents(z))
        x = torch.round(px_z.sample() * 255).long().reshape(20, -1).numpy()
        ideal_bits = float(-px_z.log_prob(torch.from_numpy(x).float().view(20, 1, 8, 8) / 255).sum()) / math.log(2)
    bits = round_trip(coder.likelihood_codec(z), x).bits
    assert abs(bits - ideal_bits) < 0.002 * ideal_bits + 64


@pytest.mark.parametrize(("likelihood", "threads"), [("bernoulli", 2), ("discretized_logistic", 1),
                                                    ("discretized_logistic", 3)])
def test_chunks_round_trip_and_batches_grow_from_one(tiny_model, likelihood, threads):
    model = tiny_model(likelihood=likelihood)
    coder = BitsBackModel(model, CodingConfig(batch_size=16, threads=threads)).prepare()
    x = _symbols(100, 64, 2 if likelihood == "bernoulli" else 256, seed=3)
    seen: list[int] = []
    chunk = encode_chunk(coder, x, on_batch=seen.append)
    assert chunk.schedule[0] == 1 and max(chunk.schedule) <= 16 and sum(chunk.schedule) == 100
    assert seen == list(chunk.schedule)
    assert 0 < chunk.initial_bits <= 32 * chunk.initial
    assert np.array_equal(decode_chunk(coder, chunk), x)


def test_decoding_with_other_weights_is_detected(tiny_model):
    coder = BitsBackModel(tiny_model(likelihood="discretized_logistic"), CodingConfig(batch_size=8)).prepare()
    chunk = encode_chunk(coder, _symbols(30, 64, 256, seed=4))
    other = BitsBackModel(tiny_model(likelihood="discretized_logistic", seed=1), CodingConfig(batch_size=8))
    with pytest.raises(DataError, match="did not end where encoding began"):
        decode_chunk(other.prepare(), chunk)


def test_posterior_pops_are_draws_from_q_and_latents_cost_the_kl(tiny_model):
    """Popping z with q(z|x) from random bits draws z ~ q; pushing it with the prior then nets KL(q || p) bits."""
    from vaekit.codec.codecs import ans_coder, initial_words

    model = tiny_model(likelihood="bernoulli")
    with torch.no_grad():  # a posterior narrower than the prior, away from 0
        model.encoder[-1][-1].bias.copy_(torch.tensor([1.0, -0.5, 0.2, -1.0, -2.0, -3.0]))
    coder = BitsBackModel(model).prepare()
    x = _symbols(400, 64, 2, seed=5)
    with torch.no_grad():
        qz_x = model.encode(coder.to_input(x))
        kl_bits = float(torch.distributions.kl_divergence(qz_x, model.prior()).sum()) / math.log(2)
    ans = ans_coder(initial_words(4000))
    before = int(ans.num_valid_bits())
    buckets = coder.posterior_codec(x).pop(ans)
    popped = before - int(ans.num_valid_bits())
    z = coder._latents(buckets)
    standardized = (z - qz_x.mean) / qz_x.stddev  # (400, 3): N(0, 1) if z ~ q
    assert standardized.mean().abs() < 0.1 and (standardized.std() - 1).abs() < 0.1
    net = 400 * 3 * coder.config.latent_bits - popped
    assert abs(net - kl_bits) < 0.05 * kl_bits + 32


def test_parallel_blocks_give_the_same_bits_every_time(tiny_model):
    """Worker threads must run PyTorch on one thread too: batches big enough for parallel kernels (here 256
    examples of 28 x 28) otherwise round differently from run to run and the file does not decode."""
    model = tiny_model(shape=(1, 28, 28), likelihood="discretized_logistic", latent_dim=16, hidden_dims=(256,))
    x = _symbols(600, 784, 256, seed=6)
    runs = [encode_chunk(BitsBackModel(model, CodingConfig(threads=2)).prepare(), x) for _ in range(3)]
    assert all(np.array_equal(run.words, runs[0].words) for run in runs)
    assert np.array_equal(decode_chunk(BitsBackModel(model, CodingConfig(threads=2)).prepare(), runs[0]), x)

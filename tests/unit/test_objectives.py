"""The maths of vaekit.objectives and the likelihoods, checked against hand-written formulas and Monte Carlo."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit import objectives
from vaekit.config import ModelConfig, resolve_config
from vaekit.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vaekit.models.vae import VAE
from vaekit.training.schedules import kl_weight


@pytest.fixture(scope="module")
def trained_model() -> tuple[VAE, torch.Tensor]:
    """A small model fitted for 300 Adam steps to 64 digits, and those digits: posteriors that are not N(0, I)."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:64].astype("float32") / 16.0).unsqueeze(1)
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, hidden_dims=(32,)), (1, 8, 8))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        objectives.elbo(model, x).loss.backward()
        optimizer.step()
    model.eval()
    return model, x


# -- KL ------------------------------------------------------------------------------------------------------
def test_analytic_kl_matches_closed_form_and_per_dim_sums_to_total(trained_model):
    model, x = trained_model
    torch.manual_seed(1)
    terms = objectives.elbo(model, x)
    qz_x = model.encode(x)
    mu, s = qz_x.mean, qz_x.stddev  # (B, L)
    by_hand = -0.5 * (1 + torch.log(s**2) - mu**2 - s**2)  # (B, L)
    assert terms.kl.shape == (x.shape[0],)
    assert terms.kl_per_dim is not None and terms.kl_per_dim.shape == (x.shape[0], 3)
    torch.testing.assert_close(terms.kl_per_dim, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.kl, by_hand.sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.kl_per_dim.sum(-1), terms.kl)
    assert bool((terms.kl > 0).all())  # a trained posterior is not the prior


@settings(max_examples=15, deadline=None, database=None)
@given(
    mu=st.lists(st.floats(-3, 3), min_size=2, max_size=4),
    log_s=st.lists(st.floats(-1.5, 1.0), min_size=4, max_size=4),
)
def test_analytic_kl_matches_monte_carlo(mu, log_s):
    """KL(q || N(0, I)) from objectives agrees with E_q[log q(z) - log p(z)] within 5 standard errors."""
    from torch.distributions import Independent, Normal

    loc = torch.tensor(mu, dtype=torch.float64)
    scale = torch.tensor(log_s[: len(mu)], dtype=torch.float64).exp()
    qz_x = Independent(Normal(loc[None], scale[None]), 1)  # batch (1,), event (L,)
    pz = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    analytic = objectives.kl_per_dimension(qz_x, pz)
    assert analytic is not None
    generator = torch.Generator().manual_seed(0)
    z = loc + scale * torch.randn(100_000, len(mu), generator=generator, dtype=torch.float64)
    log_ratio = qz_x.log_prob(z[:, None]) - pz.log_prob(z[:, None])  # (n, 1)
    standard_error = float(log_ratio.std()) / math.sqrt(len(z))
    assert abs(float(log_ratio.mean()) - float(analytic.sum())) < 5 * standard_error + 1e-9


# -- IWAE ----------------------------------------------------------------------------------------------------
def test_iwae_with_one_sample_is_the_one_sample_log_weight(trained_model):
    model, x = trained_model
    torch.manual_seed(7)
    bound = objectives.iwae(model, x, 1).elbo
    torch.manual_seed(7)
    qz_x = model.encode(x)
    z = qz_x.rsample((1,))[0]  # the same draw: rsample((k,)) with k = 1
    by_hand = model.decode(z).log_prob(x) + model.prior().log_prob(z) - qz_x.log_prob(z)
    torch.testing.assert_close(bound, by_hand, rtol=1e-5, atol=1e-4)


def test_iwae_with_one_sample_has_the_elbo_as_expectation(trained_model):
    model, x = trained_model
    x = x[:8]
    draws = 1000
    x_rep = x.repeat(draws, 1, 1, 1)  # (draws * 8, 1, 8, 8): many independent draws per example
    with torch.no_grad():
        torch.manual_seed(0)
        iwae1 = objectives.iwae(model, x_rep, 1).elbo.reshape(draws, 8)
        torch.manual_seed(1)
        elbo = objectives.elbo(model, x_rep).elbo.reshape(draws, 8)
    diff = iwae1.mean(0) - elbo.mean(0)  # (8,)
    standard_error = torch.sqrt(iwae1.var(0) / draws + elbo.var(0) / draws)
    assert bool((diff.abs() < 5 * standard_error).all()), (diff, standard_error)


def test_iwae_bound_does_not_fall_as_k_grows(trained_model):
    model, x = trained_model
    torch.manual_seed(0)
    means = {}
    for k in (1, 10, 100, 1000):
        repeats = max(1, 2000 // k)  # average small-k estimates over more draws
        estimates = torch.stack([objectives.iwae_bound(model, x, k) for _ in range(repeats)])
        means[k] = float(estimates.mean())
    assert means[1] <= means[10] + 0.05
    assert means[10] <= means[100] + 0.05
    assert means[100] <= means[1000] + 0.05
    assert means[1000] > means[1] + 0.05, means  # the bound does tighten on a non-trivial model


def test_iwae_bound_chunks_agree_and_handle_a_remainder(trained_model):
    model, x = trained_model
    torch.manual_seed(0)
    one_chunk = objectives.iwae_bound(model, x, 250, chunk_size=250)
    uneven = objectives.iwae_bound(model, x, 250, chunk_size=100)  # chunks of 100, 100, 50
    tiny_chunks = objectives.iwae_bound(model, x, 250, chunk_size=7)
    assert uneven.shape == one_chunk.shape == (x.shape[0],)
    assert bool(torch.isfinite(uneven).all())
    # Different draws, same estimator: per-example differences are MC noise (small at k = 250).
    assert float((uneven - one_chunk).abs().mean()) < 0.2
    assert float((tiny_chunks - one_chunk).abs().mean()) < 0.2
    assert float((uneven - one_chunk).abs().max()) < 1.5
    # Deterministic given the seed.
    torch.manual_seed(3)
    a = objectives.iwae_bound(model, x, 33, chunk_size=10)
    torch.manual_seed(3)
    b = objectives.iwae_bound(model, x, 33, chunk_size=10)
    assert torch.equal(a, b)


def test_iwae_bound_k1_single_chunk_matches_log_weight(trained_model):
    model, x = trained_model
    torch.manual_seed(5)
    bound = objectives.iwae_bound(model, x, 1)
    torch.manual_seed(5)
    log_w = objectives.log_importance_weights(model, x, 1)
    torch.testing.assert_close(bound, log_w[0])


def test_iwae_bound_rejects_k_below_one(trained_model):
    model, x = trained_model
    with pytest.raises(ValueError, match="k must be at least 1"):
        objectives.iwae_bound(model, x, 0)


# -- units ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("nats", "dims"), [(100.0, 784), (1.0, 1), (37.5, 64)])
def test_bits_per_dim(nats, dims):
    assert objectives.bits_per_dim(nats, dims) == pytest.approx(nats / (dims * math.log(2)), rel=1e-12)
    assert objectives.bits_per_dim(dims * math.log(2), dims) == pytest.approx(1.0)
    tensor = objectives.bits_per_dim(torch.tensor([nats, 2 * nats]), dims)
    torch.testing.assert_close(tensor, torch.tensor([nats, 2 * nats]) / (dims * math.log(2)))


# -- likelihoods ---------------------------------------------------------------------------------------------
def test_bernoulli_log_prob_is_negative_bce_with_logits():
    likelihood = BernoulliLikelihood((2, 3, 4), ModelConfig())
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(5, 1, 2, 3, 4, generator=generator)
    x = torch.rand(5, 2, 3, 4, generator=generator)  # grayscale values: the BCE score
    x[0] = (x[0] > 0.5).float()
    px_z = likelihood(logits)
    assert px_z.batch_shape == (5,) and px_z.event_shape == (2, 3, 4)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(px_z.log_prob(x), -bce)
    torch.testing.assert_close(px_z.mean, torch.sigmoid(logits[:, 0]))


def test_bernoulli_is_normalised_over_binary_outcomes():
    dims = 3
    likelihood = BernoulliLikelihood((dims,), ModelConfig())
    logits = torch.tensor([[[0.3, -2.0, 5.0]], [[-7.0, 0.0, 1.5]]], dtype=torch.float64)  # (2, 1, 3)
    px_z = likelihood(logits)
    outcomes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=dims)), dtype=torch.float64)  # (8, 3)
    log_probs = torch.stack([px_z.log_prob(o.expand(2, dims)) for o in outcomes])  # (8, 2)
    torch.testing.assert_close(log_probs.exp().sum(0), torch.ones(2, dtype=torch.float64))


def test_bernoulli_rejects_data_outside_unit_interval():
    from vaekit.errors import DataError

    likelihood = BernoulliLikelihood((3,), ModelConfig())
    with pytest.raises(DataError, match=r"\[0, 1\].*gaussian"):
        likelihood.check_support(torch.tensor([[0.0, 1.5, 0.2]]))
    with pytest.raises(DataError, match="NaN"):
        likelihood.check_support(torch.tensor([[0.0, float("nan"), 0.2]]))
    likelihood.check_support(torch.tensor([[0.0, 1.0, 0.2]]))


def _gaussian_by_hand(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    per_dim = -0.5 * math.log(2 * math.pi) - log_scale - (x - mean) ** 2 / (2 * torch.exp(2 * log_scale))
    return per_dim.reshape(len(x), -1).sum(-1)


def test_gaussian_log_prob_with_learned_scale():
    likelihood = GaussianLikelihood((2, 3), ModelConfig(likelihood="gaussian"))
    assert isinstance(likelihood.log_scale, torch.nn.Parameter)
    with torch.no_grad():
        likelihood.log_scale.copy_(torch.linspace(-1, 1, 6).reshape(2, 3))
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 1, 2, 3, generator=generator)
    x = torch.randn(4, 2, 3, generator=generator)
    px_z = likelihood(mean)
    expected = _gaussian_by_hand(x, mean[:, 0], likelihood.log_scale.detach())
    torch.testing.assert_close(px_z.log_prob(x), expected)
    torch.testing.assert_close(px_z.mean, mean[:, 0])


def test_gaussian_log_prob_with_fixed_scale():
    likelihood = GaussianLikelihood((5,), ModelConfig(likelihood="gaussian", gaussian_scale=0.3))
    assert not any(True for _ in likelihood.parameters())  # a fixed scale is not trained
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(3, 1, 5, generator=generator)
    x = torch.randn(3, 5, generator=generator)
    expected = _gaussian_by_hand(x, mean[:, 0], torch.full((5,), math.log(0.3)))
    torch.testing.assert_close(likelihood(mean).log_prob(x), expected)


def test_gaussian_rejects_non_positive_scale():
    from vaekit.errors import ConfigError

    with pytest.raises(ConfigError, match="gaussian_scale"):
        GaussianLikelihood((5,), ModelConfig(likelihood="gaussian", gaussian_scale=0.0))


# -- the loss: beta, free bits, warm-up ------------------------------------------------------------------------
def test_free_bits_floor_every_dimension(trained_model):
    model, x = trained_model
    free_bits, beta = 50.0, 0.7  # far above any dimension's KL
    torch.manual_seed(2)
    terms = objectives.elbo(model, x, beta=beta, free_bits=free_bits)
    assert terms.kl_per_dim is not None
    assert bool((terms.kl_per_dim.mean(0) < free_bits).all())
    kl_part = float(terms.loss.detach()) + float(terms.log_px_z.detach().mean())
    assert kl_part == pytest.approx(model.latent_dim * free_bits * beta, rel=1e-5)
    # The reported bound never sees free bits or beta.
    torch.testing.assert_close(terms.elbo, terms.log_px_z - terms.kl)


def test_free_bits_only_lift_dimensions_below_the_floor(trained_model):
    model, x = trained_model
    torch.manual_seed(2)
    plain = objectives.elbo(model, x)
    assert plain.kl_per_dim is not None
    per_dim = plain.kl_per_dim.detach().mean(0)  # (L,)
    floor = float(per_dim.median())
    torch.manual_seed(2)
    floored = objectives.elbo(model, x, free_bits=floor)
    expected = -plain.log_px_z.detach().mean() + per_dim.clamp(min=floor).sum()
    torch.testing.assert_close(floored.loss.detach(), expected)


@pytest.mark.parametrize("beta", [0.0, 2.0, 4.5])
def test_beta_scales_the_kl_term_exactly(trained_model, beta):
    model, x = trained_model
    torch.manual_seed(11)
    one = objectives.elbo(model, x, beta=1.0)
    torch.manual_seed(11)
    other = objectives.elbo(model, x, beta=beta)
    torch.testing.assert_close(other.loss - one.loss, (beta - 1.0) * one.kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(other.elbo, one.elbo)  # same draw, same bound


def test_kl_weight_warms_up_linearly():
    def weight(step: int, beta: float, warmup: int, total: int = 10_000) -> float:
        config = resolve_config(overrides=[f"objective.beta={beta}", f"objective.kl_warmup_steps={warmup}"])
        return kl_weight(step, total, config)

    assert weight(0, 2.0, 10) == 0.0
    assert weight(5, 2.0, 10) == pytest.approx(1.0)
    assert weight(10, 2.0, 10) == pytest.approx(2.0)
    assert weight(1000, 2.0, 10) == pytest.approx(2.0)
    assert weight(0, 0.5, 0) == 0.5  # warm-up off
    steps = [weight(s, 1.0, 8) for s in range(9)]
    assert steps == pytest.approx([s / 8 for s in range(9)])


def test_warm_up_ends_by_a_quarter_of_a_short_run():
    """A warm-up longer than the run is cut to train.max_warmup_fraction of it: the weight reaches beta by then."""
    config = resolve_config(overrides=["objective.kl_warmup_steps=10000", "objective.beta=2"])
    assert kl_weight(50, 1000, config) == pytest.approx(2.0 * 50 / 250)  # a 250-step warm-up (1000 / 4)
    assert kl_weight(250, 1000, config) == pytest.approx(2.0)
    assert kl_weight(999, 1000, config) == pytest.approx(2.0)
    budget = resolve_config(config, overrides=["train.time_budget_s=100"])
    assert kl_weight(3, 10**9, budget, elapsed_s=12.5) == pytest.approx(2.0 * 0.5)  # by the clock: 12.5 of 25 s
    assert kl_weight(3, 10**9, budget, elapsed_s=30.0) == pytest.approx(2.0)


# -- gradients -----------------------------------------------------------------------------------------------
def test_reconstruction_term_backpropagates_into_the_encoder(trained_model):
    model, x = trained_model
    model.zero_grad()
    objectives.elbo(model, x).log_px_z.sum().backward()  # the KL term is left out on purpose
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert all(float(g.abs().sum()) > 0 for g in encoder_grads)  # type: ignore[union-attr]
    model.zero_grad()


def test_iwae_loss_backpropagates_into_encoder_and_decoder(trained_model):
    model, x = trained_model
    model.zero_grad()
    terms = objectives.iwae(model, x, 4)
    assert terms.elbo.shape == terms.log_px_z.shape == terms.kl.shape == (x.shape[0],)
    terms.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    model.zero_grad()


def test_model_forward_is_the_elbo(trained_model):
    model, x = trained_model
    torch.manual_seed(0)
    via_forward = model(x).elbo
    torch.manual_seed(0)
    torch.testing.assert_close(objectives.elbo(model, x).elbo, via_forward)
    torch.manual_seed(0)
    torch.testing.assert_close(model.elbo(x), via_forward)

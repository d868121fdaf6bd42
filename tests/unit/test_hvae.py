"""The hierarchical VAE: its contract, its maths (exact likelihoods, KL, bounds), DReG, free bits per layer,
the learning-rate schedules and layer-by-layer bits-back coding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaekit import objectives
from vaekit.codec.bitsback import BitsBackModel, CodingConfig, decode_chunk, encode_chunk
from vaekit.codec.codecs import round_trip
from vaekit.config import Config, ModelConfig, TrainConfig
from vaekit.errors import ConfigError
from vaekit.models import build_model
from vaekit.models.hierarchical import HierarchicalVAE, TopDownPosterior
from vaekit.training.schedules import learning_rate


def _hvae(shape=(6,), layers=(3, 2), seed=0, sharpen=10.0, **fields) -> HierarchicalVAE:
    torch.manual_seed(seed)
    settings = {"latent_layers": layers, "hidden_dims": (16,), "activation": "tanh", **fields}
    model = build_model(ModelConfig(**settings), shape)
    assert isinstance(model, HierarchicalVAE)
    with torch.no_grad():  # a posterior and prior well away from the standard normal, so the tests have teeth
        for head in [*model.prior_heads, *model.posterior_heads]:
            head.weight.mul_(sharpen)
            head.bias.normal_(0, 0.5)
    return model


def _binary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, d), 0.4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("fields", "shape"),
    [({}, (6,)), ({"weight_norm": True, "residual_blocks": 2}, (6,)),
     ({"architecture": "conv", "channels": (4, 8)}, (1, 8, 8))],
)
def test_contract_shapes_and_prior(fields, shape):
    model = _hvae(shape=shape, **fields)
    x = torch.bernoulli(torch.full((4, *shape), 0.5))
    qz_x = model.encode(x)
    assert isinstance(qz_x, TopDownPosterior)
    z = qz_x.rsample((5,))
    assert z.shape == (5, 4, model.latent_dim) and qz_x.log_prob(z).shape == (5, 4)
    assert qz_x.mean.shape == qz_x.stddev.shape == (4, model.latent_dim)
    assert model.decode(z[0]).log_prob(x).shape == (4,)
    assert model.sample(3).shape == (3, *shape)
    pz = model.prior()  # the contract's latent is the prior noise: exactly N(0, I)
    log_density_at_zero = torch.tensor(-0.5 * model.latent_dim * math.log(2 * math.pi))
    assert torch.allclose(pz.log_prob(torch.zeros(model.latent_dim)), log_density_at_zero)
    if fields.get("architecture") == "conv":
        assert model.layer_sizes == [2 * 2 * 2, 3 * 2 * 2]  # channels x the 2 x 2 latent grid, top first


def test_decode_draw_reuses_the_pass_and_agrees_with_decode():
    """decode_draw(qz_x, z) serves the stream of the pass that drew z; decode(z) recomputes it: the same p(x|z)."""
    model = _hvae()
    x = _binary(8, 6)
    pz = model.prior()
    qz_x = model.encode(x)
    z = qz_x.rsample()
    assert qz_x.stream_of(z) is not None and qz_x.stream_of(z.clone()) is None  # keyed on the very tensor
    assert torch.allclose(qz_x.log_prob(z), qz_x.log_prob(z.clone()), atol=1e-5)
    assert torch.allclose(qz_x.kl_per_dim(pz, z), qz_x.kl_per_dim(pz, z.clone()), atol=1e-5)
    reused = model.decode_draw(qz_x, z).log_prob(x)
    assert torch.allclose(reused, model.decode(z.clone()).log_prob(x), atol=1e-5)
    with torch.no_grad():  # k draws (k, B, L): the bounds decode them through decode_draw, sample-major
        torch.manual_seed(3)
        weights = objectives.log_importance_weights(model, x, 4, qz_x)
        draws = qz_x._sampled[0]
        recomputed = (model.decode(draws.reshape(32, -1).clone()).log_prob(x.repeat(4, 1)).reshape(4, 8)
                      + model.prior().log_prob(draws) - qz_x.log_prob(draws.clone()))
    assert torch.allclose(weights, recomputed, atol=1e-4)


def test_decode_is_a_function_of_z_alone():
    """No state passes from encode to decode: decoding a draw gives the same p(x|z) whatever was encoded last."""
    model = _hvae()
    x = _binary(8, 6)
    with torch.no_grad():
        e = model.encode(x).rsample()
        before = model.decode(e).log_prob(x)
        model.encode(_binary(8, 6, seed=5)).rsample()  # another pass in between
        after = model.decode(e).log_prob(x)
    assert torch.equal(before, after)


def test_draws_written_in_place_are_not_served_from_the_cache():
    model = _hvae()
    x = _binary(8, 6)
    pz = model.prior()
    qz_x = model.encode(x)
    fresh = TopDownPosterior(model, qz_x.features)  # no cache: always runs its own pass
    with torch.no_grad():
        z = qz_x.rsample()
        z.mul_(3.0)  # bumps z's version: the pass that drew z no longer describes it
        assert qz_x.stream_of(z) is None
        assert torch.allclose(qz_x.log_prob(z), fresh.log_prob(z.clone()), atol=1e-5)
        assert torch.allclose(qz_x.kl_per_dim(pz, z), fresh.kl_per_dim(pz, z.clone()), atol=1e-5)
        e = qz_x.rsample()
        e.add_(1.0)
        assert torch.allclose(model.decode_draw(qz_x, e).log_prob(x), model.decode(e.clone()).log_prob(x), atol=1e-5)
    assert not torch.allclose(fresh.log_prob(z), fresh.log_prob(z / 3.0), atol=1e-3)  # the edit matters


def test_reparameterize_is_a_change_of_variables_from_standard_noise():
    """log q(e) = log N(eps; 0, I) - sum log s(e), s the posterior scales along e's own pass."""
    model = _hvae()
    x = _binary(5, 6)
    qz_x = model.encode(x)
    eps = torch.randn(3, 5, model.latent_dim)
    e = qz_x.reparameterize(eps)
    scales = model.top_down([f.repeat(3, 1) for f in qz_x.features], e=e.reshape(15, -1)).log_scale
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1) - scales.reshape(3, 5, -1).sum(-1)
    assert torch.allclose(qz_x.log_prob(e), expected, atol=1e-4)


def test_analytic_kl_matches_monte_carlo():
    model = _hvae()
    x = _binary(4, 6)
    with torch.no_grad():
        qz_x = model.encode(x)
        z = qz_x.rsample((20_000,))
        monte_carlo = (qz_x.log_prob(z) - model.prior().log_prob(z)).mean(0)
        analytic = qz_x.kl_per_dim(model.prior(), z).sum(-1).mean(0)
    assert float(monte_carlo.min()) > 0.5  # a posterior far from the prior
    assert torch.allclose(monte_carlo, analytic, rtol=0.03, atol=0.03)


def test_iwae_approaches_the_exact_likelihood_from_below():
    """With 3 latent dimensions p(x) = E_p(e)[p(x|e)] is an integral a grid computes; IWAE rises towards it."""
    model = _hvae(shape=(3,), layers=(2, 1), sharpen=3.0)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    torch.manual_seed(1)
    with torch.no_grad():  # p(x) = integral of N(e; 0, I) p(x|e) de on a grid over [-7, 7]^3
        grid = torch.linspace(-7, 7, 101)
        e = torch.cartesian_prod(grid, grid, grid)
        log_weight = torch.distributions.Normal(0.0, 1.0).log_prob(e).sum(-1) + 3 * math.log(float(grid[1] - grid[0]))
        log_px_e = torch.stack([model.decode(e).log_prob(row.expand(len(e), 3)) for row in x])  # (3, N)
        exact = torch.logsumexp(log_px_e + log_weight, dim=1)
        elbo = torch.stack([objectives.elbo(model, x).elbo for _ in range(2000)]).mean(0)
        iwae_10 = torch.stack([objectives.iwae_bound(model, x, 10) for _ in range(2000)]).mean(0)
        iwae_20000 = objectives.iwae_bound(model, x, 20_000, chunk_size=2000)
    assert bool((elbo < iwae_10 - 0.05).all()) and bool((iwae_10 < exact + 0.02).all())  # bounds, in expectation
    assert bool((iwae_20000 > iwae_10).all())
    assert torch.allclose(iwae_20000, exact, atol=0.03), (iwae_20000, exact)


def test_elbo_reports_per_layer_kl_and_free_bits_per_layer():
    model = _hvae()
    x = _binary(16, 6)
    torch.manual_seed(0)
    terms = objectives.elbo(model, x, free_bits=50.0, free_bits_per="layer")
    assert terms.kl_per_layer is not None and terms.kl_per_layer.shape == (16, 2)
    assert torch.allclose(terms.kl_per_layer.sum(-1), terms.kl, atol=1e-5)
    # every layer's batch-mean KL is below 50 nats, so the floor holds it at 50 per layer: 2 layers -> 100
    assert torch.allclose(terms.loss, -terms.log_px_z.mean() + 100.0, atol=1e-4)
    torch.manual_seed(0)
    per_dim = objectives.elbo(model, x, free_bits=50.0)
    assert torch.allclose(per_dim.loss, -per_dim.log_px_z.mean() + 50.0 * model.latent_dim, atol=1e-3)


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("hierarchical", [False, True])
def test_dreg_same_bound_and_same_generative_gradient_as_iwae(hierarchical):
    torch.manual_seed(0)
    model = _hvae() if hierarchical else build_model(ModelConfig(latent_dim=3, hidden_dims=(16,)), (6,))
    x = _binary(4, 6)
    torch.manual_seed(5)
    plain = objectives.iwae(model, x, 8)
    g_plain = _grads(model, plain.loss)
    torch.manual_seed(5)
    dreg = objectives.iwae(model, x, 8, estimator="dreg")
    g_dreg = _grads(model, dreg.loss)
    assert torch.allclose(plain.loss, dreg.loss, atol=1e-4) and torch.allclose(plain.elbo, dreg.elbo, atol=1e-4)
    # the output layer only turns z into p(x|z): both estimators give it sum_i w_i grad log w_i exactly
    head = [n for n in g_plain if n.startswith(("head.", "decoder."))]
    assert head and all(torch.allclose(g_plain[n], g_dreg[n], atol=1e-4) for n in head)
    encoder = [n for n in g_plain if n.startswith(("encoder.", "stem.", "up."))]
    assert any(not torch.allclose(g_plain[n], g_dreg[n], atol=1e-6) for n in encoder)  # DReG changes these


def test_dreg_encoder_gradient_is_unbiased_and_less_noisy():
    """Averaged over many draws, DReG's inference-network gradient matches the IWAE one; its spread is smaller."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden_dims=(8,)), (4,))
    x = _binary(2, 4)
    name = "encoder.1.2.weight"
    draws: dict[str, list[torch.Tensor]] = {"iwae": [], "dreg": []}
    for estimator in draws:
        torch.manual_seed(1)
        for _ in range(3000):
            draws[estimator].append(_grads(model, objectives.iwae(model, x, 16, estimator=estimator).loss)[name])
    plain, dreg = torch.stack(draws["iwae"]), torch.stack(draws["dreg"])
    stderr = (plain.std(0) ** 2 / len(plain) + dreg.std(0) ** 2 / len(dreg)).sqrt()
    assert bool(((plain.mean(0) - dreg.mean(0)).abs() < 4 * stderr + 1e-4).all())
    assert float(dreg.std(0).mean()) < 0.7 * float(plain.std(0).mean())


def test_estimator_must_be_known():
    model = _hvae()
    with pytest.raises(ValueError, match="estimator"):
        objectives.iwae(model, _binary(2, 6), 2, estimator="reinforce")


def test_hierarchical_configs_are_checked():
    with pytest.raises(ConfigError, match="latent_layers"):
        HierarchicalVAE(ModelConfig(latent_layers=(3, 0)), (6,))
    with pytest.raises(ConfigError, match="conditional"):
        build_model(ModelConfig(latent_layers=(3,), num_classes=2), (6,))
    with pytest.raises(ConfigError, match="architecture"):
        build_model(ModelConfig(latent_layers=(3,), architecture="transformer"), (6,))


def test_learning_rate_warmup_then_cosine_or_step_over_a_budget():
    def lr(step, elapsed=0.0, **train):
        config = Config(train=TrainConfig(lr=1.0, **train))
        return learning_rate(step, 1000, config, elapsed)

    assert lr(0, warmup_steps=10, schedule="constant") == pytest.approx(0.1)
    assert lr(9, warmup_steps=10, schedule="constant") == pytest.approx(1.0)
    assert lr(500, schedule="cosine") == pytest.approx(0.5)
    assert lr(10, elapsed=50, schedule="cosine", time_budget_s=100) == pytest.approx(0.5)  # the budget, not steps
    assert [lr(s, schedule="step") for s in (0, 499, 500, 749, 750, 999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_bits_back_codes_a_hierarchy_layer_by_layer(likelihood):
    levels = 2 if likelihood == "bernoulli" else 256
    model = _hvae(shape=(1, 8, 8), likelihood=likelihood)
    coder = BitsBackModel(model, CodingConfig(latent_bits=12, posterior_precision=20, batch_size=8)).prepare()
    x = np.random.default_rng(0).integers(0, levels, (5, 64))
    z = np.random.default_rng(1).integers(0, 2**12, 5 * model.latent_dim)
    round_trip(coder.posterior_codec(x), z)
    round_trip(coder.codec(5), x, initial=64)
    data = np.random.default_rng(2).integers(0, levels, (40, 64))
    chunk = encode_chunk(coder, data)
    assert np.array_equal(decode_chunk(coder, chunk), data)


def test_bits_back_net_cost_is_the_negative_elbo():
    """Coded in a long chunk, a hierarchical model's net bits per example approach its -ELBO (in bits)."""
    model = _hvae(shape=(1, 8, 8), seed=3)
    coder = BitsBackModel(model, CodingConfig(batch_size=64)).prepare()
    data = np.random.default_rng(3).integers(0, 2, (400, 64))
    chunk = encode_chunk(coder, data)
    with torch.no_grad():
        x = coder.to_input(data)
        elbo = torch.stack([objectives.elbo(model, x).elbo for _ in range(20)]).mean(0)
        neg_elbo_bits = -float(elbo.sum()) / math.log(2)
    net_bits = 32 * len(chunk.words) - chunk.initial_bits
    assert abs(net_bits - neg_elbo_bits) < 0.02 * neg_elbo_bits + 200

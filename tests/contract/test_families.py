"""The model contract, checked for every registered family over the configurations it lists
(:meth:`vaekit.models.LatentVariableModel.contract_examples`): a family added later is tested by registering.

encode / decode / prior give distributions of the right shapes; the ELBO is E[log p(x|z)] - KL, with the KL
analytic where the posterior gives it and equal to its Monte Carlo estimate; the importance-weighted bound rises
with k; decode_draw is decode; sampling draws from prior(); every parameter gets a gradient; save -> load gives
identical outputs; export and the HTTP service work or refuse with a clear error.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Distribution, Independent, Normal

from vaekit.errors import ConfigError
from vaekit.models import FAMILIES, ContractExample, LatentVariableModel, Posterior, build_model, load, save_model
from vaekit.models.bounds import elbo, iwae_bound, log_importance_weights
from vaekit.models.priors import Prior

EXAMPLES = [
    pytest.param(family, example, id=f"{family}-{example.name}")
    for family in FAMILIES.names()
    for example in FAMILIES.get(family).contract_examples()
]


def test_every_family_lists_examples() -> None:
    assert FAMILIES.names() == sorted(FAMILIES.names()) and {"vae", "hierarchical"} <= set(FAMILIES.names())
    for family in FAMILIES.names():
        assert FAMILIES.get(family).contract_examples(), f"family {family!r} gives the contract tests nothing to build"


def _build(family: str, example: ContractExample, seed: int = 0) -> LatentVariableModel:
    torch.manual_seed(seed)
    model = build_model(example.config, example.data_shape).double()
    assert model.family == family and model.config.family == family
    return model


def _batch(example: ContractExample, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, y = example.batch(n, torch.Generator().manual_seed(seed))
    return x.double(), y


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_distributions_have_the_contract_shapes(family: str, example: ContractExample) -> None:
    model = _build(family, example)
    x, y = _batch(example)
    qz_x = model.encode(x, y)
    latent = model.latent_dim
    assert isinstance(qz_x, Posterior)
    assert qz_x.batch_shape == (6,) and qz_x.event_shape == (latent,)
    assert sum(model.layer_sizes) == latent
    z = qz_x.rsample()
    assert z.shape == (6, latent)
    px_z = model.decode(z, y)
    assert isinstance(px_z, Distribution) and px_z.batch_shape == (6,) and px_z.event_shape == example.data_shape
    assert px_z.log_prob(x).shape == (6,) and torch.isfinite(px_z.log_prob(x)).all()
    pz = model.prior()
    assert pz.event_shape == (latent,) and pz.log_prob(z).shape == (6,)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_elbo_is_reconstruction_minus_kl_and_the_kl_matches_monte_carlo(family: str, example: ContractExample) -> None:
    model = _build(family, example)
    x, y = _batch(example)
    with torch.no_grad():
        terms = elbo(model, x, y=y)
        torch.testing.assert_close(terms.elbo, terms.log_px_z - terms.kl)
        qz_x = model.encode(x, y)
        z = qz_x.rsample((4000,))  # (S, B, L)
        kl_mc = (qz_x.log_prob(z) - model.prior().log_prob(z)).mean(0)
        kl_analytic = torch.stack([elbo(model, x, y=y).kl for _ in range(400)]).mean(0)
    # one-layer: exact KL; several layers: an estimate with the upper layers' noise only, unbiased
    assert torch.allclose(kl_analytic, kl_mc, rtol=0.05, atol=0.05), (kl_analytic, kl_mc)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_importance_weighted_bound_rises_with_k(family: str, example: ContractExample) -> None:
    """On the same 100 draws, L_k averaged over groups of k rises with k (Jensen, exactly); over fresh draws the mean
    of L_100 exceeds the mean of L_1 (seeded, 200 and 20 repeats: the gap is over 3 standard errors here)."""
    model = _build(family, example)
    x, y = _batch(example, n=8)
    torch.manual_seed(1)
    with torch.no_grad():
        log_w = log_importance_weights(model, x, 100, y=y)  # (100, B)
        grouped = {
            k: (torch.logsumexp(log_w.reshape(100 // k, k, -1), dim=1) - math.log(k)).mean() for k in (1, 10, 100)
        }
        assert grouped[1] <= grouped[10] + 1e-12 and grouped[10] <= grouped[100] + 1e-12, grouped
        one = torch.stack([iwae_bound(model, x, 1, y=y).mean() for _ in range(200)]).mean()
        hundred = torch.stack([iwae_bound(model, x, 100, y=y).mean() for _ in range(20)]).mean()
    assert one < hundred, (one, hundred)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_decode_draw_is_decode(family: str, example: ContractExample) -> None:
    model = _build(family, example).eval()  # a family's training-time noise (the text decoder's dropout) set aside
    x, y = _batch(example)
    qz_x = model.encode(x, y)
    z = qz_x.rsample((3,))  # (3, B, L)
    y_rep = None if y is None else y.repeat(3)
    x_rep = x.repeat(3, *([1] * (x.dim() - 1)))
    reused = model.decode_draw(qz_x, z, y_rep).log_prob(x_rep)
    fresh = model.decode(z.reshape(-1, model.latent_dim).clone(), y_rep).log_prob(x_rep)
    torch.testing.assert_close(reused, fresh)


class _ShiftedPrior(Prior):
    """N(3, 0.5^2 I): a prior no family uses, to see that sampling goes through the prior module."""

    def forward(self) -> Distribution:
        return Independent(Normal(torch.full((self.latent_dim,), 3.0), torch.full((self.latent_dim,), 0.5)), 1)

    def draw(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return 3.0 + 0.5 * temperature * torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_sampling_draws_from_the_prior(family: str, example: ContractExample) -> None:
    model = _build(family, example)
    model.latent_prior = _ShiftedPrior(model.latent_dim)
    z = model.sample_latents(20_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(z.mean()) - 3.0) < 0.02 and abs(float(z.std()) - 0.5) < 0.02
    _, y = _batch(example, n=4)
    samples = model.sample(4, generator=torch.Generator().manual_seed(5), y=y)
    expected = model.decode(model.sample_latents(4, generator=torch.Generator().manual_seed(5)), y).mean
    torch.testing.assert_close(samples, expected)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_every_parameter_gets_a_gradient(family: str, example: ContractExample) -> None:
    model = _build(family, example)
    x, y = _batch(example, n=16)
    elbo(model, x, y=y).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_save_and_load_give_identical_outputs(family: str, example: ContractExample, tmp_path: Path) -> None:
    model = _build(family, example).float().eval()
    x, y = _batch(example)
    x = x.float()
    save_model(model, tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.config == model.config
    z = torch.randn(5, model.latent_dim, generator=torch.Generator().manual_seed(0))
    y5 = None if y is None else y[:5]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x, y).mean, model.encode(x, y).mean, rtol=0, atol=0)
        torch.testing.assert_close(loaded.decode(z, y5).mean, model.decode(z, y5).mean, rtol=0, atol=0)


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_seeded_building_is_deterministic(family: str, example: ContractExample) -> None:
    a, b = _build(family, example, seed=3), _build(family, example, seed=3)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_export_works_or_refuses_clearly(family: str, example: ContractExample, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from vaekit.serving import export

    model = _build(family, example).float()
    try:
        out = export(model, tmp_path / "onnx")
    except ConfigError as exc:
        message = str(exc)
        assert ("family" in message or "conditional" in message) and "\n" not in message, message
        assert not (tmp_path / "onnx").exists()
        return
    assert (out / "encoder.onnx").is_file() and (out / "decoder.onnx").is_file()


@pytest.mark.parametrize(("family", "example"), EXAMPLES)
def test_the_http_service_answers(family: str, example: ContractExample) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.serving import create_app

    model = _build(family, example).float()
    x, y = _batch(example, n=3)
    labels = {} if y is None else {"y": y.tolist()}
    with TestClient(create_app(model)) as client:
        encoded = client.post("/v1/encode", json={"x": x.tolist(), **labels})
        assert encoded.status_code == 200, encoded.text
        assert len(encoded.json()["mean"]) == 3 and len(encoded.json()["mean"][0]) == model.latent_dim
        sampled = client.post("/v1/sample", json={"n": 2, "seed": 0, **({} if y is None else {"label": 0})})
        assert sampled.status_code == 200, sampled.text
        assert math.prod(torch.tensor(sampled.json()["x"]).shape[1:]) == math.prod(example.data_shape)

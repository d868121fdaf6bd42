"""Contract tests run over every registered architecture x likelihood (and activation).

Whatever is registered must: give the documented shapes, a finite loss, gradients in every parameter,
identical outputs after save -> load, and identical parameters and loss from the same seed.
"""

from __future__ import annotations

import pytest
import torch

from vaekit import objectives
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.serialization import load, save_model
from vaekit.models.vae import VAE
from vaekit.nn import ACTIVATIONS, ARCHITECTURES

SHAPES = [(1, 8, 8), (3, 12, 10), (1, 7, 9), (5,)]


def _cases() -> list[tuple[str, str, tuple[int, ...]]]:
    cases = []
    for architecture in ARCHITECTURES.names():
        for likelihood in LIKELIHOODS.names():
            for shape in SHAPES:
                if architecture == "conv" and len(shape) != 3:
                    continue  # conv needs C x H x W (checked separately below)
                cases.append((architecture, likelihood, shape))
    return cases


CASES = _cases()
IDS = [f"{a}-{lk}-{'x'.join(map(str, s))}" for a, lk, s in CASES]


def _config(architecture: str, likelihood: str, **fields: object) -> ModelConfig:
    settings: dict[str, object] = {
        "architecture": architecture, "likelihood": likelihood, "latent_dim": 3, "hidden_dims": (16,),
        "channels": (4, 8), **fields,
    }
    return ModelConfig(**settings)  # type: ignore[arg-type]


def _build(architecture: str, likelihood: str, shape: tuple[int, ...], seed: int = 0, **fields: object) -> VAE:
    torch.manual_seed(seed)
    return VAE(_config(architecture, likelihood, **fields), shape)


def _data(likelihood: str, shape: tuple[int, ...], n: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.full((n, *shape), 0.4), generator=generator)
    if likelihood == "discretized_logistic":  # 8-bit data, as read from uint8 arrays
        return torch.randint(0, 256, (n, *shape), generator=generator) / 255.0
    if likelihood == "multinomial":  # counts, such as a user's interactions with items
        return torch.randint(0, 3, (n, *shape), generator=generator).float()
    return torch.randn(n, *shape, generator=generator)


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    architecture, likelihood, shape = request.param
    return _build(architecture, likelihood, shape), _data(likelihood, shape), shape


def test_case_list_covers_every_registered_component():
    assert {a for a, _, _ in CASES} == set(ARCHITECTURES.names())
    assert {lk for _, lk, _ in CASES} == set(LIKELIHOODS.names())


def test_shapes(case):
    model, x, shape = case
    batch, latent = x.shape[0], model.latent_dim
    qz_x = model.encode(x)
    assert qz_x.batch_shape == (batch,) and qz_x.event_shape == (latent,)
    assert qz_x.mean.shape == (batch, latent)
    assert bool((qz_x.stddev > 0).all())
    z = qz_x.rsample()
    px_z = model.decode(z)
    assert px_z.batch_shape == (batch,) and px_z.event_shape == shape
    assert px_z.log_prob(x).shape == (batch,)
    pz = model.prior()
    assert pz.event_shape == (latent,) and pz.log_prob(z).shape == (batch,)
    assert model.sample(5).shape == (5, *shape)
    assert model.sample(2, temperature=0.5, mean=False).shape == (2, *shape)
    assert model.reconstruct(x).shape == x.shape
    assert model.reconstruct(x, sample_latent=True).shape == x.shape
    assert model.log_likelihood(x, k=3, chunk_size=2).shape == (batch,)
    assert model.num_dims == torch.Size(shape).numel()
    model.check_input(x)
    bad = torch.zeros(batch, *shape[:-1], shape[-1] + 1)
    with pytest.raises(DataError, match="does not match the model's data shape"):
        model.check_input(bad)


def test_finite_loss_and_gradients_reach_every_parameter(case):
    model, x, _ = case
    for terms in (objectives.elbo(model, x), objectives.iwae(model, x, 3)):
        assert terms.loss.shape == ()
        assert bool(torch.isfinite(terms.loss))
        for name in ("elbo", "log_px_z", "kl"):
            value = getattr(terms, name)
            assert value.shape == (x.shape[0],) and bool(torch.isfinite(value).all()), name
        model.zero_grad(set_to_none=True)
        terms.loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is not None, f"{name} gets no gradient"
            assert bool(torch.isfinite(param.grad).all()), name
            assert float(param.grad.abs().sum()) > 0, f"{name} gets an all-zero gradient"


def test_save_load_gives_identical_outputs(case, tmp_path):
    model, x, shape = case
    with torch.no_grad():  # move away from the initialisation so a re-initialised model would differ
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.eval()
    saved = save_model(model, tmp_path / "model")
    loaded = load(saved)
    assert loaded.config == model.config and loaded.data_shape == shape
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert torch.equal(loaded.encode(x).mean, model.encode(x).mean)
    assert torch.equal(loaded.encode(x).stddev, model.encode(x).stddev)
    torch.manual_seed(4)
    expected = model.elbo(x)
    torch.manual_seed(4)
    assert torch.equal(loaded.elbo(x), expected)
    assert torch.equal(
        loaded.sample(3, generator=torch.Generator().manual_seed(1)),
        model.sample(3, generator=torch.Generator().manual_seed(1)),
    )


def test_seeded_determinism(case):
    model, x, _ = case
    architecture, likelihood, shape = model.config.architecture, model.config.likelihood, model.data_shape
    twin = _build(architecture, likelihood, shape, seed=0)
    other = _build(architecture, likelihood, shape, seed=1)
    pairs = list(zip(model.state_dict().items(), twin.state_dict().items(), strict=True))
    assert all(k1 == k2 and torch.equal(v1, v2) for (k1, v1), (k2, v2) in pairs)
    assert not all(
        torch.equal(v1, v2) for v1, v2 in zip(model.parameters(), other.parameters(), strict=True)
    )
    torch.manual_seed(9)
    loss = objectives.elbo(model, x).loss
    torch.manual_seed(9)
    assert torch.equal(objectives.elbo(twin, x).loss, loss)


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_fixed_gaussian_scale_and_other_options_save_and_load(likelihood, tmp_path):
    fields = {"gaussian_scale": 0.25} if likelihood == "gaussian" else {"activation": "tanh"}
    model = _build("conv", likelihood, (1, 8, 8), **fields)
    loaded = load(save_model(model, tmp_path / "m"))
    assert loaded.config == model.config
    x = _data(likelihood, (1, 8, 8))
    torch.manual_seed(0)
    expected = model.elbo(x)
    torch.manual_seed(0)
    assert torch.equal(loaded.elbo(x), expected)


@pytest.mark.parametrize(("height", "width"), [(7, 9), (5, 5), (28, 28), (13, 6), (4, 4)])
def test_conv_handles_odd_sizes(height, width):
    model = _build("conv", "bernoulli", (2, height, width))
    x = _data("bernoulli", (2, height, width), n=3)
    out = model.decoder(model.encode(x).mean)
    assert out.shape == (3, model.likelihood.param_channels, 2, height, width)
    assert model.reconstruct(x).shape == x.shape
    assert bool(torch.isfinite(objectives.elbo(model, x).loss))


@pytest.mark.parametrize("channels", [(4,), (4, 8, 8)])
def test_conv_depths(channels):
    model = _build("conv", "gaussian", (3, 12, 10), channels=channels, hidden_dims=())
    x = _data("gaussian", (3, 12, 10), n=2)
    assert model.reconstruct(x).shape == x.shape


def test_conv_rejects_vectors_and_tiny_images():
    with pytest.raises(ConfigError, match="C x H x W"):
        _build("conv", "bernoulli", (5,))
    with pytest.raises(ConfigError, match="too small"):
        _build("conv", "bernoulli", (1, 3, 3), channels=(4, 8, 8))


@pytest.mark.parametrize("architecture", ARCHITECTURES.names())
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation_builds(architecture, activation):
    model = _build(architecture, "bernoulli", (1, 8, 8), activation=activation)
    act_type = type(ACTIVATIONS.get(activation)())
    assert any(isinstance(m, act_type) for m in model.modules())
    x = _data("bernoulli", (1, 8, 8), n=2)
    loss = objectives.elbo(model, x).loss
    assert bool(torch.isfinite(loss))
    loss.backward()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dims": (16, 0)}, "hidden_dims"),
        ({"architecture": "transformer"}, "conv, mlp"),
        ({"likelihood": "poisson"}, "bernoulli, discretized_logistic, gaussian"),
        ({"activation": "swish"}, "elu, gelu"),
    ],
)
def test_bad_model_configs_raise_config_error(fields, match):
    settings = {"architecture": "mlp", "likelihood": "bernoulli", **fields}
    with pytest.raises(ConfigError, match=match):
        _build(settings.pop("architecture"), settings.pop("likelihood"), (1, 8, 8), **settings)

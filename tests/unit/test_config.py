"""Config: dotted overrides, type checks, YAML/JSON files, round trips, registries and presets."""

from __future__ import annotations

import json

import pytest

from vaekit.config import Config, ModelConfig, TrainConfig, load_config_file, parse_override, resolve_config
from vaekit.errors import ConfigError
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.priors import PRIORS
from vaekit.nn import ACTIVATIONS, ARCHITECTURES
from vaekit.presets import PRESETS, get_preset, presets


# -- overrides -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("train.epochs=7", "train", "epochs", 7),
        ("train.lr=3e-4", "train", "lr", 3e-4),
        ("train.lr=0.5", "train", "lr", 0.5),
        ("train.lr=2", "train", "lr", 2.0),  # an int is a valid float
        ("train.lr=1E-2", "train", "lr", 1e-2),
        ("data.standardize=false", "data", "standardize", False),
        ("data.grayscale=true", "data", "grayscale", True),
        ("data.grayscale=null", "data", "grayscale", None),
        ("model.hidden_dims=[512,256]", "model", "hidden_dims", (512, 256)),
        ("model.hidden_dims=[ 8 ]", "model", "hidden_dims", (8,)),
        ("model.hidden_dims=[]", "model", "hidden_dims", ()),
        ("data.image_size=[28, 28]", "data", "image_size", (28, 28)),
        ("data.image_size=null", "data", "image_size", None),
        ("model.gaussian_scale=0.1", "model", "gaussian_scale", 0.1),
        ("model.gaussian_scale=null", "model", "gaussian_scale", None),
        ("data.binarize=dynamic", "data", "binarize", "dynamic"),
        ("objective.name=iwae", "objective", "name", "iwae"),
        ("train.schedule=cosine", "train", "schedule", "cosine"),
        ("data.source=/tmp/some data.npy", "data", "source", "/tmp/some data.npy"),
        ("model.architecture=conv", "model", "architecture", "conv"),
    ],
)
def test_override_parses_and_type_checks(override, section, key, expected):
    config = resolve_config(overrides=[override])
    value = getattr(getattr(config, section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_apply_in_order_and_leave_the_rest_alone():
    config = resolve_config(overrides=["train.epochs=3", "train.epochs=5", "objective.beta=4"])
    assert config.train.epochs == 5
    assert config.objective.beta == 4.0 and isinstance(config.objective.beta, float)
    defaults = Config()
    assert config.model == defaults.model and config.data == defaults.data
    assert config.train.lr == defaults.train.lr


def test_parse_override_splits_key_and_value():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("data.source=a=b.npy") == (["data", "source"], "a=b.npy")  # first '=' splits


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),  # bool is not an int
        ("train.epochs=ten", "train.epochs"),
        ("train.lr=fast", "train.lr"),
        ("train.lr=false", "train.lr"),
        ("data.standardize=1", "data.standardize"),
        ("model.hidden_dims=16", "model.hidden_dims"),
        ("model.hidden_dims=[16, 8.5]", "model.hidden_dims[1]"),
        ("model.latent_dim=null", "model.latent_dim"),
        ("data.binarize=sometimes", "data.binarize"),
        ("train.optimizer=sgd", "train.optimizer"),
        ("model.architecture=7", "model.architecture"),
        ("model.gaussian_scale=wide", "model.gaussian_scale"),
    ],
)
def test_wrong_type_raises_config_error_naming_the_key(override, names):
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=[override])
    assert repr(names) in str(info.value)


def test_literal_error_lists_the_choices():
    with pytest.raises(ConfigError, match="'none', 'static', 'dynamic'"):
        resolve_config(overrides=["data.binarize=always"])


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.lrr=0.1", "train.lrr"),
        ("training.lr=0.1", "training.lr"),
        ("lr=0.1", "lr"),
        ("train.lr.value=0.1", "train.lr.value"),
    ],
)
def test_unknown_key_raises_config_error_naming_it(override, names):
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=[override])
    assert repr(names) in str(info.value)
    assert isinstance(info.value, ValueError)  # callers may catch the built-in


def test_unknown_key_message_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"valid keys here: .*train\.lr, "):
        resolve_config(overrides=["train.learning_rate=0.1"])


@pytest.mark.parametrize("bad", ["train.lr", "=3", "  =3"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="key"):
        parse_override(bad)


# -- files ---------------------------------------------------------------------------------------------------
def test_yaml_file_loads_and_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  latent_dim: 4\n  hidden_dims: [32, 16]\ntrain:\n  lr: 3e-4\n  epochs: 9\n"
        "data:\n  binarize: static\n"
    )
    config = resolve_config(get_preset("digits"), config_file=path, overrides=["train.epochs=2"])
    assert config.model.latent_dim == 4
    assert config.model.hidden_dims == (32, 16)
    assert config.train.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string; it is accepted
    assert config.train.epochs == 2
    assert config.data.binarize == "static"
    assert config.train.batch_size == get_preset("digits").train.batch_size  # preset kept where not set


def test_json_file_loads(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"objective": {"name": "iwae", "k": 3}, "model": {"gaussian_scale": None}}))
    config = resolve_config(config_file=path)
    assert config.objective.name == "iwae" and config.objective.k == 3
    assert config.model.gaussian_scale is None


def test_empty_yaml_file_is_the_base(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert resolve_config(config_file=path) == Config()


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.yaml", "model: [unclosed\n  latent_dim: 3", "not valid YAML/JSON"),
        ("bad.json", '{"model": {"latent_dim": 3,}', "not valid YAML/JSON"),
        ("list.yaml", "- 1\n- 2\n", "mapping"),
        ("section.yaml", "model: 3\n", "model"),
        ("unknown.yaml", "model:\n  latnet_dim: 3\n", "model.latnet_dim"),
        ("type.json", '{"train": {"epochs": "many"}}', "train.epochs"),
    ],
)
def test_malformed_config_file_raises_config_error(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_config(config_file=path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "nope.yaml")


# -- round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS.names())
def test_to_dict_from_dict_round_trip(name):
    config = resolve_config(
        get_preset(name), overrides=["data.image_size=[12, 10]", "model.gaussian_scale=0.5"]
    )
    plain = config.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # JSON-ready: tuples became lists
    assert isinstance(plain["model"]["hidden_dims"], list)
    again = Config.from_dict(json.loads(json.dumps(plain)))
    assert again == config
    assert isinstance(again.model.hidden_dims, tuple) and isinstance(again.data.image_size, tuple)


def test_from_dict_partial_sections_use_defaults():
    config = Config.from_dict({"train": {"epochs": 1}})
    assert config.train == TrainConfig(epochs=1)
    assert config.model == ModelConfig()


def test_from_dict_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="'train'"):
        Config.from_dict({"train": [1, 2]})


def test_configs_are_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.train.epochs = 3  # type: ignore[misc]


# -- registries and presets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        (ARCHITECTURES, {"mlp", "conv"}),
        (LIKELIHOODS, {"bernoulli", "gaussian"}),
        (ACTIVATIONS, {"relu", "elu", "gelu", "silu", "tanh", "leaky_relu"}),
        (PRIORS, {"standard_normal"}),
    ],
)
def test_unknown_registry_name_lists_valid_names(registry, expected):
    assert expected <= set(registry.names())
    with pytest.raises(ConfigError) as info:
        registry.get("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in registry.names())
    assert "nope" not in registry


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        LIKELIHOODS.register("bernoulli")(object)  # type: ignore[arg-type]


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as info:
        get_preset("mnist-transformer")
    assert all(name in str(info.value) for name in ("digits", "mnist-mlp", "tabular"))


def test_presets_are_valid_configs():
    for preset in presets():
        assert preset.description
        assert Config.from_dict(preset.config.to_dict()) == preset.config
        assert preset.config.model.architecture in ARCHITECTURES
        assert preset.config.model.likelihood in LIKELIHOODS
        assert preset.config.model.activation in ACTIVATIONS


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.ema=1", "train.ema"),
        ("train.time_budget_s=-5", "train.time_budget_s"),
        ("model.latent_dim=-1", "model.latent_dim"),  # 0 is the text family's language model (refused when built)
        ("model.hidden_dims=[16,0]", "model.hidden_dims"),
        ("model.gaussian_scale=-1", "model.gaussian_scale"),
        ("objective.beta=-1", "objective.beta"),
        ("objective.beta=.nan", "objective.beta"),
        ("objective.free_bits=-0.5", "objective.free_bits"),
        ("objective.k=0", "objective.k"),
        ("data.val_fraction=1", "data.val_fraction"),
        ("data.image_size=[28]", "data.image_size"),
    ],
)
def test_resolve_config_refuses_invalid_values_naming_the_key(override: str, key: str) -> None:
    """Values are checked where the config is built, not deep inside training."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_config(overrides=[override])


def test_sections_built_in_python_are_checked_too() -> None:
    from vaekit.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train\.lr must be a finite number > 0, got -0\.1"):
        TrainConfig(lr=-0.1)


def test_registered_names_are_checked_before_training(tmp_path) -> None:
    from vaekit.training import train

    for override, key in [
        ("model.prior=vamp", "model.prior"), ("model.family=flow", "model.family"),
        ("objective.name=wake-sleep", "objective.name"), ("model.likelihood=poisson", "model.likelihood"),
    ]:
        with pytest.raises(ConfigError, match=rf"\({key}\); choose one of"):
            train(resolve_config(overrides=[override]), tmp_path / key)
        assert not (tmp_path / key).exists()


@pytest.mark.parametrize(("build", "named"), [
    (lambda: TrainConfig(schedule="linear"), "'train.schedule' must be one of 'constant', 'cosine', 'step'"),
    (lambda: TrainConfig(optimizer="sgd"), "'train.optimizer' must be one of 'adam', 'adamw'"),
    (lambda: TrainConfig(device="gpu"), "'train.device' must be one of 'auto', 'cpu', 'cuda'"),
    (lambda: TrainConfig(epochs=1.5), "'train.epochs' expects an integer, got 1.5"),
    (lambda: ModelConfig(hidden_dims=(8, "x")), r"'model.hidden_dims\[1\]' expects an integer"),
])
def test_sections_built_directly_are_checked_like_files(build, named) -> None:
    # the public section classes check choices and types when built, not only when read from a file or override
    with pytest.raises(ConfigError, match=named):
        build()


def test_numpy_numbers_and_lists_become_plain_values() -> None:
    import numpy as np

    train = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5))
    model = ModelConfig(hidden_dims=[np.int64(16), 8])  # type: ignore[arg-type]
    assert type(train.epochs) is int and type(train.lr) is float and model.hidden_dims == (16, 8)
    json.dumps(Config(model=model, train=train).to_dict())  # what config.json holds

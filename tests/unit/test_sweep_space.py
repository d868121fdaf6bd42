"""The sweep's search space: the grammar, its YAML form, and every check against the config's keys and types."""

from __future__ import annotations

import optuna
import pytest

from vaekit.config import Config, resolve_config
from vaekit.errors import ConfigError
from vaekit.tuning.space import apply_values, parse_entry, parse_space


def test_ranges_and_lists_parse_into_their_canonical_text():
    params = parse_space([
        "model.latent_dim=int(2,64,log)",
        "train.batch_size = int(32, 256, step=32)",
        "objective.beta=float(0.25, 8, log)",
        "train.lr=float(1e-4,3e-3)",
        "model.architecture=cat(mlp,conv)",
        "model.hidden_dims=cat([256,128], [512])",
    ])
    assert [p.describe() for p in params] == [
        "model.latent_dim=int(2, 64, log)",
        "train.batch_size=int(32, 256, step=32)",
        "objective.beta=float(0.25, 8, log)",
        "train.lr=float(0.0001, 0.003)",
        "model.architecture=cat(mlp, conv)",
        "model.hidden_dims=cat([256, 128], [512])",
    ]
    hidden = params[-1]
    assert hidden.choices == ((256, 128), (512,))
    assert hidden.labels() == ["[256, 128]", "[512]"]  # Optuna stores scalars; lists go by their text
    assert hidden.value_of("[512]") == (512,)
    # the canonical text parses back to the same entry
    assert [parse_entry(p.describe()) for p in params] == params


def test_the_yaml_form_gives_the_same_space():
    text = parse_space(["model.latent_dim=int(2, 64, log)", "model.architecture=cat(mlp, conv)",
                        "objective.beta=float(0.5, 2, step=0.5)"])
    mapping = parse_space({
        "model.latent_dim": {"type": "int", "low": 2, "high": 64, "log": True},
        "model.architecture": {"type": "cat", "choices": ["mlp", "conv"]},
        "objective.beta": "float(0.5, 2, step=0.5)",
    })
    assert mapping == text


@pytest.mark.parametrize(("entry", "named"), [
    ("model.latnt_dim=int(2, 8)", "unknown config key 'model.latnt_dim'"),
    ("modle.latent_dim=int(2, 8)", "unknown config key 'modle.latent_dim'"),
    ("model.latent_dim=int(8, 2)", "the range is empty"),
    ("model.latent_dim=int(4, 4)", "model.latent_dim=4"),  # one value: use an override
    ("model.latent_dim=float(2, 8)", "model.latent_dim is an integer, not a real number"),
    ("model.latent_dim=int(2.5, 8)", "must be an integer"),
    ("model.architecture=int(1, 3)", "not a number; list its values with cat"),
    ("model.hidden_dims=int(2, 8)", "not a number"),
    ("model.architecture=cat(mlp, cnn)", "unknown architecture 'cnn'"),
    ("model.architecture=cat()", "at least one value"),
    ("model.architecture=cat(mlp, mlp)", "listed twice"),
    ("model.latent_dim=int(0, 8)", "model.latent_dim"),  # the low end fails the key's own check
    ("objective.beta=float(-1, 8)", "objective.beta"),
    ("objective.beta=float(0, 8, log)", "log scale needs LOW > 0"),
    ("objective.beta=float(0.5, 8, log, step=0.5)", "cannot be combined"),
    ("train.batch_size=int(32, 250, step=32)", "not a multiple of step"),
    ("train.lr=float(1e-4, .nan)", "finite number"),
    ("train.lr=float(1e-4)", "needs LOW, HIGH"),
    ("model.latent_dim=range(2, 8)", "unknown kind 'range'"),
    ("model.latent_dim:int(2, 8)", "is not of the form KEY=int"),
    ("model.hidden_dims=cat([256, 128, [512])", "unclosed bracket"),
    ("train.schedule=cat(constant, linear)", "train.schedule"),
    ("model.latent_dim=int(2, 8, lg)", "unknown option 'lg'"),
])
def test_bad_entries_are_one_line_errors_naming_the_problem(entry, named):
    with pytest.raises(ConfigError) as info:
        parse_space([entry])
    message = str(info.value)
    assert named in message and "\n" not in message


def test_a_key_searched_twice_and_an_empty_space_are_refused():
    with pytest.raises(ConfigError, match="searched twice"):
        parse_space(["model.latent_dim=int(2, 8)", "model.latent_dim=cat(2, 4)"])
    with pytest.raises(ConfigError, match="search space is empty"):
        parse_space([])
    with pytest.raises(ConfigError, match="unknown field 'lo'"):
        parse_space({"model.latent_dim": {"type": "int", "lo": 2, "high": 8}})


def test_values_are_checked_against_the_base_config():
    # iwae takes no KL weight: with objective.name=iwae in the base, any beta other than 1 is refused
    base = resolve_config(overrides=["objective.name=iwae"])
    with pytest.raises(ConfigError, match=r"objective\.beta"):
        parse_space(["objective.beta=float(0.5, 2)"], base)


def test_suggestions_stay_in_the_space_and_build_checked_configs():
    params = parse_space(["model.latent_dim=int(2, 64, log)", "objective.beta=float(0.25, 8, log)",
                          "model.hidden_dims=cat([32], [64, 32])", "train.batch_size=int(32, 128, step=32)"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in params}
        config = apply_values(Config(), params, values)
        assert 2 <= config.model.latent_dim <= 64 and isinstance(config.model.latent_dim, int)
        assert 0.25 <= config.objective.beta <= 8
        assert config.model.hidden_dims in ((32,), (64, 32))
        assert config.train.batch_size in (32, 64, 96, 128)
        study.tell(trial, 0.0)


def test_a_grid_is_queued_once_so_parallel_workers_take_distinct_points():
    from vaekit.tuning.sweeping import enqueue_grid

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = parse_space(["model.latent_dim=cat(2,4,8)", "objective.beta=cat(0.5,1)"], Config())
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    assert enqueue_grid(study, params, trials=4) == 4  # --trials below the grid's 6 points: the first 4 only
    assert enqueue_grid(study, params, trials=6) == 2 and enqueue_grid(study, params, trials=6) == 0
    study.optimize(lambda t: t.suggest_categorical("model.latent_dim", [2, 4, 8])
                   * t.suggest_categorical("objective.beta", [0.5, 1]), n_trials=6)
    points = sorted((t.params["model.latent_dim"], t.params["objective.beta"]) for t in study.trials)
    assert points == [(2, 0.5), (2, 1), (4, 0.5), (4, 1), (8, 0.5), (8, 1)]
    assert enqueue_grid(study, params, trials=6) == 0  # a restarted sweep queues nothing it has run

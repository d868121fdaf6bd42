"""The search space of a sweep: which config keys vary, over what, checked against the config's types.

Each searched setting is one existing dotted config key (:mod:`vaekit.config`) and a range or a list::

    model.latent_dim=int(2, 64, log)        integers 2..64, sampled on a log scale
    train.batch_size=int(32, 256, step=32)  32, 64, ..., 256
    objective.beta=float(0.25, 8, log)      real numbers in [0.25, 8], log scale
    train.lr=float(1e-4, 3e-3)              real numbers, uniform
    model.architecture=cat(mlp, conv)       one of the values listed
    model.hidden_dims=cat([256,128], [512]) list values: commas inside brackets belong to the value

The grammar is small and strict: ``KEY=KIND(ARGS)``, KIND one of ``int``, ``float``, ``cat``; ``int`` and
``float`` take ``LOW, HIGH`` then optionally ``log`` and ``step=S`` (not both); ``cat`` takes one or more values,
each a YAML scalar or list, parsed as ``vaekit train key=value`` parses them. The same space in a YAML file (the
``sweep: space:`` mapping of ``--config``) is ``KEY: "int(2, 64, log)"``, or a mapping
``{type: int, low: 2, high: 64, log: true}`` / ``{type: cat, choices: [mlp, conv]}``.

Checked before any trial runs, each a one-line :class:`vaekit.errors.ConfigError`: the key exists; the kind fits
the key's type (``int`` only for integer keys, ``float`` for real ones, ``cat`` for any); the range is not empty
(``LOW < HIGH``; ``LOW > 0`` on a log scale; a step that divides ``HIGH - LOW``); both ends of a range and every
listed value pass the key's own checks on the base config (``model.latent_dim=int(0, 8)`` fails as
``model.latent_dim=0`` would); no key appears twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

import yaml

from vaekit.config import Config, merge, parse_override
from vaekit.errors import ConfigError

if TYPE_CHECKING:
    import optuna

KINDS = ("int", "float", "cat")
_ENTRY = re.compile(r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*=\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched config key.

    Attributes
    ----------
    key
        The dotted config key, ``section.name``.
    kind
        ``int``, ``float`` or ``cat``.
    low, high
        The range of ``int`` / ``float`` (inclusive); ``None`` for ``cat``.
    log
        Sample on a log scale.
    step
        Spacing of the values (``None``: any integer / any real number in the range).
    choices
        The values of ``cat``, as the config takes them (lists as tuples).
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """The canonical text of this entry, e.g. ``model.latent_dim=int(2, 64, log)``."""
        if self.kind == "cat":
            return f"{self.key}=cat({', '.join(_text(c) for c in self.choices)})"
        parts = [_number(self.low), _number(self.high)]
        parts += ["log"] if self.log else []
        parts += [f"step={_number(self.step)}"] if self.step is not None else []
        return f"{self.key}={self.kind}({', '.join(parts)})"

    def labels(self) -> list[Any]:
        """The ``cat`` values as Optuna stores them: scalars as they are, lists as their text (``[256, 128]``)."""
        return [c if isinstance(c, _SCALARS) else _text(c) for c in self.choices]

    def value_of(self, stored: Any) -> Any:
        """The config value of a parameter value Optuna stored (a ``cat`` label back to its list)."""
        if self.kind != "cat":
            return int(stored) if self.kind == "int" else float(stored)
        return self.choices[self.labels().index(stored)]

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        """Draw this parameter for ``trial``; returns the config value."""
        if self.kind == "cat":
            return self.value_of(trial.suggest_categorical(self.key, self.labels()))
        assert self.low is not None and self.high is not None  # internal: ranges always have both ends
        if self.kind == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _text(value: Any) -> str:
    """A value as a config override writes it (``mlp``, ``4``, ``[256, 128]``)."""
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, str) else json.dumps(value)


def _split_args(text: str, entry: str) -> list[str]:
    """``a, [1, 2], 'x, y'`` -> ``["a", "[1, 2]", "'x, y'"]``: commas inside brackets or quotes are kept."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if depth != 0 or quote:
        raise ConfigError(f"--space {entry!r} has an unclosed bracket or quote; write e.g. cat([256, 128], [512])")
    parts.append("".join(current).strip())
    return [] if parts == [""] else parts


def _annotation(key: str, entry: str) -> Any:
    """The type annotation of a dotted config key (ConfigError naming the valid keys if there is none)."""
    hints = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}
    path = key.split(".")
    if len(path) != 2 or path[0] not in hints:
        raise ConfigError(
            f"--space {entry!r}: unknown config key {key!r}; keys are section.name with section one of: "
            f"{', '.join(hints)}"
        )
    section_hints = typing.get_type_hints(hints[path[0]])
    if path[1] not in section_hints:
        raise ConfigError(
            f"--space {entry!r}: unknown config key {key!r}; valid keys here: "
            f"{', '.join(path[0] + '.' + name for name in section_hints)}"
        )
    return section_hints[path[1]]


def _numeric_kind(annotation: Any) -> str | None:
    """``int`` or ``float`` for an integer or real key (optionally ``| None``), else ``None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return {int: "int", float: "float"}.get(annotation)  # type: ignore[call-overload]


def _parse_number(text: str, kind: str, entry: str, what: str) -> float:
    _, value = parse_override(f"x={text}")
    integer = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not integer:
        raise ConfigError(f"--space {entry!r}: the {what} of int(...) must be an integer, got {text!r}")
    if (not integer and not isinstance(value, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"--space {entry!r}: the {what} must be a finite number, got {text!r}")
    return value


def _range_param(key: str, kind: str, args: list[str], entry: str) -> Param:
    """An ``int(...)`` / ``float(...)`` entry, its arguments parsed and its range checked."""
    if len(args) < 2:
        raise ConfigError(
            f"--space {entry!r}: {kind}(...) needs LOW, HIGH; write e.g. {kind}(2, 64) or {kind}(2, 64, log)"
        )
    low, high = (_parse_number(a, kind, entry, w) for a, w in zip(args[:2], ("low end", "high end"), strict=True))
    log, step = False, None
    for option in args[2:]:
        if option == "log":
            log = True
        elif option.replace(" ", "").startswith("step="):
            step = _parse_number(option.split("=", 1)[1].strip(), kind, entry, "step")
        else:
            raise ConfigError(f"--space {entry!r}: unknown option {option!r}; the options are log and step=S")
    return check_range(Param(key, kind, low, high, log, step), entry)


def check_range(param: Param, entry: str) -> Param:
    """Refuse an empty or degenerate range, a log scale that reaches 0, or a step that does not fit."""
    low, high, step = param.low, param.high, param.step
    assert low is not None and high is not None  # internal: called for ranges only
    if low >= high:
        fixed = f"; to fix the value, use the override {param.key}={_number(low)}" if low == high else ""
        raise ConfigError(f"--space {entry!r}: the range is empty (LOW {_number(low)} must be below HIGH "
                          f"{_number(high)}){fixed}")
    if param.log and low <= 0:
        raise ConfigError(f"--space {entry!r}: a log scale needs LOW > 0, got {_number(low)}")
    if step is not None:
        if param.log:
            raise ConfigError(f"--space {entry!r}: log and step=S cannot be combined; choose one")
        if step <= 0:
            raise ConfigError(f"--space {entry!r}: step must be positive, got {_number(step)}")
        if abs(round((high - low) / step) * step - (high - low)) > 1e-9 * max(1.0, abs(high)):
            raise ConfigError(f"--space {entry!r}: HIGH - LOW = {_number(high - low)} is not a multiple of "
                              f"step {_number(step)}")
    return param


def _cat_param(key: str, args: list[str], entry: str) -> Param:
    if not args:
        raise ConfigError(f"--space {entry!r}: cat(...) needs at least one value; write e.g. cat(mlp, conv)")
    choices = []
    for text in args:
        _, value = parse_override(f"x={text}")
        choices.append(tuple(value) if isinstance(value, list) else value)
    if len(set(map(_text, choices))) != len(choices):
        raise ConfigError(f"--space {entry!r}: a value is listed twice; list each once")
    return Param(key, "cat", choices=tuple(choices))


def parse_entry(entry: str) -> Param:
    """Parse one ``KEY=KIND(ARGS)`` entry (its key and kind are checked by :func:`check_space`)."""
    match = _ENTRY.match(entry)
    if match is None:
        raise ConfigError(
            f"--space {entry!r} is not of the form KEY=int(LOW, HIGH[, log]), KEY=float(LOW, HIGH[, log]) or "
            "KEY=cat(A, B, ...); for example model.latent_dim=int(2, 64, log)"
        )
    key, kind, body = match.groups()
    if kind not in KINDS:
        raise ConfigError(f"--space {entry!r}: unknown kind {kind!r}; use int(...), float(...) or cat(...)")
    args = _split_args(body, entry)
    return _cat_param(key, args, entry) if kind == "cat" else _range_param(key, kind, args, entry)


def parse_yaml_entry(key: str, value: Any) -> Param:
    """One entry of the YAML form: ``KEY: "int(2, 64, log)"`` or ``KEY: {type: int, low: 2, high: 64, log: true}``."""
    if isinstance(value, str):
        return parse_entry(f"{key}={value}")
    if not isinstance(value, Mapping) or value.get("type") not in KINDS:
        raise ConfigError(
            f"sweep space entry {key!r} must be a text such as 'int(2, 64, log)' or a mapping with type: int, "
            f"float or cat; got {value!r}"
        )
    allowed = {"type", "choices"} if value["type"] == "cat" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"sweep space entry {key!r}: unknown field {unknown[0]!r}; its fields are "
                          f"{', '.join(sorted(allowed))}")
    if value["type"] == "cat":
        choices = value.get("choices")
        if not isinstance(choices, list):
            raise ConfigError(f"sweep space entry {key!r}: choices must be a list, e.g. [mlp, conv]")
        return parse_entry(f"{key}=cat({', '.join(_text(c) for c in choices)})")
    args = [str(value.get("low")), str(value.get("high"))]
    args += ["log"] if value.get("log") is True else []
    args += [f"step={value['step']}"] if value.get("step") is not None else []
    return parse_entry(f"{key}={value['type']}({', '.join(args)})")


def _check_value(base: Config, key: str, value: Any, entry: str) -> None:
    """The config with this one value must build, and its registered names (family, architecture, likelihood,
    objective, ...) must exist, as ``vaekit train`` checks them before it reads any data."""
    from vaekit.models.families import check_names
    from vaekit.objectives import OBJECTIVES

    section, name = key.split(".")
    try:
        config = Config.from_dict(
            merge(base.to_dict(), {section: {name: list(value) if isinstance(value, tuple) else value}}))
        check_names(config.model)
        OBJECTIVES.get(config.objective.name)
    except ConfigError as exc:
        raise ConfigError(f"--space {entry!r}: {exc}") from None


def check_space(params: Sequence[Param], base: Config) -> list[Param]:
    """Check every entry against the config's keys, types and value checks (see the module docstring)."""
    seen: set[str] = set()
    for param in params:
        entry = param.describe()
        annotation = _annotation(param.key, entry)
        if param.key in seen:
            raise ConfigError(f"--space: {param.key} is searched twice; give each key once")
        seen.add(param.key)
        numeric = _numeric_kind(annotation)
        if param.kind == "float" and numeric != "float":
            hint = "use int(LOW, HIGH)" if numeric == "int" else "list its values with cat(...)"
            raise ConfigError(f"--space {entry!r}: {param.key} is {_type(annotation)}, not a real number; {hint}")
        if param.kind == "int" and numeric is None:
            raise ConfigError(f"--space {entry!r}: {param.key} is {_type(annotation)}, not a number; list its "
                              "values with cat(...)")
        values = param.choices if param.kind == "cat" else (param.low, param.high)
        for value in values:
            _check_value(base, param.key, value, entry)
    return list(params)


def _type(annotation: Any) -> str:
    return {int: "an integer", float: "a real number", bool: "true or false", str: "a string"}.get(
        annotation, str(annotation).replace("typing.", ""))


def parse_space(entries: Iterable[str] | Mapping[str, Any], base: Config | None = None) -> list[Param]:
    """Parse and check a search space.

    Parameters
    ----------
    entries
        Texts ``KEY=KIND(ARGS)`` (``--space``), or the YAML mapping ``{KEY: "int(2, 64)" or {type: ...}}``.
    base
        The config the trials start from (default ``Config()``); every value is checked on it.

    Returns
    -------
    list of Param
        In the order given.

    Raises
    ------
    ConfigError
        Any problem listed in the module docstring, naming the entry.
    """
    if isinstance(entries, Mapping):
        params = [parse_yaml_entry(str(key), value) for key, value in entries.items()]
    else:
        params = [parse_entry(entry) for entry in entries]
    if not params:
        raise ConfigError("the search space is empty; give at least one --space such as model.latent_dim=int(2, 64)")
    return check_space(params, base or Config())


def apply_values(base: Config, params: Sequence[Param], values: Mapping[str, Any]) -> Config:
    """The trial's config: ``base`` with ``values`` (config values keyed by dotted key) set and checked."""
    updates: dict[str, dict[str, Any]] = {}
    for param in params:
        value = values[param.key]
        section, name = param.key.split(".")
        updates.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return Config.from_dict(merge(base.to_dict(), updates))


def dump_yaml(data: Any) -> str:
    """YAML text of plain data, keys in their order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)

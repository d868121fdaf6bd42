"""A model and its data: reading examples through the model's stored preprocessing, binarized the way it was
trained, with the labels a conditional model needs.

Every verb that reads data for a trained model (evaluate, score, embed, reconstruct, interpolate, traverse,
plot-latent, probe, the sample-quality metrics) goes through here, so they all read the same data the same way:
``data=None`` means the model's own source (the test split of a built-in dataset), anything else a dataset name or
a path (see :func:`vaekit.data.load_examples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaekit.data import ExampleSet, load_examples
from vaekit.errors import ConfigError, DataError
from vaekit.memory import check_fits
from vaekit.models.contract import LatentVariableModel

Labels = int | Sequence[int] | np.ndarray | torch.Tensor
"""A label argument: one class for every example (int) or one label per example."""


def examples_for(
    model: LatentVariableModel, data: str | None, data_dir: str | None, split: str = "test"
) -> ExampleSet:
    """Examples of ``data`` (default: the model's own source, split ``split``) with the model's preprocessing.

    Raises
    ------
    ConfigError
        The model carries no preprocessing record, or no data source to default to.
    """
    check_source(data)
    if model.preprocessing is None:
        raise ConfigError(
            "the model has no stored preprocessing, so its data cannot be read; use a model saved by "
            "`vaekit train` (vaekit.evaluate also takes a tensor of preprocessed examples)"
        )
    source = str(data) if data is not None else model.preprocessing.source
    if not source:
        raise ConfigError("the model does not record its data source; pass data (--data NAME_OR_PATH)")
    return load_examples(source, model.preprocessing, data_dir=data_dir, split=split)


def check_source(data: object) -> None:
    """DataError unless ``data`` is ``None``, a dataset name or a path (a tensor or array where a source is read)."""
    if data is not None and not isinstance(data, (str, Path)):
        raise DataError(
            f"data must be a dataset name or a path, got {type(data).__name__}; save the array (.npy) and pass its "
            "path, or use the model's own methods on tensors (model.reconstruct, model.encode, vaekit.evaluate)"
        )


def binarization_of(model: LatentVariableModel) -> str:
    """How the model's training data was binarized (``none``, ``static`` or ``dynamic``)."""
    return str(model.metadata.get("binarize", "none"))


def model_data(
    model: LatentVariableModel, data: str | None, data_dir: str | None, seed: int, split: str = "test",
    examples: ExampleSet | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, str, str]:
    """Evaluation data as one tensor on the model's device, binarized like the model's training data (``examples``:
    the set :func:`examples_for` already read, else read here).

    Returns
    -------
    tuple
        (x (N, *shape), labels (N,) or ``None``, source, a description of the binarization for reports).
    """
    examples = examples if examples is not None else examples_for(model, data, data_dir, split)
    x = examples.tensor().to(model.device)
    y = None if examples.labels is None else torch.as_tensor(examples.labels, dtype=torch.long, device=x.device)
    mode = binarization_of(model)
    how = "no binarization"
    if mode in ("dynamic", "static"):
        generator = torch.Generator(device=x.device).manual_seed(seed)
        x = torch.bernoulli(x, generator=generator)
        how = f"binarized once with seed {seed} (model trained with {mode} binarization)"
    source = data or model.preprocessing.source
    return x, y, source, how


def data_labels(model: LatentVariableModel, examples: ExampleSet, indices: np.ndarray) -> torch.Tensor | None:
    """Labels (B,) of ``examples[indices]`` for encoding with a conditional model; ``None`` if unconditional.

    Raises
    ------
    DataError
        If the model is conditional and the data has no labels.
    """
    if not model.num_classes:
        return None
    if examples.labels is None:
        raise unlabelled(model)
    return torch.as_tensor(examples.labels[np.asarray(indices, dtype=np.int64)], dtype=torch.long)


def unlabelled(model: LatentVariableModel) -> DataError:
    """The error for data without labels given to a conditional model."""
    return DataError(
        f"this model is conditional on a label in 0..{model.num_classes - 1}, but the data has no labels; "
        "pass labelled data (--data) like the data it was trained on (from Python, with a tensor: labels=/y=)"
    )


def decode_labels(model: LatentVariableModel, label: Labels | None, n: int) -> torch.Tensor | None:
    """Labels (n,) to decode ``n`` latents with: one class for all (int) or one per latent; checked early.

    ``None`` stays ``None`` (an unconditional model, or a caller that picks a default).

    Raises
    ------
    ConfigError
        If a label is given to an unconditional model.
    DataError
        If a label lies outside the trained classes 0..K-1 or the count does not match ``n``.
    """
    if label is None:
        return None
    if model.conditioning is None:
        raise ConfigError(
            f"label={label!r} was given, but this model is not conditional; drop the label (--label), or "
            "train a conditional model with model.num_classes=K"
        )
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        y = torch.full((n,), int(label), dtype=torch.long)
    else:
        values = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label)
        if values.dtype.kind not in "iu":  # 2.7 or [0.5, 1.9] are not classes: never truncated
            raise DataError(f"labels must be whole class numbers in 0..{model.num_classes - 1}, got {label!r}")
        y = torch.as_tensor(values, dtype=torch.long).reshape(-1)
    return model.conditioning.check(y, n).to(model.device)  # type: ignore[no-any-return]


@torch.no_grad()
def posterior_means(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of q(z|x) (of q(z|x, y) for a conditional model) for a batch, after checking it fits. (B, L)."""
    model.eval()
    x = x.to(model.device)
    model.check_input(x)
    return model.encode(x, None if y is None else y.to(model.device)).mean


def check_index(index: int, size: int, name: str) -> int:
    """``index`` if ``0 <= index < size``, else ConfigError naming the argument and the valid range."""
    if not 0 <= index < size:
        raise ConfigError(f"{name}={index} is out of range for {size} examples; choose 0..{size - 1}")
    return index


def as_model_dtype(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """Examples ``x`` in the model's floating type (float64 data for a float32 model, 0/1 integers or booleans for a
    Bernoulli model), on its device; token ids of a text model stay integers."""
    if model.modality() == "text":
        return x.to(model.device)
    dtype = next(model.parameters()).dtype
    return x.to(model.device, dtype)


def check_samples_fit(model: LatentVariableModel, n: int, fix: str) -> None:
    """ConfigError (one line) when ``n`` samples of ``model`` (their latents and decoded means, twice for the copies
    on the way out) would not fit in memory; ``fix`` says what to ask for instead."""
    check_fits(2.0 * n * (model.num_dims + model.latent_dim) * 4, f"{n:,} samples of {model.num_dims} values", fix)


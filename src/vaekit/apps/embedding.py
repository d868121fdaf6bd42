"""``embed``: the posterior q(z|x) = N(mu, diag sigma^2) of every example, as arrays or a table.

Output formats, chosen by the suffix of ``out``:

- ``.npy``: the means ``(N, L)`` in ``out`` and the log-variances ``(N, L)`` in ``<stem>_logvar.npy``
  beside it (plain arrays, nothing pickled; labels are not written).
- ``.csv`` / ``.parquet``: one row per example, columns ``id`` when the examples have ids (the users of
  interaction data), ``mu_0 .. mu_{L-1}``, ``logvar_0 .. logvar_{L-1}`` and ``label`` when the data has labels
  (``.parquet`` needs pyarrow: ``pip install 'vaekit[tables]'``).

A conditional model is encoded with each example's label from the data, q(z | x, y); its codes then hold what
the label does not (style), not the class.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from vaekit.errors import ConfigError, OutputError
from vaekit.extras import import_optional
from vaekit.files import atomic_write_bytes, check_file_targets, csv_bytes, npy_bytes
from vaekit.models import LatentVariableModel, with_latents
from vaekit.models.inputs import data_labels, examples_for

logger = logging.getLogger(__name__)
FORMATS = (".npy", ".csv", ".parquet")


def _write(
    out: Path, mu: np.ndarray, log_var: np.ndarray, labels: np.ndarray | None, ids: tuple[str, ...] | None = None
) -> None:
    suffix = out.suffix.lower()
    if suffix == ".npy":
        check_file_targets(out, out.with_name(f"{out.stem}_logvar.npy"))  # both or neither
        atomic_write_bytes(out, npy_bytes(mu))
        atomic_write_bytes(out.with_name(f"{out.stem}_logvar.npy"), npy_bytes(log_var))
        return
    columns: dict[str, np.ndarray] = {"id": np.asarray(ids, dtype=object)} if ids else {}
    columns |= {f"mu_{i}": mu[:, i] for i in range(mu.shape[1])}
    columns |= {f"logvar_{i}": log_var[:, i] for i in range(log_var.shape[1])}
    if labels is not None:
        columns["label"] = labels
    if suffix == ".csv":
        atomic_write_bytes(out, csv_bytes(columns))
        return
    pa = import_optional("pyarrow", "tables", "writing .parquet", OutputError)
    parquet = import_optional("pyarrow.parquet", "tables", "writing .parquet", OutputError)
    buffer = io.BytesIO()
    parquet.write_table(pa.table(columns), buffer)
    atomic_write_bytes(out, buffer.getvalue())


@torch.no_grad()
def embed(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    data_dir: str | None = None,
    batch_size: int = 512,
    out: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of every example of ``data``.

    Parameters
    ----------
    model
        A model, or the path of a model or run directory.
    data
        A built-in dataset (its test split) or a path; default the model's training source.
    data_dir
        Folder of the IDX files of ``mnist`` / ``fashion-mnist``.
    batch_size
        Examples encoded at once.
    out
        ``.npy``, ``.csv`` or ``.parquet`` path (see the module docstring for the layouts).

    Returns
    -------
    tuple of np.ndarray
        ``(mu, log_var)``, each float32 ``(N, latent_dim)``.

    Raises
    ------
    OutputError
        For an unsupported suffix, a missing optional dependency or an unwritable path.
    DataError
        If the data does not fit the model (or a conditional model's data has no labels).
    """
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise OutputError(f"cannot write embeddings to {str(out)!r}; use a file ending in {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    model = with_latents(model, "embed into")
    model.eval()
    examples = examples_for(model, data, data_dir)
    mus, log_vars = [], []
    for start in range(0, len(examples), batch_size):
        indices = np.arange(start, min(start + batch_size, len(examples)))
        x = examples.batch(indices).to(model.device)
        model.check_input(x)
        y = data_labels(model, examples, indices)  # (B,) or None
        qz_x = model.encode(x, None if y is None else y.to(model.device))
        mus.append(qz_x.mean.float().cpu())  # (B, L)
        log_vars.append(qz_x.variance.log().float().cpu())  # (B, L)
    mu, log_var = torch.cat(mus).numpy(), torch.cat(log_vars).numpy()
    if out is not None:
        _write(Path(out), mu, log_var, examples.labels, getattr(examples, "ids", None))
        logger.debug("wrote the embeddings of %d examples to %s", len(mu), out)
    return mu, log_var

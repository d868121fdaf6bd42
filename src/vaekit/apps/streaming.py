"""Tables too large for memory, scored chunk by chunk: the read side and the write side of ``vaekit score``.

::

    table.csv / .csv.gz / .parquet ──pyarrow, CHUNK_ROWS rows──> encode (vaekit.data.tables) ──Preprocessing──>
        x (n, D) ──anomaly scores──> scores (n,) ──> scores.csv (header once, then rows, through one temporary file)

A model trained on a table (its preprocessing records the columns) reads a table file this way whatever its size:
memory holds one chunk of rows, its scores, and the scores so far (8 bytes a row, for thresholds and the returned
result). The output ``.csv`` is written as the chunks are scored, into a temporary file beside it that is renamed
into place at the end (nothing half-written is left if the run stops); ``.npy`` output, whose header states the
row count, is written at the end. A threshold from ``contamination`` (a quantile of the scored data's own scores)
is known only at the end, so then the ``.csv`` is written at the end too, also in chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.data import tables
from vaekit.data.tables import is_table, iter_table
from vaekit.files import atomic_open
from vaekit.models import LatentVariableModel
from vaekit.models.inputs import examples_for

Chunk = tuple[torch.Tensor, "torch.Tensor | None"]  # x (n, *shape) on the model's device, labels (n,) or None
WRITE_ROWS = 1 << 20  # rows formatted at once when writing a whole result


def table_chunks(model: LatentVariableModel, data: str | None, rows: int | None = None) -> Iterator[Chunk] | None:
    """The chunks of a table file for a model trained on a table, or ``None`` (other data: read it whole).

    Parameters
    ----------
    model
        A model whose preprocessing records table columns.
    data
        The path given to the verb (``None``: the model's own source).
    rows
        Rows per chunk (default :data:`vaekit.data.tables.CHUNK_ROWS`).
    """
    prep = model.preprocessing
    source = data or (prep.source if prep is not None else None)
    if prep is None or prep.columns is None or not source or not is_table(Path(source)):
        return None
    if not Path(source).expanduser().is_file():
        return None  # the in-memory path gives the usual "not found" error

    def chunks() -> Iterator[Chunk]:
        for raw, labels in iter_table(Path(source).expanduser(), prep.columns, prep.label_column, prep.categories,
                                      rows or tables.CHUNK_ROWS, prep.label_classes):
            x = torch.from_numpy(prep.apply(raw)).to(model.device)
            y = None if labels is None else torch.from_numpy(labels).to(model.device)
            yield x, y

    return chunks()


def set_chunks(
    model: LatentVariableModel, data: str | None, data_dir: str | None, rows: int = 1024
) -> Iterator[Chunk] | None:
    """The examples of ``data`` (the model's test split when ``None``) in chunks of ``rows`` when they are read a
    batch at a time (``read_by_batch``: sparse interaction rows, never densified whole); else ``None``."""
    examples = examples_for(model, data, data_dir)
    if not getattr(examples, "read_by_batch", False):
        return None

    def chunks() -> Iterator[Chunk]:
        for begin in range(0, len(examples), rows):
            yield examples.batch(np.arange(begin, min(begin + rows, len(examples)))).to(model.device), None

    return chunks()


def format_rows(columns: dict[str, np.ndarray]) -> str:
    """CSV lines (no header) of equally long 1-D columns: integers as integers, floats exactly (``repr``)."""
    texts = [list(map(repr, a.tolist())) if a.dtype.kind == "f" else list(map(str, a.tolist()))
             for a in columns.values()]
    return "".join(line + "\n" for line in map(",".join, zip(*texts, strict=True)))


class CsvScoreWriter:
    """Score rows appended to one ``.csv`` through a temporary file (:func:`vaekit.files.atomic_open`).

    Columns ``index``, ``label`` (when the data has labels), ``score`` and ``decision`` (with a threshold), as
    :class:`vaekit.apps.scoring.ScoreResult` writes them.
    """

    def __init__(self, stack: contextlib.ExitStack, path: Path) -> None:
        self._stack, self._path = stack, path
        self._handle: BinaryIO | None = None
        self.rows = 0

    def write(self, scores: np.ndarray, labels: np.ndarray | None, decisions: np.ndarray | None) -> None:
        """Append the rows of one chunk (the header before the first)."""
        columns: dict[str, np.ndarray] = {"index": np.arange(self.rows, self.rows + len(scores), dtype=np.int64)}
        if labels is not None:
            columns["label"] = labels.astype(np.int64)
        columns["score"] = scores.astype(np.float64)
        if decisions is not None:
            columns["decision"] = decisions.astype(np.int8)
        if self._handle is None:
            self._handle = self._stack.enter_context(atomic_open(self._path))
            self._handle.write((",".join(columns) + "\n").encode())
        self._handle.write(format_rows(columns).encode())
        self.rows += len(scores)


def stream_scores(
    chunks: Iterator[Chunk], score_chunk: Callable[[torch.Tensor, torch.Tensor | None], np.ndarray],
    out: Path | None, threshold: float | None, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Score every chunk; with ``out`` (a ``.csv``) write each chunk's rows as soon as they are scored.

    Parameters
    ----------
    chunks
        From :func:`table_chunks`.
    score_chunk
        ``(x, y) -> scores (n,)`` float64.
    out
        ``.csv`` to write as the chunks come (``None``: write nothing here).
    threshold
        Decisions ``score > threshold`` written beside the scores, or ``None``.
    progress
        Show the rows scored so far.

    Returns
    -------
    tuple
        ``(scores (N,) float64, labels (N,) int64 or None)``.
    """
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with contextlib.ExitStack() as stack, tqdm(desc="score (table, chunks)", unit="row", disable=not progress,
                                               leave=False) as bar:
        writer = CsvScoreWriter(stack, out) if out is not None else None
        for x, y in chunks:
            s = score_chunk(x, y)
            lab = None if y is None else y.cpu().numpy().astype(np.int64)
            scores.append(s)
            if lab is not None:
                labels.append(lab)
            if writer is not None:
                writer.write(s, lab, None if threshold is None else (s > threshold).astype(np.int8))
            bar.update(len(s))
        if writer is not None and writer.rows == 0:
            writer.write(np.zeros(0), None, None)  # an empty table: the header alone
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    return all_scores, (np.concatenate(labels) if labels else None)


def write_csv_in_chunks(path: Path, scores: np.ndarray, labels: np.ndarray | None,
                        decisions: np.ndarray | None) -> None:
    """Write a whole result as ``.csv``, :data:`WRITE_ROWS` rows formatted at a time (bounded memory)."""
    with contextlib.ExitStack() as stack:
        writer = CsvScoreWriter(stack, path)
        for start in range(0, max(1, len(scores)), WRITE_ROWS):
            end = start + WRITE_ROWS
            writer.write(scores[start:end], None if labels is None else labels[start:end],
                         None if decisions is None else decisions[start:end])

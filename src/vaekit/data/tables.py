"""Tables (``.csv``, ``.csv.gz``, ``.parquet``): numeric columns as numbers, string columns one-hot encoded; read
whole (training, small data) or in chunks (scoring tables larger than memory).

::

    table ──columns──> numeric column      ──float32──────────────────────────┐
                       string column c     ──one-hot over categories[c]───────┼──> raw (N, D) ──Preprocessing──>
                       (unseen value: all zeros; missing: the category <NA>)  ┘      (scaled, see data.scaling)

- **Which columns.** Training takes every column but ``data.label_column``; a column whose type is not numeric
  (text, pandas ``category``) is categorical. Its categories are its distinct values in the file, sorted (missing
  values are the category ``<NA>``), at most :data:`MAX_CATEGORIES`. The model stores the column names and the
  categories (JSON, in ``metadata.json``: :class:`vaekit.data.Preprocessing` ``columns`` and ``categories``), so
  scoring encodes exactly as training did.
- **Model input.** One value per numeric column, then, in column order, one indicator per category; everything is
  then scaled as real data (``data.scaling``) and modelled by the Gaussian likelihood with a learned scale per
  feature: the indicators of a string column are treated as real values, not as a categorical distribution, so a
  score is the density of this encoding (nats per example), comparable between rows of one model only.
- **Booleans.** A column of ``True`` / ``False`` (pandas' and pyarrow's spellings: ``True``, ``TRUE``, ``true``)
  is numeric, 1 and 0, both when training and when a CSV is streamed for scoring.
- **Checks.** Two columns of one name are an error (pandas would rename the second ``name.1``, which a streamed
  read could not match). A missing (NaN) or infinite number in a numeric column is an error naming the column
  (impute or drop those rows first); at scoring time, so is a numeric column that holds text, a column the model
  needs that the table lacks, and a column the model was not trained on (besides its label column). An unseen
  category encodes as all zeros (and is counted in the log): unusual for the model, so it raises the row's anomaly
  score.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data.arrays import FLOAT32_MAX, RawData, as_labels, fit_label_classes
from vaekit.errors import DataError
from vaekit.extras import import_optional, install_hint

logger = logging.getLogger(__name__)

MAX_CATEGORIES = 1000  # distinct values a string column may have (more: an identifier, not a category)
MISSING = "<NA>"  # the category of a missing value in a string column
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
CHUNK_ROWS = 65_536  # rows per chunk of a streamed table
PANDAS_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # what pandas.read_csv reads as missing
Categories = tuple[tuple[str, tuple[str, ...]], ...]


def is_table(path: Path) -> bool:
    """Whether ``path`` names a table file vaekit reads (by its suffix)."""
    return path.name.lower().endswith(TABLE_SUFFIXES)


def _pandas() -> Any:
    return import_optional("pandas", "tables", "reading tables", DataError)


def _read_frame(path: Path) -> Any:
    pd = _pandas()
    try:
        if path.name.lower().endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError:
        raise DataError(f"reading Parquet files needs the pyarrow package: {install_hint('tables')}") from None
    except Exception as exc:  # pandas raises many parser-specific types
        raise DataError(f"cannot read table {str(path)!r}: {' '.join(str(exc).split())}") from None


def header(path: Path) -> list[str]:
    """The column names of a table file as written (pandas renames a repeated name; this does not)."""
    if path.name.lower().endswith(".parquet"):
        pq = import_optional("pyarrow.parquet", "tables", "reading Parquet files", DataError)
        try:
            return [str(name) for name in pq.read_schema(path).names]
        except Exception as exc:  # pyarrow's error types differ by version
            raise DataError(f"cannot read table {str(path)!r}: {' '.join(str(exc).split())}") from None
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the header of table {str(path)!r}: {' '.join(str(exc).split())}") from None


def check_unique(names: list[str], where: str) -> None:
    """DataError when two columns share a name: which of them a model's column means would be a guess."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{where} has two columns named {name!r} (columns {seen[name] + 1} and {i + 1}); "
                            "give every column its own name")
        seen[name] = i


def feature_names(columns: tuple[str, ...], categories: Categories | None) -> list[str]:
    """Names of the model's features: a numeric column's name, ``column=category`` for each indicator."""
    cats = dict(categories or ())
    names: list[str] = []
    for c in columns:
        names += [f"{c}={v}" for v in cats[c]] if c in cats else [c]
    return names


def fit_categories(table: Any, features: list[str], where: str) -> Categories | None:
    """The sorted distinct values of every non-numeric column of ``features`` (``None``: all numeric)."""
    pd = _pandas()
    found = []
    for c in features:
        if pd.api.types.is_numeric_dtype(table[c]):
            continue
        values = sorted(set(table[c].astype("string").fillna(MISSING).tolist()))
        if len(values) > MAX_CATEGORIES:
            raise DataError(
                f"column {c!r} of {where} holds {len(values):,} distinct strings, more than the {MAX_CATEGORIES} "
                "categories vaekit one-hot encodes (an identifier?); drop it, or encode it as numbers"
            )
        found.append((c, tuple(values)))
    if found:
        logger.info("%s: string columns one-hot encoded: %s", where,
                    ", ".join(f"{c} ({len(v)} categories)" for c, v in found))
    return tuple(found) or None


def encode_frame(table: Any, columns: tuple[str, ...], categories: Categories | None, where: str,
                 first_row: int = 0) -> np.ndarray:
    """The model's raw features of the rows of ``table``: float32 ``(n, D)``; DataError naming a bad column."""
    pd = _pandas()
    cats = dict(categories or ())
    blocks: list[np.ndarray] = []
    unseen = 0
    for c in columns:
        column = table[c]
        if c in cats:
            values = column.astype("string").fillna(MISSING)
            codes = pd.Index(list(cats[c])).get_indexer(values)  # -1: unseen
            unseen += int((codes < 0).sum())
            onehot = np.zeros((len(codes), len(cats[c])), dtype=np.float32)
            onehot[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            blocks.append(onehot)
            continue
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() & column.notna()
            first = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise DataError(
                f"column {c!r} of {where} holds text ({str(column.iloc[first])!r} in row {first_row + first}) where "
                "the model was trained on numbers; fix or drop those rows"
            )
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"column {c!r} of {where} holds {int(bad.sum())} missing (NaN) or infinite values (first in row "
                f"{first_row + first}); impute them (e.g. with the column's median) or drop those rows"
            )
        huge = np.abs(values) > FLOAT32_MAX
        if huge.any():
            first = int(np.flatnonzero(huge)[0])
            raise DataError(
                f"column {c!r} of {where} holds {int(huge.sum())} values beyond float32's range (+-3.4e38; first "
                f"{values[first]:g} in row {first_row + first}), which the model computes in; rescale the column "
                "(e.g. its logarithm) or drop those rows"
            )
        blocks.append(values.astype(np.float32)[:, None])
    if unseen:
        logger.info("%s: %d values of string columns were not seen in training (encoded as all zeros)", where, unseen)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(table), 0), np.float32)


def _check_columns(names: list[str], columns: tuple[str, ...], label_column: str | None, where: str) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{where} lacks columns {missing} that the model was trained on; give a table with them")
    extra = [c for c in names if c not in columns and c != label_column]
    if extra:
        shown = ", ".join(map(repr, extra[:5])) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise DataError(
            f"{where} has {len(extra)} columns the model was not trained on ({shown}); drop them (the model reads "
            f"{len(columns)}: {', '.join(columns[:8])}{' ...' if len(columns) > 8 else ''})"
        )


def read_table(path: Path, columns: tuple[str, ...] | None = None, label_column: str | None = None,
               categories: Categories | None = None, label_classes: tuple[str, ...] | None = None) -> RawData:
    """A whole table as :class:`RawData` (see the module docstring).

    Parameters
    ----------
    path
        ``.csv``, ``.csv.gz`` or ``.parquet`` file.
    columns
        ``None`` for training (every column but the label column; categories fitted); a model's feature columns
        when reading data for it (then ``categories`` are the model's, and the label column may be absent).
    label_column
        The column of labels, or ``None``.
    categories
        The model's categories (with ``columns``).
    label_classes
        The model's label classes (with ``columns``): text labels are numbered by them, as in training
        (:func:`vaekit.data.arrays.as_labels`); for training they are fitted to the label column.

    Raises
    ------
    DataError
        An unreadable file, a missing label column (training), missing, extra or text-holding columns, NaN or
        infinite numbers, too many categories.
    """
    where = repr(str(path))
    check_unique(header(path), where)
    table = _read_frame(path)
    names = [str(c) for c in table.columns]
    table.columns = names
    fitting = columns is None
    if columns is None:
        if label_column is not None and label_column not in names:
            raise DataError(f"label column {label_column!r} not in {where}; columns: {', '.join(names)}")
        features = [c for c in names if c != label_column]
        if not features:
            raise DataError(f"{where} has no feature columns; add numeric columns besides the label column")
        categories = fit_categories(table, features, where)
        columns = tuple(features)
    else:
        _check_columns(names, columns, label_column, where)
    x = encode_frame(table, columns, categories, where)  # (N, D)
    labels = None
    if label_column is not None and label_column in names:
        values = table[label_column].to_numpy()
        if fitting:
            label_classes = fit_label_classes(values)
        labels = as_labels(values, len(x), where, label_classes)
    return RawData(x, labels, (x.shape[1],), "real", 1.0, str(path), columns, label_column, categories=categories,
                   label_classes=label_classes)


def iter_table(path: Path, columns: tuple[str, ...], label_column: str | None, categories: Categories | None,
               rows: int = CHUNK_ROWS, label_classes: tuple[str, ...] | None = None,
               ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """A model's table read ``rows`` rows at a time, never whole (pyarrow's streaming readers).

    Yields
    ------
    tuple
        ``(raw (n, D) float32, labels (n,) int64 or None)`` per chunk, as :func:`read_table` encodes them.

    Raises
    ------
    DataError
        As :func:`read_table`, for the chunk where the problem is.
    """
    where = repr(str(path))
    pa = import_optional("pyarrow", "tables", "streaming tables", DataError)
    batches, names = _open_batches(path, columns, label_column, categories, rows)
    check_unique(names, where)
    _check_columns(names, columns, label_column, where)
    done = 0
    try:
        for piece in _rechunk(pa, batches, rows):
            table = piece.to_pandas()
            x = encode_frame(table, columns, categories, where, done)
            labels = None
            if label_column is not None and label_column in names:
                labels = as_labels(table[label_column].to_numpy(), len(x), where, label_classes)
            done += len(x)
            yield x, labels
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(_arrow_message(exc, names, where)) from None


def _rechunk(pa: Any, batches: Iterator[Any], rows: int) -> Iterator[Any]:
    """pyarrow tables of exactly ``rows`` rows (the last one fewer) from record batches of any size."""
    buffer = None
    for batch in batches:
        table = pa.Table.from_batches([batch])
        buffer = table if buffer is None else pa.concat_tables([buffer, table])
        while buffer.num_rows >= rows:
            yield buffer.slice(0, rows)
            buffer = buffer.slice(rows)
    if buffer is not None and buffer.num_rows:
        yield buffer


def _open_batches(path: Path, columns: tuple[str, ...], label_column: str | None, categories: Categories | None,
                  rows: int) -> tuple[Iterator[Any], list[str]]:
    """pyarrow record batches of the needed columns (numbers as float64, categories as strings) and all names."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    where = repr(str(path))
    cats = dict(categories or ())
    wanted = [c for c in (*columns, label_column) if c is not None]
    names: list[str] = []
    try:
        if path.name.lower().endswith(".parquet"):
            parquet = pq.ParquetFile(path)
            names = list(parquet.schema_arrow.names)
            present = [c for c in wanted if c in names]
            return parquet.iter_batches(batch_size=rows, columns=present), names
        inferred = pacsv.open_csv(path).schema  # from the first block: True/False columns as booleans, as pandas
        names = list(inferred.names)
        if len(set(names)) < len(names):
            return iter(()), names  # iter_table refuses the repeated names
        types = {c: (pa.string() if c in cats else pa.bool_() if pa.types.is_boolean(inferred.field(c).type)
                     else pa.float64()) for c in columns if c in names}
        present = [c for c in wanted if c in names]
        block = max(1 << 20, min(64 << 20, rows * 16 * max(1, len(names))))
        convert = pacsv.ConvertOptions(column_types=types, include_columns=present, null_values=PANDAS_NULLS,
                                       strings_can_be_null=True)  # missing strings: <NA>, as pandas reads them
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=block), convert_options=convert)
        return iter(reader), names
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(_arrow_message(exc, names, where)) from None


def _arrow_message(exc: Exception, names: list[str], where: str) -> str:
    """One line for what pyarrow raised: the column named where pyarrow numbers it (``column #3``)."""
    text = " ".join(str(exc).split())
    match = re.search(r"column #(\d+)", text)
    if match and int(match.group(1)) < len(names):
        column = names[int(match.group(1))]
        if "conversion error" in text:
            return (f"column {column!r} of {where} holds a value that is not a number where the model was trained "
                    f"on numbers ({text}); fix or drop those rows")
        return f"cannot read column {column!r} of {where}: {text}"
    return f"cannot read table {where}: {text}"

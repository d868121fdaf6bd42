"""Interaction data for recommenders: who interacted with what, read into sparse user x item matrices, and the
strong-generalization protocol of Liang et al. 2018 ("Variational Autoencoders for Collaborative Filtering",
arXiv:1802.05814).

::

    file (CSV / TSV / Parquet / GroupLens u.data)  user, item[, rating[, timestamp]] rows
      │ rating >= data.min_rating is a positive (every row without ratings); duplicates collapse into one
      ▼
    users x items, 0/1, scipy.sparse CSR ── users with < data.min_user_items positives left out
      │ users shuffled (data.seed): data.heldout_users for validation, as many for test, the rest train
      │ items: those of the training users (the model's item map, saved with it as JSON)
      ▼
    train: every positive of the training users          (B, items) rows, densified a batch at a time
    val / test: 80% of each user's items folded in (the input), 20% held out (ranked among the items not
    folded in: Recall@20, Recall@50, NDCG@100, :mod:`vaekit.data.ranking`)

Held-out users are never trained on. Which items a user holds out is a pure function of the seed, the user's place
in its split and the item (:func:`vaekit.data.preprocessing.uniform_hash`), and the validation and test users are
recorded with the model, so ``vaekit evaluate RUN`` rebuilds exactly the test split the run was measured on.

Files: ``.parquet``, and text files whose fields are separated by tabs or commas (``.csv``, ``.tsv``, ``.data``).
A header row is recognised by its names (``user``/``user_id``/``userId``/..., ``item``/``item_id``/``movieId``/...,
``rating``, ``timestamp``); a file without one (GroupLens ``u.data``) is read as user, item, rating, timestamp.
Ids are kept as the strings the file holds (``"001"`` stays ``"001"``); extra columns (timestamps) are ignored.
The source ``interactions`` (priority 50, before ``file``) takes ``.data`` and ``.tsv`` files, and ``.csv`` /
``.parquet`` files whose header names a user and an item column; ``data.format=interactions`` makes it read any
file (with ``data.user_column`` / ``data.item_column`` for other names). Reading needs pyarrow
(``pip install 'vaekit[tables]'``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse

from vaekit.config import DataConfig
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import PREPROCESSINGS, uniform_hash
from vaekit.data.ranking import NDCG_KS, mean_metrics, user_metrics
from vaekit.data.sources import SOURCES
from vaekit.errors import DataError
from vaekit.extras import import_optional

logger = logging.getLogger(__name__)

KIND = "interactions"
HELDOUT_FRACTION = 0.2  # of each validation / test user's items (the paper's 80 / 20)
TEXT_SUFFIXES = (".csv", ".tsv", ".data")
SUFFIXES = (*TEXT_SUFFIXES, ".parquet")
USER_NAMES = ("user", "user_id", "userid", "uid", "customer", "customer_id", "customerid", "visitor_id")
ITEM_NAMES = ("item", "item_id", "itemid", "iid", "movie", "movie_id", "movieid", "product", "product_id",
              "productid", "song_id", "track_id", "book_id", "isbn")
RATING_NAMES = ("rating", "ratings", "stars", "score", "preference")
TIMESTAMP_NAMES = ("timestamp", "time", "date", "datetime", "ts")
SPLITS = {"val": 1, "test": 2}  # hash streams of the fold-in split of each held-out split


# -- the record saved with the model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InteractionRecord:
    """How a recommender's data was read and split; saved with the model (JSON in ``metadata.json``).

    Parameters
    ----------
    items
        The item id of each of the model's D values, in order: the item map.
    source
        The file it was trained on.
    user_column, item_column, rating_column
        The columns read (``f0``, ``f1``, ``f2`` for a file without a header); ``rating_column`` ``None`` when
        every row was a positive.
    min_rating
        Ratings at least this were positives; ``None``: every row.
    min_user_items
        Users with fewer positives were left out.
    seed
        Seed of the user split and of the fold-in / held-out split.
    heldout_fraction
        Share of each validation and test user's items held out (0.2).
    val_users, test_users
        The user ids of the validation and the test split.
    train_users, train_interactions
        Size of the training split: users and positives.
    """

    items: tuple[str, ...]
    source: str = ""
    user_column: str = ""
    item_column: str = ""
    rating_column: str | None = None
    min_rating: float | None = 4.0
    min_user_items: int = 5
    seed: int = 0
    heldout_fraction: float = HELDOUT_FRACTION
    val_users: tuple[str, ...] = ()
    test_users: tuple[str, ...] = ()
    train_users: int = 0
    train_interactions: int = 0
    kind: str = KIND
    # What code written for array data reads of a model's preprocessing: no scaling, no standardization.
    scale: float = field(default=1.0, init=False)
    mean: None = field(default=None, init=False)
    std: None = field(default=None, init=False)
    data_dir: None = field(default=None, init=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example shape: ``(D,)``, one value per item."""
        return (len(self.items),)

    def item_index(self) -> dict[str, int]:
        """Item id -> column (built once)."""
        return self._item_index

    @functools.cached_property
    def _item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}

    def apply(self, raw: Any) -> np.ndarray:
        """Rows of interaction counts (a sparse matrix or an array, (N, D)) as float32 (N, D)."""
        x = raw.toarray() if sparse.issparse(raw) else np.asarray(raw)
        return np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), len(self.items))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        skipped = {"scale", "mean", "std", "data_dir"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k not in skipped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InteractionRecord:
        """Rebuild from :meth:`to_dict` output; an unknown key means a newer vaekit wrote it."""
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(d) - names)
        if unknown or "items" not in d:
            what = f"unknown key {unknown[0]!r}" if unknown else "no item map"
            raise DataError(f"the model's interaction record has {what}; it was saved by a newer vaekit, upgrade it")
        tuples = ("items", "val_users", "test_users")
        kwargs: dict[str, Any] = {k: tuple(str(i) for i in v) if k in tuples else v for k, v in d.items()}
        return cls(**kwargs)


PREPROCESSINGS.register(KIND)(InteractionRecord)  # type: ignore[arg-type]  # a record of its own kind


def record_of(model: Any) -> InteractionRecord:
    """The interaction record of a recommender model.

    Raises
    ------
    DataError
        The model was not trained on interaction data (an image or table model, say).
    """
    record = getattr(model, "preprocessing", None)
    if isinstance(record, InteractionRecord):
        return record
    trained_on = getattr(record, "source", "") or "data it does not record"
    raise DataError(
        f"this model was not trained on interaction data (it models examples of shape {tuple(model.data_shape)} "
        f"from {trained_on}), so it has no items to recommend; train a recommender, e.g. "
        "vaekit train --preset ml-100k --data ratings.csv"
    )


# -- reading files ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Columns:
    """Which columns hold users, items and ratings (``None``: find them by name)."""

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    ratings: bool = True  # whether ratings are wanted at all


@dataclass
class Interactions:
    """The rows of an interaction file: user and item codes (N,) into the sorted ids, ratings (N,) or None."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None
    user_ids: np.ndarray  # (U,) str, sorted
    item_ids: np.ndarray  # (I,) str, sorted
    columns: tuple[str, str, str | None]  # user, item, rating column names as read


def _pyarrow() -> tuple[Any, Any, Any, Any]:
    """pyarrow and its csv, parquet and compute modules (extra ``tables``)."""
    return tuple(  # type: ignore[return-value]
        import_optional(name, "tables", "reading interaction files", DataError)
        for name in ("pyarrow", "pyarrow.csv", "pyarrow.parquet", "pyarrow.compute")
    )


def _first_lines(path: Path) -> tuple[str, str]:
    """The first two lines of a text file (the second empty if there is none), a byte-order mark dropped."""
    with path.open("rb") as handle:
        line, second = handle.readline(1 << 16), handle.readline(1 << 16)
    if not line.strip():
        raise DataError(f"{str(path)!r} is empty; give a file of user, item (and rating) rows, one interaction a line")
    first = line.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    return first, second.decode("utf-8", errors="replace").rstrip("\r\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _layout(path: Path, columns: Columns) -> tuple[bool, str, list[str], list[str]]:
    """(header?, delimiter, column names, the names as the file spells them) of a text file: names ``f0, f1, ...``
    without a header. Names are compared without the spaces around them."""
    line, second = _first_lines(path)
    delimiter = "\t" if "\t" in line else ","
    spelled = [name.strip('"').strip("'") for name in line.split(delimiter)]
    names = [name.strip().strip('"').strip("'") for name in line.split(delimiter)]
    known = {n.lower() for n in (*USER_NAMES, *ITEM_NAMES, *RATING_NAMES, *TIMESTAMP_NAMES)}
    wanted = {c for c in (columns.user, columns.item, columns.rating) if c}
    header = any(n.lower() in known or n in wanted for n in names)
    below = [field.strip() for field in second.split(delimiter)]
    named = len(below) == len(names) and any(not _is_number(n) and _is_number(b)
                                             for n, b in zip(names, below, strict=True))
    if not header and wanted:
        raise DataError(
            f"{str(path)!r} has no header row naming columns (its first line is {line[:80]!r}), so the columns "
            f"{sorted(wanted)} cannot be found; add a header, or leave data.user_column / data.item_column / "
            "data.rating_column unset to read user, item, rating by position"
        )
    if not header and named:  # a first line of words over a line of numbers is a header of names vaekit does not know
        raise DataError(
            f"cannot tell which columns of {str(path)!r} hold users and items (columns: {', '.join(names)}); name "
            "them with data.user_column=NAME data.item_column=NAME (and data.rating_column=NAME)"
        )
    if not header:
        return False, delimiter, [f"f{i}" for i in range(len(names))], [f"f{i}" for i in range(len(names))]
    return header, delimiter, names, spelled


def _find(names: Sequence[str], given: str | None, candidates: Sequence[str], what: str, path: Path) -> str | None:
    if given is not None:
        if given not in names:
            raise DataError(f"{str(path)!r} has no {what} column {given!r}; its columns: {', '.join(names)}")
        return given
    lowered = {n.lower(): n for n in names}
    return next((lowered[c] for c in candidates if c in lowered), None)


def resolve_columns(names: Sequence[str], header: bool, columns: Columns, path: Path) -> tuple[str, str, str | None]:
    """The user, item and rating column of a file with these column names (positional without a header)."""
    if not header:
        if len(names) < 2:
            raise DataError(f"{str(path)!r} has one field a line; give user and item (and rating) fields, "
                            "separated by tabs or commas")
        return names[0], names[1], names[2] if columns.ratings and len(names) > 2 else None
    user = _find(names, columns.user, USER_NAMES, "user", path)
    item = _find(names, columns.item, ITEM_NAMES, "item", path)
    if user is None or item is None:
        raise DataError(
            f"cannot tell which columns of {str(path)!r} hold users and items (columns: {', '.join(names)}); "
            "name them with data.user_column=NAME data.item_column=NAME"
        )
    rating = _find(names, columns.rating, RATING_NAMES, "rating", path) if columns.ratings else None
    return user, item, rating


def _read_table(path: Path, columns: Columns) -> tuple[Any, tuple[str, str, str | None]]:
    """The pyarrow table of the user, item (and rating) columns of ``path``, ids as strings."""
    pa, pacsv, parquet, pc = _pyarrow()
    if path.suffix.lower() == ".parquet":
        names = list(parquet.read_schema(path).names)
        chosen = resolve_columns(names, True, columns, path)
        table = parquet.read_table(path, columns=[c for c in chosen if c])
        cast = {chosen[0]: pa.string(), chosen[1]: pa.string(), chosen[2]: pa.float64()}
        return pa.table({c: pc.cast(table.column(c), cast[c]) for c in chosen if c}), chosen
    header, delimiter, names, spelled = _layout(path, columns)
    chosen = resolve_columns(names, header, columns, path)
    as_read = dict(zip(names, spelled, strict=True))  # pyarrow keeps the spaces around a header's names
    types = {as_read[chosen[0]]: pa.string(), as_read[chosen[1]]: pa.string(),
             **({as_read[chosen[2]]: pa.float64()} if chosen[2] else {})}
    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(autogenerate_column_names=not header),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=[as_read[c] for c in chosen if c],
                                             strings_can_be_null=True),  # an empty id is a missing one
    )
    table = table.rename_columns([c for c in chosen if c])
    for index in (0, 1):  # "user, item" files: the ids without the spaces around them
        table = table.set_column(index, chosen[index], pc.utf8_trim_whitespace(table.column(index)))
    return table, chosen


def _natural(ids: list[str]) -> list[int]:
    """The order that sorts ids numerically where they are integers, then the others as strings."""
    return sorted(range(len(ids)), key=lambda i: (0, int(ids[i]), "") if ids[i].isascii() and ids[i].isdigit()
                  else (1, 0, ids[i]))  # "²" is a digit to str.isdigit, not to int()


def _codes(column: Any, what: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Codes (N,) int64 of a string column into its sorted distinct values (U,)."""
    pc = _pyarrow()[3]
    if column.null_count:
        raise DataError(f"{column.null_count} rows of {str(path)!r} have no {what} id; fill or drop them")
    encoded = pc.dictionary_encode(column.combine_chunks())
    ids = encoded.dictionary.to_pylist()
    order = _natural(ids)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], np.array([ids[i] for i in order], dtype=object)


def read_interactions(path: Path, columns: Columns) -> Interactions:
    """Read the interaction rows of ``path``.

    Raises
    ------
    DataError
        An unreadable or empty file, columns that cannot be found, ids missing, ratings that are not numbers, are
        NaN or negative.
    """
    pa = _pyarrow()[0]
    try:
        table, chosen = _read_table(path, columns)
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split())[:200]
        headerless = path.suffix.lower() in TEXT_SUFFIXES and not _layout(path, columns)[0]
        hint = " (read without a header row, as user, item, rating, ...: add a header naming the columns)"
        hint = hint if headerless else ""
        raise DataError(f"cannot read interactions from {str(path)!r}: {reason}{hint}") from None
    if table.num_rows == 0:
        raise DataError(f"{str(path)!r} holds no interactions (no rows after the header); give user, item rows")
    users, user_ids = _codes(table.column(chosen[0]), "user", path)
    items, item_ids = _codes(table.column(chosen[1]), "item", path)
    ratings = None
    if chosen[2] is not None:
        ratings = table.column(chosen[2]).to_numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(ratings) | (ratings < 0))
        if len(bad):
            first = float(ratings[bad[0]])
            what = "missing or NaN" if np.isnan(first) else "negative or infinite"
            raise DataError(
                f"{len(bad)} ratings in column {chosen[2]!r} of {str(path)!r} are {what} (the first in data row "
                f"{bad[0] + 1}: {first:g}); fix them, or set data.min_rating=null to count every row as a positive"
            )
    return Interactions(users, items, ratings, user_ids, item_ids, chosen)


def positives(rows: Interactions, min_rating: float | None, source: str) -> sparse.csr_matrix:
    """The 0/1 users x items CSR matrix of the positive rows, duplicates collapsed (logged)."""
    keep = np.ones(len(rows.users), bool) if rows.ratings is None or min_rating is None else rows.ratings >= min_rating
    n = int(keep.sum())
    matrix = sparse.csr_matrix(
        (np.ones(n, np.float32), (rows.users[keep], rows.items[keep])), shape=(len(rows.user_ids), len(rows.item_ids))
    )  # duplicates are summed here
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    rule = "every row" if rows.ratings is None or min_rating is None else f"rating >= {min_rating:g}"
    logger.info("%s: %d rows, %d positive (%s), %d duplicate (user, item) positives collapsed", source,
                len(rows.users), n, rule, n - matrix.nnz)
    return matrix


def map_items(
    matrix: sparse.csr_matrix, item_ids: np.ndarray, record: InteractionRecord
) -> tuple[sparse.csr_matrix, int]:
    """``matrix`` (U, I) with its columns put in the model's item order (U, D); items the model does not know are
    dropped. Returns the matrix and the number of positives dropped."""
    index = record.item_index()
    columns = np.array([index.get(str(item), -1) for item in item_ids], dtype=np.int64)
    coo = matrix.tocoo()
    known = columns[coo.col] >= 0
    mapped = sparse.csr_matrix((coo.data[known], (coo.row[known], columns[coo.col[known]])),
                               shape=(matrix.shape[0], len(record.items)), dtype=np.float32)
    return mapped, int((~known).sum())


# -- the protocol: user splits and fold-in / held-out items ------------------------------------------------------
def fold_in_split(
    matrix: sparse.csr_matrix, seed: int, stream: int, fraction: float = HELDOUT_FRACTION
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Split each row's items into the folded-in part and ``floor(fraction * n)`` held-out items.

    Which items are held out depends only on (``seed``, ``stream``, the row, the item), never on the order or the
    number of rows read, so the split is rebuilt exactly from the recorded users.

    Returns
    -------
    tuple of scipy.sparse.csr_matrix
        (fold-in, held out), each of ``matrix``'s shape; together they are ``matrix``.
    """
    matrix = matrix.tocsr()
    matrix.sort_indices()
    counts = np.diff(matrix.indptr)  # (U,) items per user
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.uint64), counts)  # (nnz,)
    keys = uniform_hash(seed * 8 + stream, rows * np.uint64(matrix.shape[1]) + matrix.indices.astype(np.uint64), 1)
    order = np.lexsort((keys[:, 0], rows))  # by row, then by key
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order].astype(np.int64)]  # place within the row
    held = rank < np.floor(fraction * counts).astype(np.int64)[rows.astype(np.int64)]
    parts = []
    for mask in (~held, held):
        part = matrix.copy()
        part.data = np.where(mask, part.data, 0).astype(np.float32)
        part.eliminate_zeros()
        parts.append(part)
    return parts[0], parts[1]


def _heldout_users(n: int, cfg: DataConfig) -> int:
    count = cfg.heldout_users or round(n * cfg.val_fraction)
    if count < 1:
        raise DataError(
            f"no users would be held out for validation ({n} users, data.heldout_users={cfg.heldout_users}, "
            f"data.val_fraction={cfg.val_fraction:g}); set data.heldout_users to 1 or more"
        )
    if n - 2 * count < 1:
        raise DataError(
            f"{n} users cannot give {count} validation and {count} test users and still leave some to train on; "
            "lower data.heldout_users (or data.val_fraction), or add data"
        )
    return count


def bundle_from_matrix(
    matrix: sparse.csr_matrix, user_ids: np.ndarray, item_ids: np.ndarray, cfg: DataConfig,
    source: str, columns: tuple[str, str, str | None] = ("user", "item", None),
) -> DataBundle:
    """The protocol's splits of a 0/1 users x items matrix (see the module docstring).

    Parameters
    ----------
    matrix
        (U, I) positives, CSR.
    user_ids, item_ids
        (U,) and (I,) ids (strings).
    cfg
        ``min_user_items``, ``heldout_users`` (or ``val_fraction``), ``seed``, ``min_rating`` (recorded).
    source
        What it was read from, for the record.

    Raises
    ------
    DataError
        Too few users for the splits.
    """
    active = np.flatnonzero(np.diff(matrix.indptr) >= cfg.min_user_items)
    if len(active) == 0:
        raise DataError(
            f"no user of {source!r} has {cfg.min_user_items} or more positives (of {len(user_ids)} users); lower "
            "data.min_user_items, or check data.min_rating and the rating column"
        )
    if len(active) < len(user_ids):
        logger.info("%s: %d of %d users have fewer than %d positives and are left out (data.min_user_items)",
                    source, len(user_ids) - len(active), len(user_ids), cfg.min_user_items)
    matrix, user_ids = matrix[active], np.asarray(user_ids)[active]
    count = _heldout_users(len(user_ids), cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(user_ids))
    val, test, train = (np.sort(order[:count]), np.sort(order[count : 2 * count]), np.sort(order[2 * count :]))
    seen = np.flatnonzero(matrix[train].getnnz(axis=0) > 0)  # the model's items: those of the training users
    if len(seen) < matrix.shape[1]:
        logger.info("%s: %d of %d items have no positive among the training users and are left out",
                    source, matrix.shape[1] - len(seen), matrix.shape[1])
    matrix = matrix[:, seen]
    record = InteractionRecord(
        items=tuple(str(i) for i in np.asarray(item_ids)[seen]), source=source, user_column=columns[0],
        item_column=columns[1], rating_column=columns[2], min_rating=cfg.min_rating if columns[2] else None,
        min_user_items=cfg.min_user_items, seed=cfg.seed, val_users=tuple(str(u) for u in user_ids[val]),
        test_users=tuple(str(u) for u in user_ids[test]), train_users=len(train),
        train_interactions=int(matrix[train].nnz),
    )
    splits = {name: heldout_examples(matrix[rows], record, name, tuple(user_ids[rows]))
              for name, rows in (("val", val), ("test", test))}
    if splits["val"].targets is None or splits["val"].targets.nnz == 0:
        raise DataError(
            f"no validation user of {source!r} has an item to hold out (a user needs 5 positives for one to be held "
            "out); raise data.min_user_items to 5 or add data"
        )
    logger.info("%s: %d items; users: %d train, %d validation, %d test (20%% of each held-out user's items held out)",
                source, len(seen), len(train), count, count)
    return DataBundle(train=InteractionExamples(matrix[train], record, ids=tuple(user_ids[train])),
                      val=splits["val"], test=splits["test"], preprocessing=record)  # type: ignore[arg-type]


def heldout_examples(
    matrix: sparse.csr_matrix, record: InteractionRecord, split: str, ids: tuple[str, ...]
) -> InteractionExamples:
    """The users of a held-out split: their fold-in items as the input, the rest as ranking targets."""
    fold_in, heldout = fold_in_split(matrix, record.seed, SPLITS[split], record.heldout_fraction)
    return InteractionExamples(fold_in, record, targets=heldout, ids=ids)


class InteractionExamples(ExampleSet):
    """Users as examples: rows of a sparse users x items matrix, densified a batch at a time
    (``read_by_batch = True`` tells the training loop's feed not to keep the split as one dense tensor).

    Parameters
    ----------
    inputs
        (N, D) CSR: what the model is given of each user (everything, or the fold-in items).
    record
        The model's :class:`InteractionRecord`.
    targets
        (N, D) CSR of held-out items to rank, or ``None``.
    ids
        The N user ids.
    """

    read_by_batch = True

    def __init__(
        self, inputs: sparse.csr_matrix, record: InteractionRecord, targets: sparse.csr_matrix | None = None,
        ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(inputs, record, None, np.arange(inputs.shape[0]))  # type: ignore[arg-type]
        self.targets = targets
        self.ids = tuple(str(i) for i in ids)

    @property
    def selection_metric(self) -> str | None:
        """The metric that picks the best model when this set is the validation split: NDCG@100 of the
        held-out items (``None`` without targets)."""
        return None if self.targets is None else f"ndcg@{NDCG_KS[0]}"

    def heldout_metrics(
        self, predict: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 512
    ) -> dict[str, float]:
        """Recall@20, Recall@50 and NDCG@100 of the held-out items (:mod:`vaekit.data.ranking`), ranked by
        ``predict(x)`` (B, D) among the items not folded in; ``users``: how many users have held-out items.
        Empty without targets."""
        if self.targets is None:
            return {}
        per_user = []
        for start in range(0, len(self), batch_size):
            index = np.arange(start, min(start + batch_size, len(self)))
            x = self.batch(index)  # (B, D) fold-in
            scores = predict(x).detach().float().cpu().reshape(len(index), -1)
            heldout = torch.from_numpy(self.targets[self.rows[index]].toarray())  # (B, D)
            per_user.append(user_metrics(scores, heldout, exclude=x > 0))
        return mean_metrics(per_user)


# -- the data source ---------------------------------------------------------------------------------------------
def _header_names(path: Path) -> list[str]:
    """The column names in the first line (or the Parquet schema) of ``path``; empty if it cannot be read."""
    try:
        if path.suffix.lower() == ".parquet":
            return [str(name) for name in _pyarrow()[2].read_schema(path).names]
        line = _first_lines(path)[0]
    except (DataError, OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return []
    return [n.strip().strip('"').strip("'") for n in line.split("\t" if "\t" in line else ",")]


def looks_like_interactions(path: Path) -> bool:
    """Whether ``path`` is an interaction file by its name and header (see the module docstring)."""
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in SUFFIXES:
        return False
    if suffix in (".data", ".tsv"):
        return True
    names = {n.lower() for n in _header_names(path)}
    return bool(names & set(USER_NAMES)) and bool(names & set(ITEM_NAMES))


def _existing(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(
            f"interaction data {source!r} is not a file; give a .csv, .tsv, .parquet or GroupLens u.data file of "
            "user, item (and rating) rows"
        )
    return path


class InteractionSource:
    """The ``interactions`` data source (see the module docstring)."""

    priority = 50

    def matches(self, source: str) -> bool:
        return looks_like_interactions(Path(source).expanduser())

    def load(self, cfg: DataConfig) -> DataBundle:
        path = _existing(cfg.source)
        columns = Columns(cfg.user_column, cfg.item_column, cfg.rating_column, ratings=cfg.min_rating is not None)
        rows = read_interactions(path, columns)
        matrix = positives(rows, cfg.min_rating, cfg.source)
        return bundle_from_matrix(matrix, rows.user_ids, rows.item_ids, cfg, cfg.source, rows.columns)

    def examples(self, source: str, preprocessing: Any, data_dir: str | None, split: str) -> ExampleSet:
        if not isinstance(preprocessing, InteractionRecord):
            raise DataError(
                f"{source!r} holds interactions (user, item rows), but the model was trained on "
                f"{preprocessing.source or 'other data'} (examples of shape {tuple(preprocessing.shape)}); "
                "give it data like its training data"
            )
        try:
            path = _existing(source)
        except DataError:
            raise DataError(
                f"{source!r} is not interaction data: the model is a recommender trained on {preprocessing.source!r} "
                "(user, item rows); give a .csv, .tsv, .parquet or u.data file of interactions"
            ) from None
        own = Path(preprocessing.source).expanduser().resolve() == path.resolve()
        return own_split(path, preprocessing, split) if own else users_of(path, preprocessing)


def _model_rows(path: Path, record: InteractionRecord, own: bool) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Every user's positives in ``path`` in the model's item order, read as the model's data was (``own``: the
    model's training file, whose positives of items outside the training users' were left out by design)."""
    rows = read_interactions(path, model_columns(path, record))
    matrix, dropped = map_items(positives(rows, record.min_rating, str(path)), rows.item_ids, record)
    if dropped:
        (logger.info if own else logger.warning)(
            "%s: %d positives are of items the model does not know (not among its %d items); left out", path,
            dropped, len(record.items))
    return matrix, rows.user_ids


def model_columns(path: Path, record: InteractionRecord) -> Columns:
    """The columns to read ``path`` with for a model: the ones it was trained on where the file has them, else
    found by name (or by position) as for any file."""
    names = set(_header_names(path))
    ratings = record.min_rating is not None
    if {record.user_column, record.item_column} <= names:
        rating = record.rating_column if record.rating_column in names else None
        return Columns(record.user_column, record.item_column, rating, ratings)
    return Columns(ratings=ratings)


def own_split(path: Path, record: InteractionRecord, split: str) -> InteractionExamples:
    """The model's own data: its test users (fold-in input, held-out targets), or its training users (``train``).

    Raises
    ------
    DataError
        The file no longer holds the recorded users (it changed since training).
    """
    matrix, user_ids = _model_rows(path, record, own=True)
    position = {str(u): i for i, u in enumerate(user_ids)}
    if split == "train":
        held = set(record.val_users) | set(record.test_users)
        rows = np.array([i for i, u in enumerate(user_ids) if u not in held], dtype=np.int64)
        rows = rows[np.diff(matrix.indptr)[rows] >= record.min_user_items]
        return InteractionExamples(matrix[rows], record, ids=tuple(user_ids[rows]))
    missing = [u for u in record.test_users if u not in position]
    if missing:
        raise DataError(
            f"{str(path)!r} no longer holds {len(missing)} of the model's {len(record.test_users)} test users (e.g. "
            f"{missing[0]!r}): it changed since training; evaluate on the file the model was trained on"
        )
    rows = np.array([position[u] for u in record.test_users], dtype=np.int64)
    return heldout_examples(matrix[rows], record, "test", record.test_users)


def users_of(path: Path, record: InteractionRecord) -> InteractionExamples:
    """Every user of another file with at least one item the model knows: all their items as the input."""
    matrix, user_ids = _model_rows(path, record, own=False)
    rows = np.flatnonzero(np.diff(matrix.indptr) > 0)
    if len(rows) < len(user_ids):
        logger.warning("%s: %d of %d users have no positive of an item the model knows; left out", path,
                       len(user_ids) - len(rows), len(user_ids))
    if len(rows) == 0:
        raise DataError(f"no user in {str(path)!r} has a positive of an item the model knows; check the item ids")
    return InteractionExamples(matrix[rows], record, ids=tuple(user_ids[rows]))


def user_history(path: Path, record: InteractionRecord, user: str) -> list[str]:
    """The item ids (known to the model) of ``user``'s positives in ``path``.

    Raises
    ------
    DataError
        The user is not in the file, or has no positive of an item the model knows.
    """
    rows = read_interactions(_existing(str(path)), model_columns(path, record))
    found = np.flatnonzero(rows.user_ids == str(user))
    if len(found) == 0:
        raise DataError(f"user {user!r} is not in {str(path)!r} ({len(rows.user_ids)} users); check the id")
    matrix, _ = map_items(positives(rows, record.min_rating, str(path)), rows.item_ids, record)
    items = matrix[found[0]].indices
    if len(items) == 0:
        rule = "" if record.min_rating is None else f" rated {record.min_rating:g} or more"
        raise DataError(
            f"user {user!r} has no interaction{rule} with an item the model knows in {str(path)!r}, so there is "
            "nothing to recommend from; give the user's items with --items"
        )
    return [record.items[i] for i in sorted(items)]


SOURCES.register(KIND)(InteractionSource())


def known_items(record: InteractionRecord, items: Sequence[str | int]) -> tuple[list[str], list[str]]:
    """(the ids of ``items`` the model knows, in its order, without repeats; the ids it does not know).

    Raises
    ------
    DataError
        No item is given (a user with no interactions), or none of them is known.
    """
    given = [str(item).strip() for item in items if str(item).strip()]
    if not given:
        raise DataError("no items given: a user with no interactions has nothing to recommend from; give at least "
                        "one item id the user has")
    index = record.item_index()
    known = sorted({index[item] for item in given if item in index})
    unknown = list(dict.fromkeys(item for item in given if item not in index))
    if not known:
        examples = ", ".join(repr(item) for item in unknown[:5])
        raise DataError(
            f"none of the {len(unknown)} item ids given is known to the model ({examples}); its {len(record.items)} "
            f"items have ids such as {', '.join(repr(i) for i in record.items[:3])}"
        )
    return [record.items[i] for i in known], unknown


def read_item_names(path: str | Path) -> dict[str, str]:
    """Item id -> title from a table with a header (CSV, or TSV such as MovieLens ``items.tsv``): the id column is the
    first one named like an item id (else the first column), the title the first whose name holds ``title`` or
    ``name`` (else the second column); names may carry a ``:type`` suffix (``movie_title:token_seq``).

    Raises
    ------
    DataError
        The file cannot be read or has a single column.
    """
    import csv

    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            header = handle.readline().rstrip("\r\n")
            delimiter = "\t" if "\t" in header else ","
            names = [name.split(":")[0].strip().strip('"').lower() for name in header.split(delimiter)]
            rows = list(csv.reader(handle, delimiter=delimiter))
    except OSError as exc:
        raise DataError(f"cannot read item names from {str(path)!r}: {exc.strerror or exc}") from None
    if len(names) < 2:
        raise DataError(f"{str(path)!r} has one column; give a table of item id and title columns with a header")
    id_column = next((i for i, n in enumerate(names) if n in ITEM_NAMES or n in ("id", "item_id")), 0)
    title = next((i for i, n in enumerate(names) if ("title" in n or "name" in n) and i != id_column),
                 1 if id_column == 0 else 0)
    return {row[id_column].strip(): row[title].strip() for row in rows if len(row) > max(id_column, title)}

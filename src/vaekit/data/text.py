"""Text: sentences as token ids, a vocabulary (or a subword tokenizer) fitted on the training split and saved with
the model, length-bucketed batches.

::

    corpus.txt / folder of train, valid, test ──lines (UTF-8, empty ones skipped)──> tokens ──ids──>
        raw (N, max_length + 1) int32: w_1 .. w_n <eos> <pad> ..       (the data source's raw array)
    ExampleSet.batch(indices) ──TextPreprocessing.apply──> int64 (B, max_length + 1)

``data.source`` is a ``.txt`` file (one sentence or document a line; ``data.val_fraction`` of it held out, seeded),
or a folder holding a training file ``train.txt`` / ``ptb.train.txt`` / ``NAME.train.txt`` with, optionally,
``valid.txt`` (or ``val.txt``, ``*.valid.txt``: the validation split, else a held-out fraction of train) and
``test.txt`` (``*.test.txt``: the test split, what ``vaekit evaluate`` reads). The Penn Treebank's
``ptb.{train,valid,test}.txt`` are recognised.

Tokenizers (``data.tokenizer``):

- ``whitespace``: tokens separated by spaces (PTB is tokenized already); the ``data.vocab_size`` most frequent
  words of the training split are kept (ties by first occurrence), the rest become ``<unk>``. The word ``<unk>``
  in the text is the unknown token itself (PTB writes it so).
- ``bpe``: byte-pair subwords (Sennrich et al. 2016, arXiv:1508.07909) learnt on the training split by the
  ``tokenizers`` library (``pip install 'vaekit[text]'``), ``data.vocab_size`` pieces, for raw text.

Every sentence ends with one ``<eos>``, which the model predicts and which counts as a token in the perplexity.
``<bos>`` starts the decoder's input and is never predicted. Lines longer than ``data.max_length`` tokens are
truncated (logged with a count); empty lines are skipped (logged with a count); bytes that are not UTF-8 are an
error naming the line. Data read for a trained model goes through the model's stored vocabulary: words it does not
know become ``<unk>`` and are counted (:class:`TextStats`, reported by ``vaekit evaluate``).

The vocabulary (or the tokenizer's JSON) is stored in the model's ``metadata.json`` as the preprocessing record
(kind ``text``), never pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from vaekit.config import DataConfig
from vaekit.data.arrays import FEW_EXAMPLES
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import PREPROCESSINGS
from vaekit.data.sources import DATASETS, SOURCES
from vaekit.errors import ConfigError, DataError
from vaekit.extras import import_optional

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<bos>", "<unk>", "<eos>")
PAD, BOS, UNK, EOS = 0, 1, 2, 3
FIRST_OUTPUT = 2  # a model predicts the ids from here on: <unk>, <eos> and the words (never <pad> or <bos>)
TOKENIZERS = ("whitespace", "bpe")
POOL_BATCHES = 50  # length bucketing sorts pools of this many batches by length (see TextExamples.batch_order)
SPLIT_FILES = {  # a folder of text: the files of each split, by name (lower case)
    "train": re.compile(r"^(?:.*\.)?train\.txt$"),
    "valid": re.compile(r"^(?:.*\.)?(?:valid|val|validation|dev)\.txt$"),
    "test": re.compile(r"^(?:.*\.)?test\.txt$"),
}


@dataclass
class TextStats:
    """What reading a text file did: sentences kept, empty lines skipped, lines truncated, tokens (each sentence's
    ``<eos>`` included) and out-of-vocabulary words mapped to ``<unk>`` (the word ``<unk>`` in the text excluded)."""

    sentences: int = 0
    empty_lines: int = 0
    truncated: int = 0
    tokens: int = 0
    oov: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# -- reading lines ------------------------------------------------------------------------------------------------
def read_lines(path: str | Path) -> tuple[list[str], int]:
    """The non-empty lines of a UTF-8 text file (stripped) and the number of empty lines skipped.

    Raises
    ------
    DataError
        The file is missing or unreadable, holds bytes that are not UTF-8 (the message names the line), or holds
        no non-empty line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"text file {str(path)!r} not found; check the path") from None
    except OSError as exc:
        raise DataError(f"cannot read text file {str(path)!r}: {exc.strerror}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors) is not part of a word
    chunks = data.split(b"\n")
    if chunks and not chunks[-1]:
        chunks.pop()  # the newline that ends the file opens no line
    lines: list[str] = []
    empty = 0
    for number, raw in enumerate(chunks, start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(
                f"line {number} of {str(path)!r} is not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                "of the line); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
        if line:
            lines.append(line)
        else:
            empty += 1
    if not lines:
        raise DataError(
            f"text file {str(path)!r} holds no sentences ({empty} empty lines); give one sentence or document a line"
        )
    if empty:
        logger.info("%s: skipped %d empty lines", path, empty)
    return lines, empty


# -- the preprocessing record -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextPreprocessing:
    """How lines of text become token ids; JSON-serializable, saved with every text model (kind ``text``).

    Parameters
    ----------
    shape
        ``(max_length + 1,)``: the longest token sequence, ``<eos>`` included.
    tokenizer
        ``whitespace`` or ``bpe``.
    vocabulary
        The tokens by id (the four special tokens first); for ``bpe`` the pieces of the tokenizer.
    tokenizer_model
        ``bpe``: the ``tokenizers`` library's JSON description of the tokenizer; ``None`` for ``whitespace``.
    max_length
        Tokens per sentence at most, ``<eos>`` not counted.
    source
        What it was built from (the path).
    counts
        How often each token occurs in the training split (``<eos>`` once per sentence), by id: the unigram model
        :meth:`unigram_log_prob` that relative anomaly scores compare against.
    """

    shape: tuple[int, ...]
    tokenizer: str
    vocabulary: tuple[str, ...]
    tokenizer_model: dict[str, Any] | None = None
    max_length: int = 100
    source: str = ""
    counts: tuple[int, ...] | None = None
    kind: str = "text"
    # What the readers of arrays and tables look for in a preprocessing record; none of it applies to text.
    data_dir: str | None = field(default=None, repr=False)
    columns: ClassVar[None] = None
    label_column: ClassVar[None] = None
    categories: ClassVar[None] = None
    image_size: ClassVar[None] = None
    channels: ClassVar[None] = None
    families: ClassVar[tuple[str, ...]] = ("text",)  # the model families that read this data

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise DataError(f"text tokenizer {self.tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
        if tuple(self.vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise DataError("the stored vocabulary does not start with the special tokens; the model file is corrupted")
        if self.tokenizer == "bpe" and self.tokenizer_model is None:
            raise DataError("a bpe text record lacks its tokenizer; the model file is corrupted")
        if tuple(self.shape) != (self.max_length + 1,):
            raise DataError(f"text shape {self.shape} does not match max_length {self.max_length}; the record is "
                            "corrupted")

    @property
    def vocab_size(self) -> int:
        """Tokens the model predicts over, the special tokens included."""
        return len(self.vocabulary)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.vocabulary)}

    @functools.cached_property
    def _subwords(self) -> Any:
        tokenizers = import_optional("tokenizers", "text", "the bpe text tokenizer", DataError)
        return tokenizers.Tokenizer.from_str(json.dumps(self.tokenizer_model))

    # -- strings <-> ids ------------------------------------------------------------------------------------------
    def tokenize(self, lines: list[str]) -> tuple[list[list[int]], int]:
        """Token ids of each line (no ``<eos>``, not truncated) and the number of out-of-vocabulary words that became
        ``<unk>`` (the word ``<unk>`` itself not counted)."""
        if self.tokenizer == "bpe":
            encodings = self._subwords.encode_batch(lines, add_special_tokens=False)
            ids = [list(e.ids) for e in encodings]
            unknown = sum(row.count(UNK) for row in ids)
            return ids, max(0, unknown - sum(line.count(SPECIAL_TOKENS[UNK]) for line in lines))
        index = self._index
        ids, oov = [], 0
        for line in lines:
            row = []
            for word in line.split():
                token = index.get(word)
                if token is None:
                    token, oov = UNK, oov + (word != SPECIAL_TOKENS[UNK])
                row.append(token)
            ids.append(row)
        return ids, oov

    def unknown_words(self, lines: list[str]) -> list[list[str]]:
        """The words (``whitespace``) or pieces of text (``bpe``) of each line that became ``<unk>``, the word
        ``<unk>`` itself aside."""
        if self.tokenizer == "bpe":
            found = []
            for line, encoding in zip(lines, self._subwords.encode_batch(lines, add_special_tokens=False), strict=True):
                found.append([line[a:b] for token, (a, b) in zip(encoding.ids, encoding.offsets, strict=True)
                              if token == UNK and line[a:b] != SPECIAL_TOKENS[UNK]])
            return found
        index = self._index
        return [[w for w in line.split() if w not in index and w != SPECIAL_TOKENS[UNK]] for line in lines]

    def encode(self, lines: list[str], where: str = "the text") -> tuple[np.ndarray, TextStats]:
        """Lines as a padded id matrix ``(N, max_length + 1)`` int32 (``w_1 .. w_n <eos> <pad> ..``) and what
        was done to them (truncations and out-of-vocabulary words are logged with their counts)."""
        ids, oov = self.tokenize(lines)
        raw = np.full((len(ids), self.max_length + 1), PAD, dtype=np.int32)
        truncated = tokens = 0
        for i, row in enumerate(ids):
            if len(row) > self.max_length:
                row, truncated = row[: self.max_length], truncated + 1
            raw[i, : len(row)] = row
            raw[i, len(row)] = EOS
            tokens += len(row) + 1
        if truncated:
            logger.warning("%s: truncated %d of %d lines to data.max_length=%d tokens", where, truncated, len(ids),
                           self.max_length)
        if oov:
            logger.debug("%s: %d out-of-vocabulary words became <unk>", where, oov)
        return raw, TextStats(sentences=len(ids), truncated=truncated, tokens=tokens, oov=oov)

    def decode(self, ids: np.ndarray | torch.Tensor | list[list[int]]) -> list[str]:
        """Token id rows (N, T) as strings: up to the first ``<eos>``, padding and ``<bos>`` dropped."""
        rows = ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else ids
        texts = []
        for row in rows:
            tokens = []
            for token in (int(t) for t in row):
                if token in (EOS, PAD):
                    break
                if token != BOS and 0 <= token < self.vocab_size:
                    tokens.append(token)
            if self.tokenizer == "bpe":
                texts.append(self._subwords.decode(tokens, skip_special_tokens=False))
            else:
                texts.append(" ".join(self.vocabulary[t] for t in tokens))
        return texts

    def unigram_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats under the training split's unigram model (add-one smoothed over the tokens a model
        predicts: ``<unk>``, ``<eos>`` and the words), summed over each sentence's tokens and its ``<eos>``: (B,).

        Raises
        ------
        DataError
            The record holds no training counts (a model saved before they were recorded).
        """
        if self.counts is None:
            raise DataError("this text model records no training token counts; retrain it to score against them")
        counts = torch.tensor(self.counts, dtype=torch.float64)[FIRST_OUTPUT:] + 1.0
        log_p = torch.cat([torch.zeros(FIRST_OUTPUT, dtype=torch.float64), (counts / counts.sum()).log()])
        x = x.long().cpu()
        return torch.where(x != PAD, log_p[x], 0.0).sum(1)

    def as_text(self, ids: np.ndarray | torch.Tensor) -> list[str]:
        """Examples (N, T) as lines of text (:meth:`decode`): how verbs and run directories write text."""
        return self.decode(ids)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Padded raw rows ``(B, max_length + 1)`` as the model's input: int64 of the same shape. (The model cuts each
        batch after its longest sentence; length-bucketed batches keep that cut close to every sentence's end.)"""
        return np.ascontiguousarray(raw, dtype=np.int64)

    # -- JSON ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextPreprocessing:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise :class:`DataError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(f"unknown text preprocessing key {unknown[0]!r}; the model was saved by a newer vaekit, "
                            "upgrade it")
        missing = sorted({"shape", "tokenizer", "vocabulary"} - set(d))
        if missing:
            raise DataError(f"stored text preprocessing lacks {missing[0]!r}; the model file is incomplete")
        tuples = ("shape", "vocabulary", "counts")
        kwargs: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in d.items()}
        return cls(**kwargs)


PREPROCESSINGS.register("text")(TextPreprocessing)  # type: ignore[arg-type]  # a record of its own kind


def fit_tokenizer(lines: list[str], cfg: DataConfig) -> TextPreprocessing:
    """The vocabulary (``whitespace``) or subword tokenizer (``bpe``) of the training lines (see the module
    docstring)."""
    shape = (cfg.max_length + 1,)
    if cfg.tokenizer == "bpe":
        tokenizers = import_optional("tokenizers", "text", "data.tokenizer=bpe", ConfigError)
        tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=SPECIAL_TOKENS[UNK]))
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
        tokenizer.decoder = tokenizers.decoders.Metaspace()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=cfg.vocab_size + len(SPECIAL_TOKENS), special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
        tokenizer.train_from_iterator(lines, trainer)
        vocab = tokenizer.get_vocab()
        vocabulary = tuple(sorted(vocab, key=vocab.__getitem__))
        return TextPreprocessing(shape, "bpe", vocabulary, json.loads(tokenizer.to_str()), cfg.max_length)
    counts = Counter(word for line in lines for word in line.split())
    for special in SPECIAL_TOKENS:
        counts.pop(special, None)
    words = [word for word, _ in counts.most_common(cfg.vocab_size)]  # ties keep their first occurrence's order
    if len(counts) > len(words):
        logger.info("vocabulary: %d most frequent of %d words (data.vocab_size); the rest become <unk>", len(words),
                    len(counts))
    return TextPreprocessing(shape, "whitespace", (*SPECIAL_TOKENS, *words), None, cfg.max_length)


# -- example sets -------------------------------------------------------------------------------------------------
class TextExamples(ExampleSet):
    """Sentences as padded token ids (an :class:`ExampleSet` whose raw array is ``(N, max_length + 1)`` int32), with
    the reading statistics and length-bucketed batch orders.

    Attributes
    ----------
    stats
        :class:`TextStats` of the file(s) these sentences came from.
    lengths
        ``(N,)`` tokens of each sentence, ``<eos>`` included.
    """

    def __init__(self, raw: np.ndarray, preprocessing: Any, stats: TextStats, rows: np.ndarray | None = None) -> None:
        super().__init__(raw, preprocessing, None, rows)
        self.stats = stats
        self.lengths = (raw[self.rows] != PAD).sum(axis=1).astype(np.int64)

    def __repr__(self) -> str:
        return f"TextExamples(n={len(self)}, tokens={int(self.lengths.sum())}, max_length={self.shape[0] - 1})"

    def batch_order(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """The batches of an epoch, length-bucketed: ``order`` (positions, already shuffled by the caller's seeded
        generator) is cut into pools of :data:`POOL_BATCHES` batches, each pool sorted by sentence length (stable)
        and cut into batches, and the batches are shuffled with ``generator`` (kept in order when ``None``). So
        padding stays small while every epoch's batches differ; the order is a function of the generator's state,
        which keeps resume exact. Every pool but the last is a whole number of batches, so there are as many
        batches as without bucketing."""
        lengths = torch.from_numpy(self.lengths)[order]
        pool = batch_size * POOL_BATCHES
        batches: list[torch.Tensor] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.argsort(lengths[start : start + pool], stable=True)]
            batches.extend(chunk.split(batch_size))
        if generator is not None:
            batches = [batches[int(i)] for i in torch.randperm(len(batches), generator=generator)]
        return batches


def _split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        for split, pattern in SPLIT_FILES.items():
            if path.is_file() and pattern.match(path.name.lower()) and split not in found:
                found[split] = path
    return found


def _examples(path: Path, preprocessing: TextPreprocessing) -> TextExamples:
    lines, empty = read_lines(path)
    return _set(preprocessing, lines, empty, str(path))


class _TextSource:
    """``.txt`` files and folders of ``train`` / ``valid`` / ``test`` text files (see the module docstring)."""

    priority = 50  # before the file source, which takes any path

    def matches(self, source: str) -> bool:
        path = Path(source).expanduser()
        if path.suffix.lower() == ".txt":
            return True
        return path.is_dir() and "train" in _split_files(path)

    def load(self, cfg: DataConfig) -> DataBundle:
        path = Path(cfg.source).expanduser()
        files = _split_files(path) if path.is_dir() else {"train": path}
        lines, empty = read_lines(files["train"])
        if "valid" in files:
            val_lines, val_empty = read_lines(files["valid"])
        else:
            lines, val_lines = _hold_out(lines, cfg, files["train"])
            val_empty = 0
        preprocessing = dataclasses.replace(fit_tokenizer(lines, cfg), source=cfg.source)
        raw, stats = preprocessing.encode(lines, f"{files['train']} (train)")
        counts = np.bincount(raw[raw != PAD], minlength=preprocessing.vocab_size)  # the unigram model's counts
        preprocessing = dataclasses.replace(preprocessing, counts=tuple(int(c) for c in counts))
        stats.empty_lines = empty
        train = TextExamples(raw, preprocessing, stats)
        val = _set(preprocessing, val_lines, val_empty, f"{files.get('valid', files['train'])} (validation)")
        test = _examples(files["test"], preprocessing) if "test" in files else None
        if len(train) < FEW_EXAMPLES:
            logger.warning("%s has %d training sentences: too few for a language model to learn much", cfg.source,
                           len(train))
        logger.info("text %s: %d train, %d val, %s test sentences; %s tokenizer, %d tokens in the vocabulary, "
                    "%d training tokens (<eos> included)", cfg.source, len(train), len(val),
                    "no" if test is None else len(test), preprocessing.tokenizer, preprocessing.vocab_size,
                    train.stats.tokens)
        return DataBundle(train=train, val=val, test=test, preprocessing=preprocessing)  # type: ignore[arg-type]

    def examples(self, source: str, preprocessing: Any, data_dir: str | None, split: str) -> ExampleSet:
        path = Path(source).expanduser()
        if not isinstance(preprocessing, TextPreprocessing):
            kind = getattr(preprocessing, "kind", "array")
            raise DataError(
                f"{source!r} is text, but the model was trained on {kind} data ({preprocessing.source or 'unknown'})"
                "; give it data like its training data, or train a text model (vaekit train --preset ptb)"
            )
        if not path.exists() and source not in DATASETS:  # a built-in dataset is not text: said below
            raise DataError(f"text source {source!r} not found: no such file or folder (a relative path is read from "
                            f"the current directory, {str(Path.cwd())!r}); pass --data with the path of a .txt file "
                            "or of a folder of train/valid/test .txt files")
        if not self.matches(source):  # vaekit.data.load_examples sends every source of a text model here
            raise DataError(
                f"{source!r} is not text (a .txt file, or a folder of train/valid/test .txt files), but the model was "
                f"trained on text data ({preprocessing.source or 'unknown source'}); give it text"
            )
        if path.is_dir():
            files = _split_files(path)
            if split not in files:
                raise DataError(f"the text folder {source!r} has no {split} file ({split}.txt or *.{split}.txt); "
                                "pass a .txt file instead")
            return _examples(files[split], preprocessing)
        return _examples(path, preprocessing)


def _hold_out(lines: list[str], cfg: DataConfig, path: Path) -> tuple[list[str], list[str]]:
    """Train and validation lines of one file: ``cfg.val_fraction`` of them (seeded by ``cfg.seed``) held out."""
    n = len(lines)
    n_val = max(1, round(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if n - n_val < 1:
        raise DataError(f"{str(path)!r} has {n} sentences, leaving none for training after holding out {n_val}; "
                        "add sentences or lower data.val_fraction")
    order = np.random.default_rng(cfg.seed).permutation(n)
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    return [lines[i] for i in train_rows], [lines[i] for i in val_rows]


def _set(preprocessing: TextPreprocessing, lines: list[str], empty: int, where: str) -> TextExamples:
    raw, stats = preprocessing.encode(lines, where)
    stats.empty_lines = empty
    return TextExamples(raw, preprocessing, stats)


SOURCES.register("text")(_TextSource())


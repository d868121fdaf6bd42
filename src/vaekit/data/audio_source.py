"""The ``audio`` data source: a folder of WAV / FLAC / OGG clips (or one clip) as log-mel spectrograms.

::

    folder ──scan (recursive)──> audio files (sorted by path); other files skipped and counted
           ──labels_from──> a label and named fields per clip (file-name pattern, CSV, or class subfolders)
           ──test_split──> test clips | the rest ──seeded val_fraction──> train / val
           ──vaekit.data.audio──> standardized log-mel spectrograms (1, n_mels, frames), dB statistics fitted on train

The source takes a path that is an audio file, or a folder whose audio files are at least as many as its images
(a stray clip in an image folder leaves it to the image reader); its priority (50) comes before the ``file``
source, which takes any folder. Files that are not audio (by suffix: ``.wav``, ``.flac``, ``.ogg``) are skipped
and their number logged; an audio file that cannot be decoded, or holds no samples, is an error naming it.

Labels (``data.labels_from``):

- a pattern such as ``{label}_{speaker}_{take}``, matched against every file name without its suffix; ``{name}``
  matches one or more characters, the rest literally; ``label`` is the class, the other fields can pick the test
  split. Every file must match. FSDD's names are ``{digit}_{speaker}_{take}``: ``{label}_{speaker}_{take}``
  conditions on the digit, ``{digit}_{label}_{take}`` on the speaker;
- a ``.csv`` file (a header, then one clip per line) with the columns ``file`` (relative to the folder) and
  ``label``, and optionally ``split`` (``train`` or ``test``); only the clips it lists are used;
- ``None``: the subfolder names when every clip sits in a subfolder (as for image folders), else no labels.

Label values that are all whole numbers are the classes themselves (FSDD's digit ``7`` is class 7); other values
are numbered in sorted order and the names saved with the model. ``data.test_split`` (``FIELD=VALUES``, values
comma-separated, integer ranges ``a-b``: FSDD's conventional test split is ``take=0-4``) selects the test clips.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit.config import DataConfig
from vaekit.data.arrays import FEW_EXAMPLES
from vaekit.data.audio import AUDIO_SUFFIXES, AudioPreprocessing, read_clip
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import Preprocessing
from vaekit.data.readers import IMAGE_SUFFIXES
from vaekit.data.sources import SOURCES
from vaekit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RANGE = re.compile(r"^(-?\d+)-(-?\d+)$")


@dataclass
class Clips:
    """The clips of a source: their paths, named fields (``label`` among them when labelled) and CSV splits."""

    paths: list[Path]
    fields: dict[str, list[str]]
    splits: list[str] | None = None
    skipped: int = 0


# -- scanning ---------------------------------------------------------------------------------------------------
def _walk(folder: Path) -> tuple[list[Path], int, int]:
    """Audio files under ``folder`` (sorted), the number of other files and of images among them."""
    audio: list[Path] = []
    other = images = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in AUDIO_SUFFIXES:
                audio.append(Path(root) / name)
            else:
                other += 1
                images += suffix in IMAGE_SUFFIXES
    return sorted(audio), other, images


def is_audio_path(source: str) -> bool:
    """Whether ``source`` is an audio file, or a folder holding audio files at least as many as images."""
    path = Path(source).expanduser()
    if path.is_file():
        return path.suffix.lower() in AUDIO_SUFFIXES
    if not path.is_dir():
        return False
    audio, _, images = _walk(path)
    return bool(audio) and len(audio) >= images


def scan(source: str) -> tuple[Path, list[Path], int]:
    """(the folder, its audio files, the number of skipped non-audio files); a single file is its own folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"audio source {source!r} not found: no such file or folder; pass a folder of clips")
    if path.is_file():
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise DataError(f"{source!r} is not an audio file ({', '.join(AUDIO_SUFFIXES)}), and audio models read "
                            "clips; pass a folder of clips or one clip")
        return path.parent, [path], 0
    audio, other, _ = _walk(path)
    if not audio:
        raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {source!r}, and audio models read clips; "
                        "pass a folder of clips")
    if other:
        logger.info("%s: skipped %d files that are not audio (%s)", source, other, ", ".join(AUDIO_SUFFIXES))
    return path, audio, other


# -- labels -----------------------------------------------------------------------------------------------------
def compile_pattern(pattern: str) -> tuple[re.Pattern[str], list[str]]:
    """A file-name pattern (``{label}_{speaker}_{take}``) as a regular expression and its field names."""
    names = _FIELD.findall(pattern)
    if not names:
        raise ConfigError(
            f"data.labels_from={pattern!r} names no field; write a pattern such as '{{label}}_{{speaker}}_{{take}}', "
            "the path of a .csv file, or leave it unset"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"data.labels_from={pattern!r} names a field twice; give each field its own name")
    pieces = _FIELD.split(pattern)  # literal, name, literal, name, ..., literal
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(pieces))
    return re.compile(regex), names


def _pattern_fields(paths: list[Path], pattern: str, strict: bool) -> dict[str, list[str]] | None:
    regex, names = compile_pattern(pattern)
    matches = [regex.fullmatch(p.stem) for p in paths]
    bad = [p.name for p, m in zip(paths, matches, strict=True) if m is None]
    if bad:
        if strict:
            raise DataError(
                f"{len(bad)} of {len(paths)} file names do not match data.labels_from={pattern!r}, e.g. {bad[0]!r}; "
                "rename them or fix the pattern"
            )
        logger.info("%d file names do not match the model's label pattern %r (e.g. %s): no labels", len(bad),
                    pattern, bad[0])
        return None
    return {name: [m.group(name) for m in matches if m is not None] for name in names}


def _csv_clips(folder: Path, table: str, paths: list[Path]) -> Clips:
    """The clips a CSV lists, with its label and split columns."""
    try:
        with open(Path(table).expanduser(), newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the label table {table!r} ({exc}); give a CSV with columns file,label") from None
    columns = set(rows[0]) if rows else set()
    if not {"file", "label"} <= columns:
        raise DataError(f"label table {table!r} needs the columns file and label, has {sorted(columns)}; add them")
    known = {p.resolve() for p in paths}
    listed = [(folder / row["file"]).resolve() for row in rows]
    missing = [row["file"] for row, path in zip(rows, listed, strict=True) if path not in known]
    if missing:
        raise DataError(f"{len(missing)} clips listed in {table!r} are not audio files under {str(folder)!r}, "
                        f"e.g. {missing[0]!r}; fix the table or the folder")
    splits = [row.get("split") or "train" for row in rows] if "split" in columns else None
    if splits is not None and set(splits) - {"train", "test"}:
        raise DataError(f"the split column of {table!r} holds {sorted(set(splits) - {'train', 'test'})}; use train "
                        "or test")
    fields = {name: [row[name] or "" for row in rows] for name in sorted(columns - {"file", "split"})}
    if splits is not None:
        fields["split"] = splits
    if len(paths) > len(rows):
        logger.info("%s lists %d of the %d audio files under %s; the others are not used", table, len(rows),
                    len(paths), folder)
    return Clips(listed, fields, splits, len(paths) - len(rows))


def _is_table(labels_from: str | None) -> bool:
    return labels_from is not None and labels_from.lower().endswith(".csv") and "{" not in labels_from


def clips_of(source: str, labels_from: str | None, strict: bool = True) -> Clips:
    """The clips of ``source`` with their fields, labelled as ``labels_from`` says (see the module docstring).

    ``strict=False`` (reading data for an existing model) gives no labels instead of an error when the names do
    not fit the model's pattern.
    """
    folder, paths, skipped = scan(source)
    if _is_table(labels_from):
        clips = _csv_clips(folder, str(labels_from), paths)
        clips.skipped += skipped
        return clips
    if labels_from is not None:
        return Clips(paths, _pattern_fields(paths, str(labels_from), strict) or {}, None, skipped)
    parents = [p.relative_to(folder).parts for p in paths]
    if len(paths) > 1 and all(len(parts) > 1 for parts in parents):
        return Clips(paths, {"label": [parts[0] for parts in parents]}, None, skipped)
    return Clips(paths, {}, None, skipped)


def number_labels(values: list[str], classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label values as int64 classes and the class names: whole numbers are their own class (``7`` is class 7),
    other values are numbered in sorted order; with ``classes`` given (a trained model's), the values map onto
    them and a value outside them is a DataError."""
    if classes is None:
        if all(v.isdigit() for v in values):
            classes = tuple(str(i) for i in range(max(int(v) for v in values) + 1))
        else:
            classes = tuple(sorted(set(values)))
    index = {name: i for i, name in enumerate(classes)}
    keys = [v if v in index or not v.isdigit() else str(int(v)) for v in values]  # "07" is class "7"
    unknown = sorted({k for k in keys if k not in index})
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the model's classes {list(classes)[:10]}; pass clips "
                        "of the classes it was trained on")
    return np.asarray([index[k] for k in keys], np.int64), classes


def _parse_rule(rule: str, fields: dict[str, list[str]]) -> tuple[str, set[str], list[tuple[int, int]]]:
    name, sep, values = rule.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ConfigError(f"data.test_split={rule!r} is not FIELD=VALUES; write e.g. take=0-4 or speaker=theo")
    if name not in fields:
        have = ", ".join(sorted(fields)) or "none (set data.labels_from to a pattern or a CSV)"
        raise ConfigError(f"data.test_split names the field {name!r}, but the clips have the fields: {have}")
    exact: set[str] = set()
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in values.split(",")):
        match = _RANGE.match(part)
        if match:
            ranges.append((int(match.group(1)), int(match.group(2))))
        elif part:
            exact.add(part)
    return name, exact, ranges


def split_rule(clips: Clips, rule: str | None) -> str | None:
    """The test-split rule in force: ``rule`` (``data.test_split``), else ``split=test`` for a CSV with a split
    column, else ``None``."""
    return rule if rule is not None or clips.splits is None else "split=test"


def test_rows(clips: Clips, rule: str | None) -> np.ndarray | None:
    """Positions of the test clips by ``rule`` (``FIELD=VALUES``; see :func:`split_rule`); ``None``: no split."""
    if rule is None:
        return None
    name, exact, ranges = _parse_rule(rule, clips.fields)

    def selected(value: str) -> bool:
        if value in exact:
            return True
        number = int(value) if re.fullmatch(r"-?\d+", value) else None
        return number is not None and any(lo <= number <= hi for lo, hi in ranges)

    return np.flatnonzero([selected(v) for v in clips.fields[name]])


# -- the source -------------------------------------------------------------------------------------------------
def _fit_db(preprocessing: AudioPreprocessing, waves: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float, float]:
    """dB spectrograms of every clip (N, M, T) and the mean and standard deviation of the train rows' values."""
    db = preprocessing.decibels(waves)
    train = db[rows].astype(np.float64)
    return db, float(train.mean()), float(max(train.std(), 1e-6))


def _holdout(n: int, test: np.ndarray | None, cfg: DataConfig, rule: str | None) -> tuple[np.ndarray, ...]:
    """(train, val, test) rows: the test rows, then ``val_fraction`` of the rest, by a permutation seeded by
    ``cfg.seed``."""
    if test is not None and len(test) in (0, n):
        what = "no clip" if len(test) == 0 else "every clip"
        raise DataError(f"the test split {rule!r} selects {what} of {cfg.source!r}; choose another rule (FIELD=VALUES)")
    test = np.zeros(0, np.int64) if test is None else test
    rest = np.setdiff1d(np.arange(n), test)
    n_val = max(1, round(len(rest) * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if len(rest) - n_val < 1:
        raise DataError(f"{len(rest)} clips leave none for training after holding out {n_val} for validation; "
                        "lower data.val_fraction or add clips")
    order = np.random.default_rng(cfg.seed).permutation(rest)
    return np.sort(order[n_val:]), np.sort(order[:n_val]), test


def _settings(cfg: DataConfig, first: Path, classes: tuple[str, ...] | None) -> AudioPreprocessing:
    rate = cfg.sample_rate or read_clip(first)[1]
    clip_samples = max(1, round(cfg.clip_seconds * rate))
    if cfg.n_fft > clip_samples:
        raise ConfigError(f"data.n_fft={cfg.n_fft} is longer than a clip of {clip_samples} samples; lower it or "
                          "raise data.clip_seconds")
    if cfg.n_mels > cfg.n_fft // 2 + 1:
        raise ConfigError(f"data.n_mels={cfg.n_mels} exceeds the {cfg.n_fft // 2 + 1} frequency bins of "
                          f"data.n_fft={cfg.n_fft}; lower data.n_mels or raise data.n_fft")
    frames = 1 + clip_samples // cfg.hop_length
    return AudioPreprocessing(
        shape=(1, cfg.n_mels, frames), source=cfg.source, sample_rate=rate, clip_samples=clip_samples,
        clip_align=cfg.clip_align, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        labels_from=cfg.labels_from, classes=classes, test_split=cfg.test_split,
    )


def load_audio(cfg: DataConfig) -> DataBundle:
    """Read an audio folder for training: clips, labels, splits, spectrograms and the fitted standardization.

    Raises
    ------
    ConfigError
        A bad pattern, test rule or STFT setting.
    DataError
        No audio files, a file that cannot be decoded or holds no samples, names that do not match the
        pattern, a split that leaves no training clips, or binarization (audio is real-valued).
    """
    if cfg.binarize != "none":
        raise DataError(f"data.binarize={cfg.binarize!r} needs values in [0, 1], but audio spectrograms are real "
                        "values; set data.binarize=none")
    clips = clips_of(cfg.source, cfg.labels_from)
    labels, classes = (None, None)
    if "label" in clips.fields:
        labels, classes = number_labels(clips.fields["label"])
    rule = split_rule(clips, cfg.test_split)
    train, val, test = _holdout(len(clips.paths), test_rows(clips, rule), cfg, rule)
    preprocessing = dataclasses.replace(_settings(cfg, clips.paths[0], classes), test_split=rule)
    waves, counts = preprocessing.read(clips.paths)
    db, db_mean, db_std = _fit_db(preprocessing, waves, train)
    preprocessing = dataclasses.replace(preprocessing, db_mean=db_mean, db_std=db_std)
    x = preprocessing.standardized(db)  # (N, 1, M, T)
    if len(train) < FEW_EXAMPLES:
        logger.warning("%s has %d training clips: too few for a VAE to learn much", cfg.source, len(train))
    logger.info(
        "audio %s: %d clips (%d train, %d val, %d test), %d Hz, %.3g s each (%d cropped, %d padded), log-mel %s, "
        "dB mean %.1f std %.1f, %s", cfg.source, len(clips.paths), len(train), len(val), len(test),
        preprocessing.sample_rate, preprocessing.seconds, counts["cropped"], counts["padded"],
        preprocessing.shape, db_mean, db_std, f"{len(classes)} classes" if classes else "no labels",
    )
    return DataBundle(
        train=ExampleSet(x, preprocessing, labels, train), val=ExampleSet(x, preprocessing, labels, val),
        test=ExampleSet(x, preprocessing, labels, test) if len(test) else None, preprocessing=preprocessing,
    )


def audio_examples(source: str, preprocessing: Preprocessing, split: str) -> ExampleSet:
    """Clips of ``source`` for an existing audio model, through its stored preprocessing (nothing refitted).

    The model's own folder gives the split asked for when it has a test split; any other folder gives all of its
    clips, labelled when their names fit the model's pattern.

    Raises
    ------
    DataError
        The model is not an audio model, or a clip cannot be read.
    """
    if not isinstance(preprocessing, AudioPreprocessing):
        raise DataError(
            f"{source!r} holds audio, but the model was trained on {preprocessing.kind} data of shape "
            f"{tuple(preprocessing.shape)} ({preprocessing.source or 'unknown source'}); pass data like its "
            "training data, or train an audio model (vaekit train --preset fsdd --data FOLDER)"
        )
    labels_from = preprocessing.labels_from
    if _is_table(labels_from) and not _same_place(source, preprocessing.source):
        labels_from = None  # the model's table lists the clips of its own folder only
    clips = clips_of(source, labels_from, strict=False)
    labels = None
    if "label" in clips.fields and preprocessing.classes is not None:
        try:
            labels, _ = number_labels(clips.fields["label"], preprocessing.classes)
        except DataError as exc:
            logger.info("%s: no labels (%s)", source, exc)
    rows = np.arange(len(clips.paths))
    test = test_rows(clips, preprocessing.test_split) if has_split(source, preprocessing) else None
    if test is not None:
        rows = test if split == "test" else np.setdiff1d(rows, test)
    if len(rows) == 0:
        raise DataError(f"{source!r} holds no {split} clips for this model; pass a folder of clips")
    waves, _ = preprocessing.read([clips.paths[i] for i in rows])
    x = preprocessing.features(waves)
    return ExampleSet(x, preprocessing, None if labels is None else labels[rows])


def _same_place(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def has_split(source: str, preprocessing: Preprocessing) -> bool:
    """Whether ``source`` read for this model has its own train and test splits: the model's own audio folder,
    trained with a test split (``data.test_split`` or a CSV's split column)."""
    if not isinstance(preprocessing, AudioPreprocessing) or preprocessing.test_split is None:
        return False
    return _same_place(source, preprocessing.source)


class _AudioSource:
    """A folder of clips (or one clip) as log-mel spectrograms; see the module docstring."""

    priority = 50

    def matches(self, source: str) -> bool:
        return is_audio_path(source)

    def load(self, cfg: DataConfig) -> DataBundle:
        return load_audio(cfg)

    def examples(self, source: str, preprocessing: Preprocessing, data_dir: str | None, split: str) -> ExampleSet:
        return audio_examples(source, preprocessing, split)

    def has_test_split(self, source: str, preprocessing: Preprocessing) -> bool:
        return has_split(source, preprocessing)


SOURCES.register("audio")(_AudioSource())

"""How the verbs write audio examples: WAV files (phase by Griffin-Lim) and a picture of their spectrograms.

The writer of the ``audio`` modality (:data:`vaekit.apps.writers.WRITERS`), used by ``sample``, ``reconstruct``,
``interpolate`` and ``traverse`` for models trained on an audio folder (:mod:`vaekit.data.audio`). For N examples
arranged by the verb's :class:`~vaekit.apps.writers.Layout` and an output ``NAME.wav`` (or ``NAME.png``) it writes::

    NAME.wav          every clip in the layout's reading order, 0.25 s of silence between them (listen to this)
    NAME_00[_caption].wav, NAME_01...   each clip alone (only when N > 1), captions from the layout's row/column
    NAME.png          the log-mel spectrograms in the layout's grid (low frequencies at the bottom, the top 80 dB
                      of the picture in the magma colour map), with the layout's captions and title

Examples are decoded model inputs (standardized log-mel spectrograms); :meth:`AudioPreprocessing.to_waveforms`
turns them into sound with the model's own STFT and mel settings and ``griffin_lim_iters`` Griffin-Lim iterations
(a verb's ``writer_options={"griffin_lim_iters": N}``, ``--griffin-lim-iters N`` at the command line; default
the model's, 64). A clip that comes out louder than full scale is scaled down to peak at 0.99 (with a warning)
rather than clipped, which would distort it; quieter clips keep their level. Every file is written atomically.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from vaekit.apps.writers import WRITERS, Layout
from vaekit.data.audio import AudioPreprocessing, wav_bytes
from vaekit.errors import ConfigError, DataError
from vaekit.files import atomic_write_bytes, check_file_targets
from vaekit.models import LatentVariableModel
from vaekit.plots import save_image_grid

logger = logging.getLogger(__name__)

GAP_SECONDS = 0.25  # silence between the clips of the sequence file
FULL_SCALE = 0.99  # the peak a decoded clip louder than full scale is scaled down to


def audio_record(model: LatentVariableModel) -> AudioPreprocessing:
    """The model's audio preprocessing record, or DataError for a model not trained on audio."""
    record = model.preprocessing
    if not isinstance(record, AudioPreprocessing):
        raise DataError(
            "this model was not trained on audio (it has no STFT and mel settings), so its examples cannot be "
            "written as sound; train it on an audio folder (vaekit train --preset fsdd --data FOLDER)"
        )
    return record


def _slug(text: str) -> str:
    """``text`` safe in a file name: runs of other characters become one ``-`` between the kept ones (a sign
    stays: ``z[0] -3`` gives ``z-0--3``)."""
    return "-".join(part for part in re.split(r"[^A-Za-z0-9.+-]+", text) if part)


def clip_paths(out: Path, n: int, layout: Layout) -> list[Path]:
    """The file of each clip alone: ``NAME_<i>[_<row caption>][_<column caption>].wav``, i in reading order."""
    width = max(2, len(str(n - 1)))
    paths = []
    for i in range(n):
        row, col = divmod(i, max(1, layout.ncol))
        captions = [layout.row_labels[row] if row < len(layout.row_labels) else "",
                    layout.col_labels[col] if col < len(layout.col_labels) else ""]
        tail = "".join(f"_{_slug(c)}" for c in captions if _slug(c))
        paths.append(out.with_name(f"{out.stem}_{i:0{width}d}{tail}.wav"))
    return paths


def within_full_scale(waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``(N, S)`` with each one that peaks above 1 scaled down to peak at :data:`FULL_SCALE` (16-bit WAV
    would clip it: audible distortion); the others unchanged. Returns (clips, each clip's peak before)."""
    peaks = np.abs(waves).max(axis=1, initial=0.0) if waves.size else np.zeros(len(waves))
    scale = np.where(peaks > 1.0, FULL_SCALE / np.maximum(peaks, 1e-12), 1.0)
    return (waves * scale[:, None]).astype(waves.dtype, copy=False), peaks


def sequence(waves: np.ndarray, sample_rate: int) -> np.ndarray:
    """Clips ``(N, S)`` one after another with ``GAP_SECONDS`` of silence between them: ``(N S + (N-1) gap,)``."""
    gap = np.zeros(round(GAP_SECONDS * sample_rate), np.float32)
    parts: list[np.ndarray] = []
    for i, wave in enumerate(waves):
        parts += [gap, wave] if i else [wave]
    return np.concatenate(parts)


class AudioWriter:
    """The ``audio`` modality: WAV files and a spectrogram picture (see the module docstring)."""

    suffixes: tuple[str, ...] = (".wav", ".png")

    def write(self, model: LatentVariableModel, x: np.ndarray, out: Path, layout: Layout) -> Path:
        """Write examples ``x`` (N, 1, n_mels, frames) as ``out.wav``, one WAV per clip and ``out.png``; returns
        the path of the sequence WAV."""
        record = audio_record(model)
        unknown = sorted(set(layout.extras) - {"griffin_lim_iters"})
        if unknown:
            raise ConfigError(f"unknown writer option {unknown[0]!r} for audio; the one option is griffin_lim_iters")
        iterations = layout.extras.get("griffin_lim_iters", record.griffin_lim_iters)
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ConfigError(f"griffin_lim_iters must be a positive integer, got {iterations!r}; 32 to 100 is usual")
        wav = out if out.suffix.lower() == ".wav" else out.with_suffix(".wav")  # out.WAV stays out.WAV
        png = out.with_suffix(".png")
        paths = clip_paths(wav, len(x), layout) if len(x) > 1 else []  # one clip: out.wav alone
        check_file_targets(png, wav, *paths)  # before any file is written, so none is left half a set
        waves, peaks = within_full_scale(record.to_waveforms(x, iterations))  # (N, S)
        save_image_grid(record.pictures(x), png, nrow=layout.ncol, row_labels=layout.row_labels,
                        col_labels=layout.col_labels, title=layout.title)
        atomic_write_bytes(wav, wav_bytes(sequence(waves, record.sample_rate), record.sample_rate))
        for path, wave in zip(paths, waves if paths else waves[:0], strict=True):
            atomic_write_bytes(path, wav_bytes(wave, record.sample_rate))
        if (peaks > 1.0).any():
            logger.warning("%d decoded clip(s) peaked above full scale (up to %.2f): scaled down to a peak of %g "
                           "rather than clipped", int((peaks > 1.0).sum()), float(peaks.max()), FULL_SCALE)
        logger.info("wrote %s (%d clips of %.2f s, Griffin-Lim %d iterations), %s%s", wav, len(waves), record.seconds,
                    iterations, png, f" and {paths[0].name} ... {paths[-1].name}" if paths else "")
        return wav


WRITERS.register("audio")(AudioWriter())

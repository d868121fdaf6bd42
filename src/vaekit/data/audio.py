"""Audio as data: clips become fixed-length log-mel spectrograms ``(1, n_mels, frames)``, and go back to sound.

::

    WAV / FLAC / OGG ──soundfile──> float samples, channels averaged (stereo mixed down to mono)
        ──librosa.resample (soxr)──> sample_rate ──crop or pad with silence──> clip_samples ──+ dither──>
        ──librosa mel spectrogram (power, Slaney mel filters)──> dB = 10 log10(max(power, 1e-10))
        ──(dB - db_mean) / db_std──> x (1, n_mels, frames)                              the model's input

    x ──* db_std + db_mean──> dB ──> power ──librosa mel_to_stft (non-negative least squares)──> |STFT|
        ──Griffin-Lim (librosa.griffinlim, fixed seed)──> samples ──soundfile──> 16-bit WAV

Every parameter of both directions is kept in :class:`AudioPreprocessing`, the preprocessing record saved with
an audio model (``metadata.json``, kind ``audio``), so decoding uses exactly the STFT and mel settings the model
was trained with. ``db_mean`` and ``db_std`` are one mean and one standard deviation of all the training split's
dB values (not one per time-frequency cell): a spectrogram keeps its shape, silence stays low everywhere.

Dither: a seeded Gaussian noise of one 16-bit step (``DITHER`` = 1/32768, standard deviation), a different draw
per file (seeded by the file's name), is added to every clip before the spectrogram, as speech front ends do
(Kaldi's ``dither``). Without it the silence a short clip is padded with is exactly constant, and a likelihood
with learned scales can put unbounded density on those cells; with it silence reads as a noise floor near -70 dB.

Mel filters, resampling, the inverse mel transform and Griffin-Lim (Griffin and Lim 1984, "Signal estimation
from modified short-time Fourier transform", with the fast momentum of Perraudin et al. 2013) come from librosa;
files are read and written with soundfile (libsndfile). Both are the ``audio`` extra, imported on first use.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from vaekit.data.preprocessing import PREPROCESSINGS, Preprocessing
from vaekit.errors import DataError
from vaekit.extras import import_optional

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
DITHER = 1.0 / 32768  # standard deviation of the dither: one step of 16-bit audio
POWER_FLOOR = 1e-10  # power floor of the dB conversion (-100 dB)
GRIFFIN_LIM_ITERS = 64  # default Griffin-Lim iterations when decoding to sound
TOP_DB = 80.0  # the dynamic range pictures of spectrograms show
PIXELS_PER_BIN = 2  # pictures draw each (mel band, frame) cell as 2 x 2 pixels
GRIFFIN_LIM_SEED = 0  # the random initial phase of Griffin-Lim, fixed so decoding is reproducible
_READ_ERRORS = (RuntimeError, OSError, ValueError, TypeError, EOFError)  # soundfile.LibsndfileError is a RuntimeError


def soundfile() -> ModuleType:
    """The soundfile module (extra ``audio``)."""
    return import_optional("soundfile", "audio", "reading and writing audio", DataError)


def librosa() -> ModuleType:
    """The librosa module (extra ``audio``)."""
    return import_optional("librosa", "audio", "audio spectrograms", DataError)


@dataclass(frozen=True)
class AudioPreprocessing(Preprocessing):
    """How clips become model input and back: the preprocessing record of an audio model (kind ``audio``).

    The model input ``x`` of shape :attr:`shape` = ``(1, n_mels, frames)`` is the standardized log-mel
    spectrogram; :meth:`apply` leaves it as it is (the example sets already hold standardized spectrograms).

    Parameters
    ----------
    shape, source
        As :class:`vaekit.data.Preprocessing`; ``kind`` is ``"audio"``.
    sample_rate
        Hz; every clip is resampled to it.
    clip_samples
        Samples per clip after cropping or padding.
    clip_align
        ``center`` or ``start``: where a clip is cropped or padded (see :func:`fix_length`).
    n_fft, hop_length, n_mels
        STFT size and hop in samples, mel bands (``frames = 1 + clip_samples // hop_length``, centred frames).
    fmin, fmax
        Frequency range of the mel filters in Hz (``fmax`` ``None``: sample_rate / 2).
    db_mean, db_std
        Standardization of the dB values, fitted on the training split: ``x = (dB - db_mean) / db_std``.
    dither
        Standard deviation of the dither added to clips read from files (0: none).
    labels_from, classes, test_split
        Where labels came from (``data.labels_from``), the class names in label order (``None``: no labels) and
        the test-split rule (``data.test_split``), used again when the model reads its data.
    griffin_lim_iters
        Default Griffin-Lim iterations of :meth:`to_waveforms`.
    """

    kind: str = "audio"
    sample_rate: int = 16000
    clip_samples: int = 16000
    clip_align: str = "center"
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    db_mean: float = 0.0
    db_std: float = 1.0
    dither: float = DITHER
    labels_from: str | None = None
    classes: tuple[str, ...] | None = None
    test_split: str | None = None
    griffin_lim_iters: int = GRIFFIN_LIM_ITERS

    modality: ClassVar[str] = "audio"  # what the verbs write (vaekit.apps.writers.WRITERS)

    def __post_init__(self) -> None:
        if self.kind != "audio":
            raise DataError(f"an audio preprocessing record has kind 'audio', got {self.kind!r}; the model file "
                            "is corrupted")
        expected = (1, self.n_mels, self.frames)
        if tuple(self.shape) != expected:
            raise DataError(
                f"audio preprocessing shape {tuple(self.shape)} does not match its STFT settings {expected}; "
                "the model file is corrupted"
            )
        if not self.db_std > 0:
            raise DataError(f"audio preprocessing db_std must be positive, got {self.db_std}; the model file is "
                            "corrupted")

    @property
    def frames(self) -> int:
        """STFT frames per clip (centred frames: ``1 + clip_samples // hop_length``)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def seconds(self) -> float:
        """Clip length in seconds."""
        return self.clip_samples / self.sample_rate

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioPreprocessing:
        """Rebuild from :meth:`to_dict` output (lists become tuples); unknown keys raise :class:`DataError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(f"unknown audio preprocessing key {unknown[0]!r}; the model was saved by a newer "
                            "vaekit, upgrade it")
        tuples = ("shape", "mean", "std", "columns", "image_size", "classes")
        try:
            kwargs: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in d.items()}
            return cls(**kwargs)
        except TypeError as exc:
            raise DataError(f"stored audio preprocessing is incomplete ({exc}); the model file is corrupted") from None

    # -- clips -> model input ------------------------------------------------------------------------------------
    def decibels(self, waves: np.ndarray) -> np.ndarray:
        """Log-mel spectrograms in dB of clips ``(N, clip_samples)``: float32 ``(N, n_mels, frames)``."""
        mel = librosa().feature.melspectrogram(
            y=np.asarray(waves, np.float32), sr=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
            n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, power=2.0,
        )
        return (10.0 * np.log10(np.maximum(mel, POWER_FLOOR))).astype(np.float32)

    def features(self, waves: np.ndarray) -> np.ndarray:
        """Model input of clips ``(N, clip_samples)``: float32 ``(N, 1, n_mels, frames)``."""
        db = self.decibels(waves)
        return ((db - np.float32(self.db_mean)) / np.float32(self.db_std))[:, None]

    def standardized(self, decibels: np.ndarray) -> np.ndarray:
        """dB spectrograms ``(N, n_mels, frames)`` as model input ``(N, 1, n_mels, frames)``."""
        return ((np.asarray(decibels, np.float32) - np.float32(self.db_mean)) / np.float32(self.db_std))[:, None]

    # -- model input -> sound ------------------------------------------------------------------------------------
    def to_decibels(self, x: np.ndarray) -> np.ndarray:
        """dB spectrograms ``(N, n_mels, frames)`` of model-space examples ``(N, 1, n_mels, frames)``."""
        x = np.asarray(x, np.float64).reshape(len(x), self.n_mels, self.frames)
        return x * self.db_std + self.db_mean

    def to_waveforms(self, x: np.ndarray, n_iter: int | None = None) -> np.ndarray:
        """Clips of model-space examples ``(N, 1, n_mels, frames)``: float32 ``(N, clip_samples)``.

        The mel power spectrogram is mapped back to STFT magnitudes by non-negative least squares
        (``librosa.feature.inverse.mel_to_stft``) and the phase is estimated by ``n_iter`` iterations of
        Griffin-Lim (default :attr:`griffin_lim_iters`) from a fixed random start, so the same input always gives
        the same clip.
        """
        n_iter = self.griffin_lim_iters if n_iter is None else n_iter
        if n_iter < 1:
            raise DataError(f"Griffin-Lim needs at least 1 iteration, got {n_iter}; pass --griffin-lim-iters 32 "
                            "or more")
        lr = librosa()
        power = np.power(10.0, self.to_decibels(x) / 10.0)  # (N, M, T)
        magnitude = lr.feature.inverse.mel_to_stft(
            power, sr=self.sample_rate, n_fft=self.n_fft, power=2.0, fmin=self.fmin, fmax=self.fmax
        )  # (N, 1 + n_fft / 2, T)
        waves = lr.griffinlim(
            magnitude, n_iter=n_iter, hop_length=self.hop_length, n_fft=self.n_fft, length=self.clip_samples,
            random_state=GRIFFIN_LIM_SEED,
        )
        return np.asarray(waves, np.float32).reshape(len(x), self.clip_samples)

    def pictures(self, x: np.ndarray) -> np.ndarray:
        """RGB pictures ``(N, 3, 2 n_mels, 2 frames)`` in [0, 1] of model-space examples ``(N, 1, n_mels, frames)``,
        for figures: the top ``TOP_DB`` dB of the batch in the magma colour map, low bands at the bottom, each
        (band, frame) cell 2 x 2 pixels."""
        import matplotlib

        db = self.to_decibels(x)  # (N, M, T); NaN examples (blank cells of a grid) stay NaN
        top = float(np.nanmax(db)) if np.isfinite(db).any() else 0.0
        level = np.clip((db - (top - TOP_DB)) / TOP_DB, 0.0, 1.0)[:, ::-1, :]  # low frequencies at the bottom
        rgb = matplotlib.colormaps["magma"](np.nan_to_num(level))[..., :3]  # (N, M, T, 3)
        rgb[np.isnan(level)] = np.nan
        rgb = rgb.repeat(PIXELS_PER_BIN, axis=1).repeat(PIXELS_PER_BIN, axis=2)
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)

    # -- files -------------------------------------------------------------------------------------------------
    def read(self, paths: list[Path]) -> tuple[np.ndarray, dict[str, int]]:
        """Clips of ``paths`` at this record's rate and length, dithered: float32 ``(N, clip_samples)``, and
        counts of the clips ``cropped`` and ``padded`` (see :func:`read_clips`)."""
        return read_clips(paths, self.sample_rate, self.clip_samples, self.clip_align, self.dither)


PREPROCESSINGS.register("audio")(AudioPreprocessing)


# -- reading and writing clips ---------------------------------------------------------------------------------
def read_clip(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """One file's samples, channels averaged, resampled to ``sample_rate`` (``None``: the file's own rate).

    Returns
    -------
    tuple
        (float32 samples ``(S,)`` in [-1, 1] for integer formats, the sample rate in Hz).

    Raises
    ------
    DataError
        The file cannot be decoded (damaged, not audio, or a sample format libsndfile does not read), holds no
        samples, or holds NaN or infinite samples.
    """
    sf = soundfile()
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, channels)
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split())[:160]
        raise DataError(
            f"cannot read audio file {str(path)!r} ({reason}); it is damaged, not audio, or in a sample format "
            "libsndfile does not decode: convert it to 16-bit PCM WAV or FLAC, or remove it"
        ) from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {str(path)!r} holds no samples (length 0); remove it or record it again")
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # stereo (or more) mixed down to mono
    if not np.isfinite(samples).all():
        raise DataError(f"audio file {str(path)!r} holds NaN or infinite samples; re-export it")
    if sample_rate is not None and rate != sample_rate:
        samples = librosa().resample(samples, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
        rate = sample_rate
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def fix_length(samples: np.ndarray, length: int, align: str = "center") -> np.ndarray:
    """``samples`` (S,) cropped or padded with zeros (silence) to ``length``.

    ``center`` crops (or pads) equally at both ends, one sample more at the end when the difference is odd;
    ``start`` keeps the beginning and crops (or pads) the end.
    """
    excess = len(samples) - length
    if excess >= 0:
        start = excess // 2 if align == "center" else 0
        return samples[start : start + length]
    before = -excess // 2 if align == "center" else 0
    return np.pad(samples, (before, -excess - before))


def dither_noise(name: str, length: int, scale: float) -> np.ndarray:
    """Seeded Gaussian dither ``(length,)`` of standard deviation ``scale``, a pure function of a file's name."""
    generator = np.random.default_rng(zlib.crc32(name.encode()))
    return (generator.standard_normal(length) * scale).astype(np.float32)


def read_clips(
    paths: list[Path], sample_rate: int, clip_samples: int, align: str, dither: float
) -> tuple[np.ndarray, dict[str, int]]:
    """Clips of ``paths`` resampled, cropped or padded (:func:`fix_length`) and dithered: float32
    ``(N, clip_samples)``, and how many were ``cropped`` (longer than the clip) and ``padded`` (shorter)."""
    waves = np.empty((len(paths), clip_samples), np.float32)
    counts = {"cropped": 0, "padded": 0}
    for i, path in enumerate(paths):
        samples, _ = read_clip(path, sample_rate)
        if len(samples) != clip_samples:
            counts["cropped" if len(samples) > clip_samples else "padded"] += 1
        waves[i] = fix_length(samples, clip_samples, align)
        if dither > 0:
            waves[i] += dither_noise(path.name, clip_samples, dither)
    return waves, counts


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV file of ``samples`` (S,), in memory; samples beyond [-1, 1] are clipped."""
    buffer = io.BytesIO()
    soundfile().write(buffer, np.clip(np.asarray(samples, np.float32), -1.0, 1.0), sample_rate, format="WAV",
                      subtype="PCM_16")
    return buffer.getvalue()


def spectral_convergence(reference: np.ndarray, estimate: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Spectral convergence ``||S - S_hat||_F / ||S||_F`` of STFT magnitudes, per clip (lower is better; 0 exact).

    The measure of phase-reconstruction quality of Sturmel and Daudet 2011 ("Signal reconstruction from STFT
    magnitude: a state of the art") and of Arik et al. 2018 (arXiv:1808.06719).

    Parameters
    ----------
    reference, estimate
        Clips ``(N, S)`` at the same rate and length.
    n_fft, hop_length
        STFT size and hop in samples.

    Returns
    -------
    np.ndarray
        float64 ``(N,)``.
    """
    lr = librosa()
    s_ref = np.abs(lr.stft(np.asarray(reference, np.float32), n_fft=n_fft, hop_length=hop_length))  # (N, F, T)
    s_est = np.abs(lr.stft(np.asarray(estimate, np.float32), n_fft=n_fft, hop_length=hop_length))
    diff = np.sqrt(((s_ref - s_est) ** 2).reshape(len(s_ref), -1).sum(1))
    return diff / np.maximum(np.sqrt((s_ref**2).reshape(len(s_ref), -1).sum(1)), 1e-12)

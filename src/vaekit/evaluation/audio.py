"""What ``evaluate`` adds for audio models (:data:`vaekit.evaluation.report.REPORT_EXTENSIONS`, modality ``audio``):
how well sound comes back from the log-mel spectrograms the model works on.

For the first ``CLIPS`` evaluated clips (fewer if there are fewer), each spectrogram is turned into sound the way
the verbs do it (NNLS mel inversion and Griffin-Lim with the model's iterations,
:meth:`vaekit.data.audio.AudioPreprocessing.to_waveforms`) and analysed again; the report gives the spectral
convergence ``||M - M_hat||_F / ||M||_F`` of mel magnitudes (``M = 10^(dB / 20)``), averaged over clips
(Sturmel and Daudet 2011; Arik et al. 2018, arXiv:1808.06719):

- ``griffin_lim_mel_sc``: the clip's own spectrogram sent to sound and back: what phase reconstruction loses;
- ``reconstruction_mel_sc``: the model's reconstruction (decoded posterior mean) sent to sound, against the clip's
  spectrogram: what a listener of ``vaekit reconstruct`` hears missing.

The benchmark (``benchmarks/fsdd.py``) also reports the STFT-magnitude spectral convergence against the original
waveforms, which needs the files; this report needs only the spectrograms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vaekit.data.audio import AudioPreprocessing
from vaekit.evaluation.report import REPORT_EXTENSIONS, EvalReport
from vaekit.models import LatentVariableModel

CLIPS = 32  # clips sent through Griffin-Lim (about 0.1-0.5 s each on one core)


def mel_spectral_convergence(record: AudioPreprocessing, x: np.ndarray, waves: np.ndarray) -> np.ndarray:
    """Spectral convergence of mel magnitudes: spectrograms ``x`` (N, 1, M, T) in model units against the log-mel
    spectrograms of clips ``waves`` (N, S); float64 (N,)."""
    target = np.power(10.0, record.to_decibels(x) / 20.0)  # (N, M, T) magnitudes
    estimate = np.power(10.0, record.decibels(waves).astype(np.float64) / 20.0)
    return np.sqrt(((target - estimate) ** 2).sum((1, 2)) / np.maximum((target**2).sum((1, 2)), 1e-300))


class AudioReport:
    """Griffin-Lim spectral convergence of clips and of their reconstructions (see the module docstring)."""

    omits: tuple[str, ...] = ()

    @torch.no_grad()
    def measure(
        self, model: LatentVariableModel, x: torch.Tensor, examples: Any, report: EvalReport, seed: int
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        record = model.preprocessing
        if not isinstance(record, AudioPreprocessing):
            return {}, []
        x = x[:CLIPS]
        clips = x.float().cpu().numpy()
        extras: dict[str, Any] = {"griffin_lim_clips": len(clips), "griffin_lim_iters": record.griffin_lim_iters}
        extras["griffin_lim_mel_sc"] = float(mel_spectral_convergence(record, clips, record.to_waveforms(clips)).mean())
        labels = getattr(examples, "labels", None)
        rows = [("Griffin-Lim (mel SC)", f"{extras['griffin_lim_mel_sc']:.4f}  spectrogram -> sound -> spectrogram, "
                                         f"mean of {len(clips)} clips, {record.griffin_lim_iters} iterations")]
        if not model.num_classes or labels is not None:
            y = None if labels is None or not model.num_classes else torch.as_tensor(labels[: len(x)], device=x.device)
            recon = model.reconstruct(x, y=y).float().cpu().numpy()
            sc = mel_spectral_convergence(record, clips, record.to_waveforms(recon))
            extras["reconstruction_mel_sc"] = float(sc.mean())
            rows.append(("reconstructed sound (mel SC)", f"{sc.mean():.4f}  reconstruction -> sound, against the clip"))
        return extras, rows


REPORT_EXTENSIONS.register("audio")(AudioReport())

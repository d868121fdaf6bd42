"""Evaluation: the honest report of a trained model (ELBO, importance-weighted NLL, bits/dim, active units),
sample quality (FID, KID, precision/recall in a classifier's feature space) and linear/k-NN probes of the codes.

::

    report.py      evaluate() -> EvalReport
    quality.py     sample_quality() -> QualityReport, and fid / kid / precision_recall / class_accuracy
    classifier.py  the small classifier whose features the quality metrics use (trained once, cached)
    probing.py     probe() -> ProbeReport
    text.py        what evaluate reports for text (perplexity, bits/token, OOV words, mutual information)
"""

from vaekit.evaluation import audio as _audio  # noqa: F401  (registers the audio report extension)
from vaekit.evaluation import text as _text  # noqa: F401  (registers the text report extension)
from vaekit.evaluation.probing import ProbeReport, probe
from vaekit.evaluation.quality import QualityReport, sample_quality
from vaekit.evaluation.report import EvalReport, evaluate

__all__ = ["EvalReport", "ProbeReport", "QualityReport", "evaluate", "probe", "sample_quality"]

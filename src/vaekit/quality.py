"""The sample-quality metrics under their documented path, ``vaekit.quality``; the code lives in
:mod:`vaekit.evaluation.quality`."""

from vaekit.evaluation.quality import (
    QualityReport,
    class_accuracy,
    fid,
    frechet_distance,
    kid,
    knn_radii,
    mmd2_unbiased,
    precision_recall,
    sample_quality,
)

__all__ = [
    "QualityReport",
    "class_accuracy",
    "fid",
    "frechet_distance",
    "kid",
    "knn_radii",
    "mmd2_unbiased",
    "precision_recall",
    "sample_quality",
]

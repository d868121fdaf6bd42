"""The scikit-learn estimators under their documented path, ``vaekit.estimators``; the code lives in
:mod:`vaekit.apps.estimators`."""

from vaekit.apps.estimators import AnomalyDetector, VAETransformer

__all__ = ["AnomalyDetector", "VAETransformer"]

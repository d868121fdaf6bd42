"""Applications of a trained model: the verbs that generate, reconstruct, embed and score, and the scikit-learn
estimators.

::

    sampling.py        sample()        draws from the prior, decoded
    reconstruction.py  reconstruct()   x -> q(z|x) -> p(x|z)
    interpolation.py   interpolate()   paths between two codes (INTERPOLATIONS: linear, spherical)
    traversal.py       traverse()      one latent dimension at a time
    embedding.py       embed()         posterior means and log-variances, as arrays or tables
    scoring.py         score()         anomaly scores (SCORES: iwae, elbo, recon) and thresholds
    latent_map.py      plot_latent()   a 2-D map of the codes (PROJECTIONS: auto, first, pca)
    estimators.py      AnomalyDetector, VAETransformer (scikit-learn; imported on first use)
    neighbors.py       AnomalyDetector's neighbour terms and its files (save / load, vaekit score)
    recommendation.py  recommend()     the top items for a user of a recommender (interaction data)
    text.py            sample_text(), reconstruct_text(), interpolate_text(), shuffle_auroc(): sentences in and out
    writers.py         WRITERS: how each modality's examples are written (PNG grids, heat maps, ...)
"""

from vaekit.apps import audio as _audio  # noqa: F401  (registers the "audio" writer)
from vaekit.apps.embedding import embed
from vaekit.apps.interpolation import interpolate
from vaekit.apps.latent_map import plot_latent
from vaekit.apps.recommendation import Recommendations, recommend
from vaekit.apps.reconstruction import reconstruct
from vaekit.apps.sampling import sample
from vaekit.apps.scoring import ScoreResult, score
from vaekit.apps.text import interpolate_text, reconstruct_text, sample_text, shuffle_auroc  # + the text writer
from vaekit.apps.traversal import traverse

__all__ = ["Recommendations", "ScoreResult", "embed", "interpolate", "interpolate_text", "plot_latent", "recommend",
           "reconstruct", "reconstruct_text", "sample", "sample_text", "score", "shuffle_auroc", "traverse"]

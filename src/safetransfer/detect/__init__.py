"""Poisoned-sample detection: which training samples carry a backdoor trigger?

Detectors (each returns a :class:`DetectionResult` with per-sample scores and ``is_clean``):

- :func:`centroid_distance`: per-label outliers in an embedding (pixels, PCA, t-SNE, model features);
- :func:`spectral_signature`: Tran et al. 2018, on centred per-label features;
- :func:`activation_clustering`: Chen et al. 2018, ICA + 2-means per label;
- :func:`scan_untangling`: SCAn (Tang et al. 2021): which class is poisoned, then its two subgroups;
- :func:`multilayer_detection`: every hidden layer's most abnormal activation (after FLARE, Hou et
  al. 2025) with the penultimate features, a two-Gaussian split per label, SCAn's per-label decision;
- :func:`spectre`: SPECTRE (Hayase et al. 2021): robust whitening and the QUE score, given a count;
- :func:`neural_cleanse`: Neural Cleanse (Wang et al. 2019): the smallest trigger per class, on a model.

:func:`score_detection` compares a result with the known poison mask (recall, FPR, precision, AUROC).
"""

from safetransfer.detect.base import DetectionQuality, DetectionResult, score_detection
from safetransfer.detect.centroid import centroid_distance
from safetransfer.detect.clustering import activation_clustering
from safetransfer.detect.multilayer import multilayer_detection
from safetransfer.detect.neural_cleanse import neural_cleanse
from safetransfer.detect.spectral import spectral_signature
from safetransfer.detect.spectre import spectre
from safetransfer.detect.untangling import scan_untangling

__all__ = [
    "DetectionQuality", "DetectionResult", "activation_clustering", "centroid_distance", "multilayer_detection",
    "neural_cleanse", "score_detection", "scan_untangling", "spectral_signature", "spectre",
]

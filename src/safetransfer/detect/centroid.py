"""Per-label centroid distance: the far outliers of each label in some embedding.

The classic BadNets walk-through embeds the pixels (t-SNE), and looks for the samples of the
target label that lie far from the label's centre: poisoned samples look like their source
class, not like the target. Here the embedding is any feature matrix (pixels, PCA, t-SNE or
a model's features, see :mod:`safetransfer.detect.features`); each sample's score is its
distance to its label's centre (the coordinate-wise median, robust to the outliers
themselves) in robust standard deviations of that label's distances; scores above ``k`` are
flagged.
"""

from __future__ import annotations

import numpy as np

from safetransfer.detect.base import (
    DetectionResult,
    check_positive,
    per_class_detection,
    robust_z,
)


def centroid_distance(features, labels, k: float = 3.5, name: str = "features") -> DetectionResult:
    """Centroid-distance scores and verdicts; ``name`` says which embedding (for the report)."""
    check_positive("k", k)

    def score_class(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        z = robust_z(np.linalg.norm(f - np.median(f, axis=0), axis=1))
        return z, z > k, {}

    return per_class_detection(features, labels, score_class, f"centroid[{name}]", {"k": k, "embedding": name})

"""Activation clustering (Chen et al., 2018, "Detecting Backdoor Attacks on Deep Neural Networks
by Activation Clustering").

For each label: reduce its samples' features to ``n_components`` (10) with ICA (the paper's
choice; ``reduce="pca"`` also), split them into two clusters with k-means, and flag the
smaller cluster when it holds less than ``size_threshold`` (35%) of the label: poisoned
samples are classified as the target for another reason (the trigger) than the clean ones,
so their activations form a cluster of their own. ``analysis="silhouette"`` adds the paper's
second check: the split must also be real (silhouette score of the two clusters at least
``silhouette_threshold``, 0.25), which keeps clean labels whose two halves are arbitrary.
Calibrated on Fashion-MNIST with 1% BadNets poison and a small CNN's features: the clean
labels' two clusters score 0.09-0.17, the poisoned label's 0.47.

Score of a sample (for rankings and AUROC): how much closer it lies to the small cluster's
centre than to the large one's, ``d_large / (d_large + d_small)`` in ``[0, 1]``, times
``1 − (small cluster's share)`` so that small clusters in a label rank first.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from safetransfer.detect.base import DetectionResult, check_positive, per_class_detection
from safetransfer.errors import ConfigError, DataError

SILHOUETTE_SAMPLE = 1000


def reduce_dims(features: np.ndarray, n_components: int, method: str, seed: int) -> np.ndarray:
    """``features`` to at most ``n_components`` dimensions with ICA or PCA (seeded)."""
    features = features[:, features.std(axis=0) > 1e-12]  # dead units (constant features) carry nothing
    n_components = min(n_components, features.shape[1], features.shape[0] - 1)
    if n_components < 1 or features.shape[1] <= n_components:
        return features
    if method == "ica":
        import warnings

        from sklearn.decomposition import FastICA

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings on tiny classes
            # eigh whitening (the D x D covariance, n >> D) and one component at a time: 3x faster than
            # sklearn's defaults here, the same clusters (silhouettes equal to 2 decimals on Fashion-MNIST)
            for solver in ("eigh", "svd"):  # eigh fails (NaN) on a rank-deficient covariance: then the SVD
                z = FastICA(n_components=n_components, random_state=seed, max_iter=400, whiten="unit-variance",
                            whiten_solver=solver, algorithm="deflation").fit_transform(features)
                if np.isfinite(z).all():
                    return z
            raise DataError("ICA failed on these features (rank too low); use reduce='pca'.")
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed).fit_transform(features)


def activation_clustering(
    features, labels, n_components: int = 10, reduce: Literal["ica", "pca"] = "ica",
    size_threshold: float = 0.35, analysis: Literal["size", "silhouette"] = "size",
    silhouette_threshold: float = 0.25, seed: int = 0,
) -> DetectionResult:
    """Activation-clustering scores and verdicts (see the module doc)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    if reduce not in ("ica", "pca"):
        raise ConfigError(f"reduce must be 'ica' or 'pca' (got '{reduce}').")
    if analysis not in ("size", "silhouette"):
        raise ConfigError(f"analysis must be 'size' or 'silhouette' (got '{analysis}').")
    check_positive("size_threshold", size_threshold, 0.5)

    def score_class(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        z = reduce_dims(f, n_components, reduce, seed)
        km = KMeans(n_clusters=2, n_init=3, random_state=seed).fit(z)
        sizes = np.bincount(km.labels_, minlength=2)
        small = int(np.argmin(sizes))
        share = float(sizes[small] / f.shape[0])
        d = np.linalg.norm(z[:, None, :] - km.cluster_centers_[None, :, :], axis=2)
        d_small, d_large = d[:, small], d[:, 1 - small]
        scores = d_large / np.maximum(d_large + d_small, 1e-12) * (1.0 - share)
        flag_class = share < size_threshold
        silhouette = None
        if analysis == "silhouette":
            silhouette = float(silhouette_score(z, km.labels_, sample_size=min(SILHOUETTE_SAMPLE, f.shape[0]),
                                                random_state=seed))
            flag_class = flag_class and silhouette >= silhouette_threshold
        flag = (km.labels_ == small) & flag_class
        return scores, flag, {"small_share": share, "silhouette": silhouette}

    return per_class_detection(features, labels, score_class, f"activation_clustering[{reduce},{analysis}]",
                               {"n_components": n_components, "reduce": reduce, "size_threshold": size_threshold,
                                "analysis": analysis, "silhouette_threshold": silhouette_threshold, "seed": seed},
                               min_size=4)

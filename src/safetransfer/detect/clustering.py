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

``analysis="tight"`` (ours) looks for the poison as a *small, tight* cluster rather than as one
of two halves: for k = 2 .. ``max_clusters`` it runs k-means and computes each cluster's own
mean silhouette; a cluster under ``size_threshold`` of the label whose silhouette is at least
``tight_threshold`` (0.4) is flagged (the tightest one over all k). Why: when a label's clean
samples have structure of their own, 2-means splits that structure and the poison stays
hidden in one half. Measured on Rotten Tomatoes, MiniLM fine-tuned on 5% word-trigger
poison (218 of the 6,110 positive texts): 2-means splits the label 47/53 (silhouette 0.33) and
flags nothing; from k = 4 on, a cluster of 222 holds 216 of the 218 poisoned texts with
silhouette 0.45-0.46, while every clean cluster under 35% of the label scores 0.29 or less.

Score of a sample (for rankings and AUROC): how much closer it lies to the small cluster's
centre than to the large one's, ``d_large / (d_large + d_small)`` in ``[0, 1]``, times
``1 − (small cluster's share)`` so that small clusters in a label rank first.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from safetransfer.detect.base import (
    DetectionResult,
    check_positive,
    per_class_detection,
)
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
    size_threshold: float = 0.35, analysis: Literal["size", "silhouette", "tight"] = "size",
    silhouette_threshold: float = 0.25, max_clusters: int = 6, tight_threshold: float = 0.4, seed: int = 0,
) -> DetectionResult:
    """Activation-clustering scores and verdicts (see the module doc)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    if reduce not in ("ica", "pca"):
        raise ConfigError(f"reduce must be 'ica' or 'pca' (got '{reduce}').")
    if analysis not in ("size", "silhouette", "tight"):
        raise ConfigError(f"analysis must be 'size', 'silhouette' or 'tight' (got '{analysis}').")
    check_positive("size_threshold", size_threshold, 0.5)
    if max_clusters < 2:
        raise ConfigError(f"max_clusters must be at least 2 (got {max_clusters}).")
    if analysis == "tight":
        return _tight_clusters(features, labels, n_components, reduce, size_threshold, max_clusters, tight_threshold,
                               seed)

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


def _tight_clusters(features, labels, n_components: int, reduce: str, size_threshold: float, max_clusters: int,
                    tight_threshold: float, seed: int) -> DetectionResult:
    """``analysis="tight"`` of :func:`activation_clustering` (see the module doc)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_samples

    def score_class(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        z = reduce_dims(f, n_components, reduce, seed)
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(z), min(SILHOUETTE_SAMPLE, len(z)), replace=False)
        best: tuple[float, int, np.ndarray, np.ndarray] | None = None  # silhouette, cluster, labels, centres
        fallback = None
        for k in range(2, min(max_clusters, len(z) - 1) + 1):
            km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(z)
            if fallback is None:
                fallback = (km.labels_, km.cluster_centers_)
            if len(np.unique(km.labels_[sample])) < 2:
                continue
            own = silhouette_samples(z[sample], km.labels_[sample])
            shares = np.bincount(km.labels_, minlength=k) / len(z)
            for c in range(k):
                in_c = km.labels_[sample] == c
                if shares[c] >= size_threshold or not in_c.any():
                    continue
                sil = float(own[in_c].mean())
                if sil >= tight_threshold and (best is None or sil > best[0]):
                    best = (sil, c, km.labels_, km.cluster_centers_)
        if best is not None:
            sil, chosen, assign, centres = best
        else:
            assign, centres = fallback
            chosen, sil = int(np.argmin(np.bincount(assign, minlength=len(centres)))), None
        share = float(np.mean(assign == chosen))
        d = np.linalg.norm(z[:, None, :] - centres[None, :, :], axis=2)
        d_chosen = d[:, chosen]
        d_rest = np.delete(d, chosen, axis=1).min(axis=1)
        scores = d_rest / np.maximum(d_rest + d_chosen, 1e-12) * (1.0 - share)
        flag = (assign == chosen) & (best is not None)
        return scores, flag, {"small_share": share, "silhouette": sil, "clusters": len(centres)}

    return per_class_detection(features, labels, score_class, f"activation_clustering[{reduce},tight]",
                               {"n_components": n_components, "reduce": reduce, "size_threshold": size_threshold,
                                "analysis": "tight", "max_clusters": max_clusters, "tight_threshold": tight_threshold,
                                "seed": seed}, min_size=4)

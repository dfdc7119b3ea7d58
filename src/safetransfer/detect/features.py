"""Embeddings the detectors look at: raw pixels, PCA, t-SNE, or a model's penultimate features.

Spectral signatures and activation clustering work on the features of a model trained on
the (possibly poisoned) data; the classic walk-through's centroid test uses t-SNE of the
pixels. All return float32 numpy ``[N, D]``; every random choice is seeded.
"""

from __future__ import annotations

import numpy as np
import torch

from safetransfer.errors import ConfigError, DataError
from safetransfer.evaluate import predict_features

EMBEDDINGS: tuple[str, ...] = ("pixels", "pca", "tsne", "model")


def pixel_features(x: torch.Tensor) -> np.ndarray:
    """Images ``[N, C, H, W]`` flattened to ``[N, C·H·W]``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise DataError("pixel features need an image tensor [N, C, H, W] (text data: use --embedding model).")
    return x.reshape(x.shape[0], -1).float().numpy()


def pca_embedding(features: np.ndarray, n_components: int = 50, seed: int = 0) -> np.ndarray:
    """The first ``n_components`` principal components (randomised SVD, seeded)."""
    from sklearn.decomposition import PCA

    n = min(n_components, features.shape[0], features.shape[1])
    if n < 1:
        raise DataError("PCA needs at least one sample and one feature.")
    return PCA(n_components=n, svd_solver="randomized", random_state=seed).fit_transform(features).astype(np.float32)


def tsne_embedding(features: np.ndarray, seed: int = 0, pca_first: int = 50, perplexity: float = 30.0) -> np.ndarray:
    """A 2-D t-SNE map (after PCA to ``pca_first`` dimensions, the usual speed-up). Slow: O(N log N),
    about a minute per 10,000 samples on 2 cores."""
    from sklearn.manifold import TSNE

    if features.shape[0] < 5:
        raise DataError("t-SNE needs at least 5 samples.")
    reduced = pca_embedding(features, pca_first, seed) if features.shape[1] > pca_first else features
    perplexity = min(perplexity, (features.shape[0] - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced).astype(np.float32)


def model_features(model, inputs, batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """The penultimate features of a :class:`~safetransfer.models.wrapper.TransferModel` ``[N, feature_dim]``."""

    return predict_features(model, inputs, batch_size, progress).numpy()


def embed(kind: str, inputs, model=None, seed: int = 0, progress: bool = False) -> np.ndarray:
    """One of :data:`EMBEDDINGS` of ``inputs`` (``model`` needed for ``"model"``)."""
    if kind == "model":
        if model is None:
            raise ConfigError("the 'model' embedding needs a model (--model).")
        return model_features(model, inputs, progress=progress)
    if kind not in EMBEDDINGS:
        raise ConfigError(f"unknown embedding '{kind}' (known: {', '.join(EMBEDDINGS)}).")
    pixels = pixel_features(inputs)
    if kind == "pixels":
        return pixels
    if kind == "pca":
        return pca_embedding(pixels, seed=seed)
    return tsne_embedding(pixels, seed=seed)

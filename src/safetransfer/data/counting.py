"""Counting squares (Elsayed et al. 2019's reprogramming task): images of 1 to 10 white squares.

Each image is a ``grid`` x ``grid`` board of ``cell``-pixel cells; ``k`` (1..10, uniform) cells
chosen at random hold a white ``square``-pixel square, the rest stay black; the label is
``k − 1``. Generated with a seed, vectorised (no loop over images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from safetransfer.data.base import ClassificationData, train_val_test_from_pool
from safetransfer.errors import DataError

MAX_SQUARES = 10


def counting_squares_arrays(n: int, seed: int = 0, grid: int = 4, cell: int = 7, square: int = 5
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 1, grid·cell, grid·cell]`` in ``{0, 1}`` and labels ``[n]`` (count − 1)."""
    if grid * grid < MAX_SQUARES or not 0 < square <= cell:
        raise DataError(f"a {grid}x{grid} grid of {cell}-px cells cannot hold {MAX_SQUARES} {square}-px squares.")
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, MAX_SQUARES + 1, (n,), generator=gen)
    # rank the cells of each image by a random key: the `count` lowest ranks get a square
    ranks = torch.rand(n, grid * grid, generator=gen).argsort(dim=1).argsort(dim=1)
    occupied = (ranks < counts.unsqueeze(1)).float().view(n, 1, grid, grid)
    pad = (cell - square) // 2
    stamp = torch.zeros(cell, cell)
    stamp[pad : pad + square, pad : pad + square] = 1.0
    images = torch.kron(occupied, stamp.view(1, 1, cell, cell))
    return images, counts - 1


def load_counting_squares(path: str | Path | None = None, seed: int = 0, n: int = 12000) -> ClassificationData:
    """``n`` generated images (seeded), split 80/10/10; ``path`` must be ``None``."""
    if path is not None:
        raise DataError("'counting-squares' is generated; it takes no path.")
    x, y = counting_squares_arrays(n, seed)
    train, val, test = train_val_test_from_pool(x, y, 0.1, 0.1, seed)
    return ClassificationData("counting-squares", "image", [str(k) for k in range(1, MAX_SQUARES + 1)], train, val,
                              test, source="generated (Elsayed et al. 2019)").validate()

"""Image transforms in plain torch (no torchvision): resize, channels, normalisation.

All functions take and return float batches ``[N, C, H, W]``; pixel values stay in
``[0, 1]`` until :class:`Normalize`, which maps them to the model's own input space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of a batch to ``size`` (H, W)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    shrink = x.shape[-2] > hw[0] or x.shape[-1] > hw[1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink).clamp_(0.0, 1.0)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey to ``channels`` by repetition, or RGB to grey by the ITU-R 601 luma weights."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ValueError(f"Cannot convert {c}-channel images to {channels} channels.")


def prepare_images(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Resize and convert channels: pixel space ``[0, 1]`` in, pixel space out."""
    return resize(to_channels(x.float(), channels), size)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every image model.

    Keeping it inside the model means attacks and triggers work in pixel space
    ``[0, 1]`` and an ε in the model's normalised space is ``ε_pixel / std``.
    EfficientNet-Lite's ``(255·x − 127) / 128`` is ``mean = 127/255, std = 128/255``.
    """

    def __init__(self, mean: float | list[float], std: float | list[float], channels: int = 3) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        self.register_buffer("mean", mean_t.expand(channels).clone().view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", std_t.expand(channels).clone().view(1, channels, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def pixel_epsilon(self, eps_normalised: float) -> float:
        """The pixel-space ε equal to ``eps_normalised`` in this model's input space (smallest std)."""
        return float(eps_normalised * self.std.min())

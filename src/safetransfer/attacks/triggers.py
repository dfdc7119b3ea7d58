"""Image triggers for backdoors: a patch in a corner, any pixel pattern, or a blended image.

Gu et al. 2017 ("BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
Chain") and the backdoored teachers of Zhang et al. 2022 (ReMoS) use such a trigger: an
attacker who controls (part of) the training data stamps it on a share of the images and
relabels them with the target class; a model trained on them learns "trigger -> target".

Units: images are raw data-set tensors ``[N, C, H, W]`` in pixel space ``[0, 1]`` (before any
model resizing or normalisation); ``size`` and ``margin`` are pixels of that raw image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from safetransfer.errors import ConfigError

Corner = Literal["bottom-right", "bottom-left", "top-right", "top-left"]
Pattern = Literal["square", "checkerboard", "random"]
CORNERS: tuple[str, ...] = ("bottom-right", "bottom-left", "top-right", "top-left")
PATTERNS: tuple[str, ...] = ("square", "checkerboard", "random")


@dataclass(frozen=True)
class PatchTrigger:
    """A ``size`` x ``size`` patch ``margin`` pixels from a ``corner``.

    - ``pattern``: ``square`` (every pixel = ``value``), ``checkerboard`` (alternating
      ``value`` and ``1 - value``, starting with ``value`` at the patch's top-left), or
      ``random`` (a fixed seeded binary pattern of ``value`` / ``1 - value``; the same for
      every image: a trigger is a constant).
    - ``value``: the bright pixel value in ``[0, 1]``.
    - ``seed``: the ``random`` pattern's seed.
    """

    size: int = 3
    corner: Corner = "bottom-right"
    margin: int = 1
    pattern: Pattern = "square"
    value: float = 1.0
    seed: int = 0

    def validate(self, height: int | None = None, width: int | None = None) -> "PatchTrigger":
        problems = []
        if self.size < 1:
            problems.append(f"size must be at least 1 pixel (got {self.size})")
        if self.margin < 0:
            problems.append(f"margin must not be negative (got {self.margin})")
        if self.corner not in CORNERS:
            problems.append(f"corner must be one of {', '.join(CORNERS)} (got '{self.corner}')")
        if self.pattern not in PATTERNS:
            problems.append(f"pattern must be one of {', '.join(PATTERNS)} (got '{self.pattern}')")
        if not 0.0 <= self.value <= 1.0:
            problems.append(f"value must lie in [0, 1] (got {self.value})")
        if height is not None and width is not None and self.size + self.margin > min(height, width):
            problems.append(
                f"a {self.size}-pixel patch {self.margin} pixels from the edge does not fit a {height}x{width} image"
            )
        if problems:
            raise ConfigError("Bad trigger: " + "; ".join(problems) + ".")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def patch(self, channels: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The patch ``[channels, size, size]`` in pixel space."""
        s = self.size
        if self.pattern == "square":
            bits = torch.ones(s, s, dtype=torch.bool)
        elif self.pattern == "checkerboard":
            r = torch.arange(s)
            bits = (r.view(-1, 1) + r.view(1, -1)) % 2 == 0
        else:
            gen = torch.Generator().manual_seed(self.seed)
            bits = torch.rand(s, s, generator=gen) < 0.5
        hi = torch.tensor(self.value, dtype=dtype)
        values = torch.where(bits, hi, 1.0 - hi)
        return values.to(dtype).expand(channels, s, s).clone()

    def location(self, height: int, width: int) -> tuple[slice, slice]:
        """Row and column slices of the patch in an image of ``height`` x ``width``."""
        self.validate(height, width)
        s, m = self.size, self.margin
        rows = slice(height - m - s, height - m) if self.corner.startswith("bottom") else slice(m, m + s)
        cols = slice(width - m - s, width - m) if self.corner.endswith("right") else slice(m, m + s)
        return rows, cols

    def mask(self, height: int, width: int) -> torch.Tensor:
        """``[H, W]`` bool: where the trigger writes."""
        out = torch.zeros(height, width, dtype=torch.bool)
        rows, cols = self.location(height, width)
        out[rows, cols] = True
        return out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of images ``x`` ``[N, C, H, W]`` with the trigger stamped on every one."""
        _check_image_batch(x, "patch trigger")
        n, c, h, w = x.shape
        rows, cols = self.location(h, w)
        out = x.clone()
        out[:, :, rows, cols] = self.patch(c, x.dtype).to(x.device)
        return out


def _check_image_batch(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ConfigError(
            f"A {what} needs an image tensor [N, C, H, W]"
            + (f" (got shape {tuple(x.shape)})" if isinstance(x, torch.Tensor) else f" (got {type(x).__name__})")
            + "."
        )


# BadNets' watermark as the classic Fashion-MNIST walk-through stamps it: five white pixels in
# the bottom-right corner, (row, col) counted from the end (-1 = the last row / column).
BADNETS_WATERMARK: tuple[tuple[int, int], ...] = ((-1, -1), (-1, -3), (-3, -1), (-3, -3), (-2, -2))


@dataclass(frozen=True)
class PixelTrigger:
    """Any pixel pattern: the listed ``(row, col)`` pixels set to ``value`` in every channel.

    Negative indices count from the bottom / right edge as in Python (``-1`` is the last row).
    The default is BadNets' 5-pixel watermark (:data:`BADNETS_WATERMARK`).
    """

    pixels: tuple[tuple[int, int], ...] = BADNETS_WATERMARK
    value: float = 1.0

    def validate(self, height: int | None = None, width: int | None = None) -> "PixelTrigger":
        problems = []
        if not self.pixels:
            problems.append("it needs at least one pixel")
        if not 0.0 <= self.value <= 1.0:
            problems.append(f"value must lie in [0, 1] (got {self.value})")
        if height is not None and width is not None:
            outside = [p for p in self.pixels if not (-height <= p[0] < height and -width <= p[1] < width)]
            if outside:
                problems.append(f"pixels {outside} lie outside a {height}x{width} image")
        if problems:
            raise ConfigError("Bad pixel trigger: " + "; ".join(problems) + ".")
        return self

    def to_dict(self) -> dict:
        return {"pixels": [list(p) for p in self.pixels], "value": self.value}

    def mask(self, height: int, width: int) -> torch.Tensor:
        """``[H, W]`` bool: where the trigger writes."""
        self.validate(height, width)
        out = torch.zeros(height, width, dtype=torch.bool)
        rows = torch.tensor([p[0] % height for p in self.pixels])
        cols = torch.tensor([p[1] % width for p in self.pixels])
        out[rows, cols] = True
        return out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of images ``x`` ``[N, C, H, W]`` with the pixels set on every one."""
        _check_image_batch(x, "pixel trigger")
        where = self.mask(x.shape[2], x.shape[3]).to(x.device)
        return torch.where(where, torch.tensor(self.value, dtype=x.dtype, device=x.device), x)


@dataclass(frozen=True, eq=False)
class BlendTrigger:
    """A whole-image pattern blended in: ``x' = (1 − alpha)·x + alpha·pattern`` (Chen et al. 2017,
    "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning").

    ``pattern``: ``[H, W]`` or ``[C, H, W]`` in ``[0, 1]`` at the images' size (``None``: a seeded
    uniform-noise pattern, made at the first image size it meets); ``alpha`` in ``(0, 1]``.
    """

    pattern: torch.Tensor | None = None
    alpha: float = 0.1
    seed: int = 0

    def validate(self, height: int | None = None, width: int | None = None) -> "BlendTrigger":
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"Bad blend trigger: alpha must lie in (0, 1] (got {self.alpha}).")
        if self.pattern is not None and height is not None and tuple(self.pattern.shape[-2:]) != (height, width):
            raise ConfigError(
                f"Bad blend trigger: the pattern is {tuple(self.pattern.shape[-2:])}, the images {height}x{width}."
            )
        return self

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "seed": self.seed, "pattern": None if self.pattern is None else "custom"}

    def pattern_for(self, channels: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        self.validate(height, width)
        if self.pattern is None:
            gen = torch.Generator().manual_seed(self.seed)
            return torch.rand(1, height, width, generator=gen).to(dtype).expand(channels, height, width)
        p = self.pattern.to(dtype)
        return (p.unsqueeze(0) if p.dim() == 2 else p).expand(channels, height, width)

    def mask(self, height: int, width: int) -> torch.Tensor:
        return torch.ones(height, width, dtype=torch.bool)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_batch(x, "blend trigger")
        p = self.pattern_for(x.shape[1], x.shape[2], x.shape[3], x.dtype).to(x.device)
        return (1.0 - self.alpha) * x + self.alpha * p


ImageTrigger = PatchTrigger | PixelTrigger | BlendTrigger


def poison_images(
    x: torch.Tensor, y: torch.Tensor, trigger: ImageTrigger, rate: float, target: int, seed: int = 0,
    keep_target: bool = True, source: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamp ``trigger`` on a seeded share ``rate`` of ``x`` and relabel those as ``target``.

    Returns ``(x_poisoned, y_poisoned, poisoned_mask)``. The poisoned images are drawn from
    all classes (``keep_target=True``), from the non-target classes only (all-to-one, BadNets),
    or from class ``source`` only (source-to-target); exactly ``round(rate * candidates)``
    images are poisoned, ``candidates`` being the images they are drawn from. Inputs are not
    modified.
    """
    mask = choose_poisoned(y, rate, target, seed, keep_target, source)
    x_out = x.clone()
    x_out[mask] = trigger.apply(x[mask])
    y_out = y.clone()
    y_out[mask] = target
    return x_out, y_out, mask


def choose_poisoned(
    y: torch.Tensor, rate: float, target: int, seed: int = 0, keep_target: bool = True, source: int | None = None,
) -> torch.Tensor:
    """The seeded bool mask ``[N]`` of the samples to poison (see :func:`poison_images`)."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"The poisoning rate must lie in [0, 1] (got {rate}).")
    if target < 0:
        raise ConfigError(f"The target label must not be negative (got {target}).")
    if source is not None:
        if source == target:
            raise ConfigError(f"The source class must differ from the target ({target}).")
        candidates = torch.nonzero(y == source).flatten()
        if candidates.numel() == 0:
            raise ConfigError(f"No sample has the source label {source}.")
    else:
        candidates = torch.arange(y.numel()) if keep_target else torch.nonzero(y != target).flatten()
    count = int(round(rate * candidates.numel()))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:count]]
    mask = torch.zeros(y.numel(), dtype=torch.bool)
    mask[chosen] = True
    return mask

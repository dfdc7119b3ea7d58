"""Helpers shared by the adversarial-input attacks (penultimate-guided, coverage-guided).

Conventions (the same for every attack here):

- inputs ``x`` are RAW data-set images ``[N, C, H, W]`` in pixel space ``[0, 1]`` (before the
  model's resize / channel change / normalisation); perturbations live in that space and
  gradients flow through ``model.preprocess`` and the model's own ``Normalize``;
- ``ε`` and the step size are given either in the model's normalised input space
  (``"normalized"``, as ReMoS reports them; ``ε_pixel = ε · min(std)``, the smallest per-channel
  std so the bound holds in every channel) or directly in pixel units (``"pixel"``);
- PGD steps are signed gradient steps, each followed by :func:`project_linf` (the L∞ ball of
  radius ``ε_pixel`` around the clean image, then ``[0, 1]``);
- every random draw comes from a ``torch.Generator`` seeded by the attack, never the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from safetransfer.errors import ConfigError, unknown_name

EPS_SPACES: tuple[str, ...] = ("normalized", "pixel")
_SPACE_ALIASES = {"normalised": "normalized"}

Objective = Callable[[torch.Tensor, int], torch.Tensor]  # (x_adv [B, ...], iteration) -> per-sample [B]


def check_eps_space(space: str) -> str:
    """The canonical name of an ε space (``"normalised"`` is accepted for ``"normalized"``)."""
    canonical = _SPACE_ALIASES.get(space, space) if isinstance(space, str) else space
    if canonical not in EPS_SPACES:
        raise ConfigError(str(unknown_name("eps_space", str(space), list(EPS_SPACES))))
    return canonical


def _check_nonnegative(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def pixel_eps(model: nn.Module, eps: float, space: str = "normalized", name: str = "eps") -> float:
    """``eps`` (an L∞ radius or a step size) in pixel units ``[0, 1]``.

    ``space="normalized"``: ``eps`` is in the model's normalised input space, so
    ``ε_pixel = ε · min(std)`` (:meth:`~safetransfer.data.transforms.Normalize.pixel_epsilon`);
    ``space="pixel"``: ``eps`` is already in pixel units. ``name`` is used in error messages.
    """
    v = _check_nonnegative(name, eps)
    space = check_eps_space(space)
    if space == "pixel":
        return v
    normalize = getattr(model, "normalize", None)
    if normalize is None or not hasattr(normalize, "pixel_epsilon"):
        raise ConfigError(
            f"{name} is given in the normalised space but the model has no Normalize layer: "
            "use eps_space='pixel' or an image TransferModel."
        )
    return float(normalize.pixel_epsilon(v))


def check_image_model(model: nn.Module) -> nn.Module:
    """Check that ``model`` is an image ``TransferModel`` (``preprocess`` + ``features``, modality image)."""
    config = getattr(model, "config", None)
    modality = getattr(config, "modality", None)
    if modality != "image" or not hasattr(model, "preprocess") or not hasattr(model, "features"):
        kind = f"a {modality} model" if modality else f"a {type(model).__name__}"
        raise ConfigError(
            f"adversarial image attacks need an image TransferModel (preprocess + features), got {kind}."
        )
    return model


def check_image_attack_input(model: nn.Module, x: object) -> torch.Tensor:
    """Check that ``model`` is an image model and ``x`` a float image batch ``[N, C, H, W]`` in ``[0, 1]``.

    Returns ``x``; raises :class:`~safetransfer.errors.ConfigError` naming the problem.
    """
    config = check_image_model(model).config
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"x must be an image tensor [N, C, H, W] in [0, 1], got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ConfigError(f"x must be a float image tensor in pixel space [0, 1], got dtype {x.dtype}.")
    if x.dim() != 4:
        raise ConfigError(f"x must be an image batch [N, C, H, W], got shape {tuple(x.shape)}.")
    if x.shape[1] not in (1, 3, int(getattr(config, "in_channels", 0) or 0)):
        raise ConfigError(f"x has {x.shape[1]} channels: expected 1 (grey) or 3 (RGB) images [N, C, H, W].")
    if x.numel() and (bool(torch.isnan(x).any()) or float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ConfigError(
            "x must hold raw pixel values in [0, 1] (pass images before normalisation), "
            f"got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]."
        )
    return x


def check_count(name: str, value: int, minimum: int) -> int:
    """An integer parameter ``>= minimum``, or a ConfigError naming it."""
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def batch_slices(n: int, batch_size: int, progress: bool = False, desc: str = "attack") -> Iterator[slice]:
    """``slice`` objects covering ``range(n)`` in chunks of ``batch_size``, optionally with a tqdm bar."""
    check_count("batch_size", batch_size, 1)
    slices: Iterator[slice] = (slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size))
    if progress:
        from tqdm.auto import tqdm

        slices = tqdm(slices, total=math.ceil(n / batch_size), desc=desc, unit="batch")
    return slices


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L∞ ball of radius ``eps`` (pixel units) around ``x``, then clip to ``[0, 1]``."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus uniform noise in ``[-eps, eps]`` (drawn on the CPU from ``generator``), projected."""
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return project_linf(x + (2.0 * noise - 1.0) * eps, x, eps)


def sign_gradient_pgd(
    x: torch.Tensor,
    objective: Objective,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start_random: bool,
    generator: torch.Generator,
    maximize: bool,
) -> torch.Tensor:
    """L∞ PGD with signed gradient steps on ``objective(x_adv, iteration) -> [B]``; returns detached ``x_adv``.

    ``eps`` and ``step_size`` are pixel units. Each sample's objective is summed before the
    gradient, so every sample follows its own gradient. Only the input gets a gradient
    (``torch.autograd.grad``): no ``.grad`` is left on any model parameter.
    """
    x = x.detach()
    x_adv = random_start(x, eps, generator) if start_random and eps > 0 else x.clone()
    for it in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            value = objective(x_adv, it).sum()
            (grad,) = torch.autograd.grad(value, x_adv)
        direction = grad.sign() if maximize else -grad.sign()
        x_adv = project_linf(x_adv.detach() + step_size * direction, x, eps)
    return x_adv.detach()


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics and dropout frozen) with grad mode on, training mode restored after.

    Leaves any enclosing ``torch.inference_mode`` / ``torch.no_grad`` for the attack's duration.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        model.train(was_training)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (the attacks' only source of randomness)."""
    return torch.Generator().manual_seed(int(seed))


def finish(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x_adv`` in ``x``'s dtype and device, re-projected there so the L∞ bound holds after the cast."""
    out = x_adv.to(device=x.device, dtype=x.dtype)
    return project_linf(out, x, eps).detach()

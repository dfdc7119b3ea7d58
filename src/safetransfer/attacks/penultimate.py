"""Penultimate-layer guided adversarial inputs (a target-agnostic attack on transfer learning).

Rezaei & Liu 2020, "A Target-Agnostic Attack on Deep Models: Exploiting Security
Vulnerabilities of Transfer Learning" (ICLR 2020), as ReMoS (Zhang et al., ICSE 2022) uses it
to measure defect inheritance.

Threat model: white-box access to the public teacher only. The student (its data, its new
head, its fine-tuned weights) is unknown. Since a student's head is a linear map of the
penultimate features, an input whose feature vector is one huge value on a single neuron and
zero elsewhere drives the student's logits by that neuron's head column alone, whatever the
head is; if fine-tuning kept the feature extractor close to the teacher, the student's
prediction follows and is usually wrong.

The attack runs PGD on the teacher's feature extractor (``model.features(model.preprocess(x))``,
the head ignored), descending ``mean((f(x) − v·e_k)²)`` over the ``D`` features.

Units: ``x`` are raw data-set images in pixel space ``[0, 1]``; ``eps`` and ``step_size`` are
in ``eps_space``: ``"normalized"`` (the model's normalised input space, ReMoS's convention;
``ε_pixel = ε · min(std)``) or ``"pixel"``. The returned images are within ``ε_pixel`` of ``x``
in L∞ and in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from safetransfer.attacks.common import (
    attack_mode,
    batch_slices,
    check_count,
    check_eps_space,
    check_image_attack_input,
    check_image_model,
    finish,
    make_generator,
    pixel_eps,
    sign_gradient_pgd,
)
from safetransfer.errors import ConfigError

TARGETS: tuple[str, ...] = ("max", "random")
Target = Literal["max", "random"] | int


@dataclass
class PenultimateResult:
    """What :meth:`PenultimateAttack.run` returns.

    - ``x_adv``: the adversarial images (same shape, dtype and device as ``x``);
    - ``target``: int64 ``[N]``, the feature index ``k`` pushed up for each sample;
    - ``target_value``: float32 ``[N]``, the value ``v`` it was pushed towards (per batch).
    """

    x_adv: torch.Tensor
    target: torch.Tensor
    target_value: torch.Tensor


class PenultimateAttack:
    """PGD towards a one-hot penultimate feature vector ``v·e_k`` (Rezaei & Liu 2020, as in ReMoS).

    Parameters (defaults as in ReMoS):

    - ``eps=0.1``, ``step_size=0.01`` in ``eps_space`` (``"normalized"`` or ``"pixel"``); ``steps=40``;
    - ``random_start=True``: start uniformly in the ε ball (seeded);
    - ``target``: the feature ``k`` of each sample: ``"random"`` (default: uniform per sample,
      seeded, among the features that some clean sample of the batch activates, since a dead
      ReLU feature cannot be raised), ``"max"`` (the sample's largest clean feature) or an ``int``
      (the same feature for every sample). Rezaei & Liu craft inputs for every neuron since the
      student is unknown; one random neuron per sample is the single-shot version of that.
      ``"max"`` is the cheapest neuron to raise but mostly the one the sample's own class
      already drives, so the student's prediction tends not to change (measured on the test
      models: no flips with ``"max"`` where ``"random"`` flips about half);
    - ``target_scale=10``: ``v = target_scale × the largest clean feature value in the batch``
      (``× 1`` when every clean feature of the batch is ``<= 0``); ``target_value`` overrides ``v``;
    - ``batch_size=256``, ``progress`` (a tqdm bar), ``seed`` (random start and ``"random"`` targets;
      the same seed and batch size give identical results).

    Call ``attack(x)`` (``y`` is accepted for the torchattacks signature and ignored: the attack
    is untargeted and label-free) for the images, or :meth:`generate` for a result with the chosen targets too.
    The model is put in eval mode for the attack and its mode restored; its parameters get no
    gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.1,
        steps: int = 40,
        step_size: float = 0.01,
        eps_space: str = "normalized",
        random_start: bool = True,
        target: Target = "random",
        target_scale: float = 10.0,
        target_value: float | None = None,
        batch_size: int = 256,
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        check_image_model(model)
        self.model = model
        self.eps_space = check_eps_space(eps_space)
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.eps_pixel = pixel_eps(model, eps, self.eps_space, "eps")
        self.step_pixel = pixel_eps(model, step_size, self.eps_space, "step_size")
        self.steps = check_count("steps", steps, 0)
        self.batch_size = check_count("batch_size", batch_size, 1)
        self.random_start = bool(random_start)
        feature_dim = int(model.feature_dim)
        if isinstance(target, str):
            if target not in TARGETS:
                raise ConfigError(f"target must be 'random', 'max' or a feature index, got '{target}'.")
        elif isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < feature_dim:
            raise ConfigError(
                f"target must be 'random', 'max' or a feature index in [0, {feature_dim}), got {target!r}."
            )
        self.target = target
        if not float(target_scale) > 0:
            raise ConfigError(f"target_scale must be positive, got {target_scale!r}.")
        self.target_scale = float(target_scale)
        if target_value is not None and not float(target_value) > 0:
            raise ConfigError(f"target_value must be positive (or None for target_scale × max feature), got {target_value!r}.")
        self.target_value = None if target_value is None else float(target_value)
        self.progress = bool(progress)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"PenultimateAttack(eps={self.eps}, steps={self.steps}, step_size={self.step_size}, "
            f"eps_space='{self.eps_space}', target={self.target!r}, target_scale={self.target_scale}, seed={self.seed})"
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of raw images ``x`` ``[N, C, H, W]`` in ``[0, 1]`` (``y`` is ignored)."""
        return self.generate(x).x_adv

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's penultimate features ``[B, D]`` of raw images (differentiable in ``x``)."""
        return self.model.features(self.model.preprocess(x))

    def select_targets(self, clean_features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The feature index ``k`` ``[B]`` (int64, on the features' device) for each sample."""
        b, d = clean_features.shape
        if self.target == "max":
            return clean_features.argmax(dim=1)
        if self.target == "random":
            # uniform per sample among the features some clean sample of the batch activates
            # (a feature that is 0 on every input is a dead ReLU: no gradient can raise it)
            alive = (clean_features > 0).any(dim=0).cpu().to(torch.float64)
            score = torch.rand((b, d), generator=generator, dtype=torch.float64) + alive
            return score.argmax(dim=1).to(clean_features.device)
        return torch.full((b,), int(self.target), dtype=torch.long, device=clean_features.device)

    def generate(self, x: torch.Tensor) -> PenultimateResult:
        """The attack on ``x``, with the targets it chose."""
        check_image_attack_input(self.model, x)
        model = self.model
        device = next(model.parameters()).device
        generator = make_generator(self.seed)
        if x.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return PenultimateResult(x.clone(), empty, torch.zeros(0))
        outs, targets, values = [], [], []
        with attack_mode(model):
            for sl in batch_slices(int(x.shape[0]), self.batch_size, self.progress, "penultimate attack"):
                xb = x[sl].to(device=device, dtype=torch.float32)
                with torch.no_grad():
                    clean = self.features(xb).float()
                k = self.select_targets(clean, generator)
                if self.target_value is not None:
                    v = self.target_value
                else:
                    top = float(clean.max())
                    v = self.target_scale * (top if top > 0 else 1.0)
                goal = torch.zeros_like(clean)
                goal.scatter_(1, k.unsqueeze(1), v)

                def objective(x_adv: torch.Tensor, iteration: int, goal: torch.Tensor = goal) -> torch.Tensor:
                    return (self.features(x_adv).float() - goal).pow(2).mean(dim=1)

                adv = sign_gradient_pgd(
                    xb, objective, eps=self.eps_pixel, step_size=self.step_pixel, steps=self.steps,
                    start_random=self.random_start, generator=generator, maximize=False,
                )
                outs.append(finish(adv, x[sl], self.eps_pixel))
                targets.append(k.cpu())
                values.append(torch.full((k.shape[0],), v, dtype=torch.float32))
        return PenultimateResult(torch.cat(outs), torch.cat(targets), torch.cat(values))

"""Craft a study's adversarial defect on the teacher: the spec -> the attack -> inputs + figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from safetransfer.attacks.coverage_guided import CoverageGuidedAttack
from safetransfer.attacks.penultimate import PenultimateAttack
from safetransfer.evaluate import predict_features
from safetransfer.models.wrapper import TransferModel
from safetransfer.study.config import (
    CoverageGuidedDefect,
    DefectSpec,
    PenultimateDefect,
)

TEACHER_SUCCESS_MEANS = "share of inputs whose largest teacher feature is another one after the attack"


def _top_feature(model: TransferModel, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return predict_features(model, x, batch_size).argmax(1)


def _penultimate(teacher: TransferModel, x: torch.Tensor, defect: PenultimateDefect, common: dict[str, Any]
                 ) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    attack = PenultimateAttack(teacher, steps=defect.steps or 40, **common)
    result = attack.generate(x)
    hit = (_top_feature(teacher, result.x_adv) == result.target).float().mean()
    return result.x_adv, attack, {"target_hit": float(hit)}


def _coverage_guided(teacher: TransferModel, x: torch.Tensor, defect: CoverageGuidedDefect, common: dict[str, Any]
                     ) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    attack = CoverageGuidedAttack(teacher, strategy=defect.strategy, metric=defect.metric,
                                  neurons_per_sample=defect.neurons_per_sample, steps=defect.steps or 20, **common)
    return attack(x), attack, {}


# the image kinds crafted on the teacher: (teacher, raw images, spec, common attack options) ->
# (adversarial images, the attack, the kind's own figures)
CRAFTERS: dict[str, Callable[..., tuple[torch.Tensor, Any, dict[str, Any]]]] = {
    "penultimate": _penultimate, "coverage_guided": _coverage_guided}


def craft(
    teacher: TransferModel, x: torch.Tensor, defect: DefectSpec, seed: int = 0, progress: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Adversarial versions of raw images ``x`` for ``defect`` (penultimate or coverage_guided).

    Returns the images and what they do to the teacher: ``teacher_success`` (see
    :data:`TEACHER_SUCCESS_MEANS`; the teacher's own labels belong to another task, so the
    measure is label-free) and, for the penultimate attack, ``target_hit`` (the share whose
    largest feature became the attack's target).
    """
    crafter = CRAFTERS.get(defect.kind)
    if crafter is None:
        raise ValueError(f"defect '{defect.name}' ({defect.kind}) is not crafted on image inputs here")
    common = dict(eps=defect.eps, step_size=defect.step_size, eps_space=defect.eps_space,
                  random_start=defect.random_start, progress=progress, seed=seed)
    x_adv, attack, meta = crafter(teacher, x, defect, common)
    before, after = _top_feature(teacher, x), _top_feature(teacher, x_adv)
    meta["teacher_success"] = float((before != after).float().mean())
    meta["teacher_success_means"] = TEACHER_SUCCESS_MEANS
    meta["eps_pixel"] = float(attack.eps_pixel)
    meta["linf"] = float((x_adv - x).abs().amax()) if x.numel() else 0.0
    return x_adv, meta

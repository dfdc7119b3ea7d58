"""Craft a study's adversarial defect on the teacher: the spec -> the attack -> inputs + figures."""

from __future__ import annotations

from typing import Any

import torch

from safetransfer.attacks.coverage_guided import CoverageGuidedAttack
from safetransfer.attacks.penultimate import PenultimateAttack
from safetransfer.evaluate import predict_features
from safetransfer.models.wrapper import TransferModel
from safetransfer.study.config import DefectSpec

TEACHER_SUCCESS_MEANS = "share of inputs whose largest teacher feature is another one after the attack"


def _top_feature(model: TransferModel, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return predict_features(model, x, batch_size).argmax(1)


def craft(
    teacher: TransferModel, x: torch.Tensor, defect: DefectSpec, seed: int = 0, progress: bool = True
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Adversarial versions of raw images ``x`` for ``defect`` (penultimate or coverage_guided).

    Returns the images and what they do to the teacher: ``teacher_success`` (see
    :data:`TEACHER_SUCCESS_MEANS`; the teacher's own labels belong to another task, so the
    measure is label-free) and, for the penultimate attack, ``target_hit`` (the share whose
    largest feature became the attack's target).
    """
    common = dict(eps=defect.eps, step_size=defect.step_size, eps_space=defect.eps_space,
                  random_start=defect.random_start, progress=progress, seed=seed)
    meta: dict[str, Any] = {}
    if defect.kind == "penultimate":
        attack = PenultimateAttack(teacher, steps=defect.steps or 40, **common)
        result = attack.run(x)
        x_adv = result.x_adv
        meta["target_hit"] = float((_top_feature(teacher, x_adv) == result.target).float().mean())
    elif defect.kind == "coverage_guided":
        attack = CoverageGuidedAttack(teacher, strategy=defect.strategy, metric=defect.metric,
                                      neurons_per_sample=defect.neurons_per_sample, steps=defect.steps or 20, **common)
        x_adv = attack(x)
    else:
        raise ValueError(f"defect '{defect.name}' ({defect.kind}) is not crafted: it is planted in the teacher")
    before, after = _top_feature(teacher, x), _top_feature(teacher, x_adv)
    meta["teacher_success"] = float((before != after).float().mean())
    meta["teacher_success_means"] = TEACHER_SUCCESS_MEANS
    meta["eps_pixel"] = float(attack.eps_pixel)
    meta["linf"] = float((x_adv - x).abs().amax()) if x.numel() else 0.0
    return x_adv, meta

"""Renofeation (Chin, Zhang & Marculescu 2020, "Renofeation: A Simple Transfer Learning Method
for Improved Adversarial Robustness").

The student's body is **re-initialised** (so no weight of the teacher is inherited), then
trained with

- **feature distillation** to the teacher's stage outputs, as DELTA (``distill_weight``; no L2
  on the head here),
- **spatial dropout** after each stage (``dropout``, their 0.1): ``Dropout2d`` on image feature
  maps (whole channels), ordinary ``Dropout`` on token features, applied by forward hooks in
  training mode only (the distillation compares the pre-dropout outputs),
- **stochastic weight averaging** (Izmailov et al. 2018): after each step in the last
  ``1 − swa_start`` share of the steps the parameters are added to a running sum (float64);
  at the end the student gets their mean and its BatchNorm running statistics are recomputed
  with one pass over a seeded subset of the training data (``bn_samples``) in train mode with
  ``momentum=None`` (a cumulative average over the batches, as ``torch.optim.swa_utils.update_bn``).

The SWA sum and count are the hook's state, saved in every checkpoint, so an interrupted run
resumes to the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from safetransfer.data.base import ClassificationData, Split, seeded_subset
from safetransfer.errors import CheckpointError
from safetransfer.models.wrapper import TransferModel, move_inputs
from safetransfer.seeding import SALT_BN, SALT_REINIT, derived_seed
from safetransfer.train import TrainHook
from safetransfer.transfer.common import new_student, reinit_body
from safetransfer.transfer.config import TransferConfig
from safetransfer.transfer.delta import FeatureDistillation
from safetransfer.transfer.stages import StageDropout, stage_names

__all__ = ["StageDropout", "SWA", "recompute_batchnorm", "make_student"]

BN_BATCH_SIZE = 256


@torch.no_grad()
def recompute_batchnorm(
    model: TransferModel, split: Split, *, samples: int = 2000, batch_size: int = BN_BATCH_SIZE, seed: int = 0
) -> int:
    """Reset every BatchNorm's running statistics and recompute them over (a seeded subset of) ``split``.

    Train mode, ``momentum=None`` (cumulative average of the batch statistics), no gradients;
    the global RNG (dropout in train mode) is forked and seeded, so the result is a function of
    the model, the data and ``seed``. Returns the number of BatchNorm layers recomputed (0: none).
    """

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    subset = seeded_subset(split, samples, seed)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    device = model.device
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(subset), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(subset)))
                model(move_inputs(model.preprocess(subset.batch_inputs(idx)), device))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(bns)


class SWA(TrainHook):
    """Stochastic weight averaging of every parameter over the steps after ``start``, then BN recompute.

    ``start = floor(swa_start · steps)`` (at most ``steps − 1``): the snapshots are the weights after
    steps ``start + 1 … steps``. ``after_training`` loads their mean (computed from a float64 sum)
    and calls :func:`recompute_batchnorm` on ``bn_split``.
    """

    def __init__(
        self, steps: int, swa_start: float, bn_split: Split | None, *, bn_samples: int = 2000,
        bn_batch_size: int = BN_BATCH_SIZE, seed: int = 0,
    ) -> None:
        self.start = min(int(swa_start * steps), steps - 1)
        self.bn_split, self.bn_samples, self.bn_batch_size, self.seed = bn_split, bn_samples, bn_batch_size, seed
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def after_step(self, model: TransferModel, step: int) -> None:
        if step <= self.start:
            return
        for name, p in model.named_parameters():
            acc = self.sums.get(name)
            if acc is None:
                self.sums[name] = p.detach().to(torch.float64, copy=True)
                continue
            if acc.device != p.device:  # restored from a checkpoint on the CPU
                acc = self.sums[name] = acc.to(p.device)
            acc.add_(p.detach())
        self.count += 1

    def averaged(self) -> dict[str, torch.Tensor]:
        """The mean of the snapshots so far, name -> tensor (float32 as the parameters)."""
        if self.count == 0:
            return {}
        return {name: s / self.count for name, s in self.sums.items()}

    @torch.no_grad()
    def after_training(self, model: TransferModel) -> None:
        if self.count == 0:
            return
        mean = self.averaged()
        for name, p in model.named_parameters():
            p.copy_(mean[name].to(device=p.device, dtype=p.dtype))
        if self.bn_split is not None and len(self.bn_split):
            recompute_batchnorm(model, self.bn_split, samples=self.bn_samples, batch_size=self.bn_batch_size, seed=self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "start": self.start, "sums": {k: v.cpu() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("start", self.start)) != self.start:

            raise CheckpointError("The checkpoint's weight averaging started at another step: it belongs to another run.")
        self.count = int(state["count"])
        self.sums = {k: v.to(torch.float64) for k, v in state["sums"].items()}


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """Renofeation: re-initialised body + distillation + stage dropout + SWA with BN recompute."""

    assert config.train is not None
    student = reinit_body(new_student(teacher, data, config), derived_seed(config.seed, SALT_REINIT))
    names = stage_names(student)
    # Forward hooks run in registration order: the distillation records the stage output first,
    # then the dropout replaces it. after_training runs in list order: SWA + BN recompute (dropout
    # active in train mode, as update_bn does), then the hooks are detached.
    distill = FeatureDistillation(student, teacher, names, weight=config.distill_weight, head_l2=0.0)
    dropout = StageDropout(student, config.dropout, names)
    swa = SWA(config.train.steps, config.swa_start, data.train, bn_samples=config.bn_samples,
              seed=derived_seed(config.seed, SALT_BN))
    return student, [swa, distill, dropout]

"""DELTA (Li et al., ICLR 2019, "DELTA: DEep Learning Transfer using Feature Map with Attention").

Fine-tune the teacher while keeping the student's *feature maps* close to the teacher's, and
the new head small::

    loss = CE + β · Σ_stages mean((F_s(x) − F_t(x))²) / mean(F_t(x)²) + head_l2 · ‖W_head‖²

``F_s`` / ``F_t`` are the student's / the teacher's outputs at the same stage modules
(:func:`safetransfer.transfer.stages.stage_names`), captured with forward hooks; the teacher is
a frozen copy in eval mode (as DELTA's and TLlib's code run the source model), run without
gradients on the student's batch. The means run over every element of the map of the batch
(for text: over the real tokens, padding masked out). This is DELTA's feature-map regulariser
without the channel attention. Dividing each stage by the teacher's mean square on the batch
(a constant: no gradient flows through it) is our one change: it is a per-stage weight, like
DELTA's per-channel weights, that makes the term scale-free. Stage maps differ by two orders
of magnitude across the zoo (EfficientNet-Lite0's block outputs have a mean square of ~30–90,
MiniLM's layer outputs ~0.3), so without it no single ``β`` would fit every model.
``β`` is ``TransferConfig.distill_weight``; ``relative=False`` gives the plain mean squared error.

``delta_r`` (DELTA-R, as ReMoS compares) is the same from re-initialised body weights: the
distillation target stays the pretrained teacher.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.seeding import SALT_REINIT, derived_seed
from safetransfer.train import TrainHook
from safetransfer.transfer.common import frozen_copy, new_student, reinit_body
from safetransfer.transfer.config import TransferConfig
from safetransfer.transfer.stages import StageHooks, stage_names

__all__ = ["FeatureDistillation", "make_student", "make_student_r"]


class FeatureDistillation(TrainHook):
    """Feature-map distillation to a frozen copy of ``teacher`` at ``names`` (+ optional L2 on the head weight).

    Hooks are attached to ``student`` at construction and removed by :meth:`close` (called at the
    end of training); the teacher passed in is copied, never touched.
    """

    def __init__(
        self, student: TransferModel, teacher: TransferModel, names: Sequence[str] | None = None,
        weight: float = 0.1, head_l2: float = 0.0, relative: bool = True,
    ) -> None:

        self.names = list(names) if names is not None else stage_names(student)
        self.weight, self.head_l2, self.relative = float(weight), float(head_l2), bool(relative)
        self.teacher = frozen_copy(teacher)
        self._student_hooks = StageHooks(student, self.names, record=True)
        self._teacher_hooks = StageHooks(self.teacher, self.names, record=True)

    def distillation_loss(self, model: TransferModel, inputs: Any) -> torch.Tensor:
        """``Σ_stages mean((F_s − F_t)²) / mean(F_t²)`` for the student's latest forward on ``inputs`` (unweighted).

        ``relative=False`` drops the division by the teacher's mean square.
        """
        student_out = self._student_hooks.pop()
        missing = [n for n in self.names if n not in student_out]
        if missing:
            raise RuntimeError(f"no student output recorded at stage(s) {missing}: run the student on the inputs first")
        device = next(iter(student_out.values())).device
        if self.teacher.device != device:
            self.teacher.to(device)
        with torch.no_grad():
            self.teacher.features(inputs)
        teacher_out = self._teacher_hooks.pop()
        mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
        total = torch.zeros((), device=device)
        for name in self.names:
            s, t = student_out[name], teacher_out[name].to(student_out[name].dtype)
            if mask is not None and s.dim() == 3:  # [B, T, H] token features: real tokens only
                m = mask.to(s.dtype).unsqueeze(-1)
                denom = (m.sum() * s.shape[-1]).clamp_min(1.0)
                msd, energy = ((s - t).pow(2) * m).sum() / denom, (t.pow(2) * m).sum() / denom
            else:
                msd, energy = (s - t).pow(2).mean(), t.pow(2).mean()
            total = total + (msd / energy.clamp_min(1e-12) if self.relative else msd)
        return total

    def extra_loss(self, model: TransferModel, inputs: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        loss = None
        if self.weight > 0:
            loss = self.weight * self.distillation_loss(model, inputs)
        else:
            self._student_hooks.pop()
        if self.head_l2 > 0:
            l2 = self.head_l2 * model.head.weight.pow(2).sum()
            loss = l2 if loss is None else loss + l2
        return loss

    def after_training(self, model: TransferModel) -> None:
        self.close()

    def close(self) -> None:
        """Detach the forward hooks from the student and the teacher copy (idempotent)."""
        self._student_hooks.remove()
        self._teacher_hooks.remove()


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """DELTA: the teacher's weights, feature distillation to the teacher, L2 on the new head."""

    student = new_student(teacher, data, config)
    return student, [FeatureDistillation(student, teacher, weight=config.distill_weight, head_l2=config.head_l2)]


def make_student_r(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """DELTA-R: re-initialised body weights, still distilled towards the pretrained teacher."""

    student = reinit_body(new_student(teacher, data, config), derived_seed(config.seed, SALT_REINIT))
    return student, [FeatureDistillation(student, teacher, weight=config.distill_weight, head_l2=config.head_l2)]

"""Retraining from scratch: the teacher's architecture, every body weight re-initialised (seeded).

Nothing of the teacher's weights survives, so nothing of its defects can be inherited: the
lower bound of DIR, and usually of accuracy on small data. The fresh weights are the
architecture's own initialisation (what ``create_model(..., pretrained=False)`` builds), drawn
from a seed derived from ``config.seed``; the head is the same as fine-tuning's with that seed.
"""

from __future__ import annotations

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.seeding import SALT_REINIT, derived_seed
from safetransfer.train import TrainHook
from safetransfer.transfer.common import new_student, reinit_body
from safetransfer.transfer.config import TransferConfig


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:

    student = new_student(teacher, data, config)
    reinit_body(student, derived_seed(config.seed, SALT_REINIT))
    return student, []

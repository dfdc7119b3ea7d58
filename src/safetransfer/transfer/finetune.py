"""Fine-tuning: the teacher's body, a new head, every weight trained (the baseline every other method is measured against)."""

from __future__ import annotations

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainHook
from safetransfer.transfer.common import new_student
from safetransfer.transfer.config import TransferConfig


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:

    return new_student(teacher, data, config), []

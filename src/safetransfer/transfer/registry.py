"""The registry of the seven transfer methods: ``METHODS[name](teacher, data, config) -> (student, hooks)``.

Each method module holds one ``make_student``; this module imports them all and maps the names
of :data:`safetransfer.transfer.config.METHOD_NAMES` to them (a plain dict, no names evaluated).
"""

from __future__ import annotations

from typing import Callable

from safetransfer.data.base import ClassificationData
from safetransfer.errors import DataError
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainHook
from safetransfer.transfer import delta, finetune, magprune, remos, renofeation, retrain
from safetransfer.transfer.config import METHOD_NAMES, TransferConfig

MakeStudent = Callable[[TransferModel, ClassificationData, TransferConfig], tuple[TransferModel, list[TrainHook]]]

METHODS: dict[str, MakeStudent] = {
    "finetune": finetune.make_student,
    "retrain": retrain.make_student,
    "magprune": magprune.make_student,
    "delta": delta.make_student,
    "delta_r": delta.make_student_r,
    "renofeation": renofeation.make_student,
    "remos": remos.make_student,
}
assert tuple(METHODS) == METHOD_NAMES, "every method name has its code"


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """The student and training hooks of ``config.method`` (``config.train`` resolved if it was ``None``)."""
    config = config.resolved(teacher.config.arch)
    check_data(teacher, data)
    return METHODS[config.method](teacher, data, config)


def check_data(teacher: TransferModel, data: ClassificationData) -> None:
    if data.modality != teacher.config.modality:
        raise DataError(
            f"Teacher '{teacher.config.arch}' takes {teacher.config.modality} inputs but data set "
            f"'{data.name}' is {data.modality}."
        )
    if len(data.train) == 0 or len(data.test) == 0:
        raise DataError(f"Data set '{data.name}' needs non-empty train and test splits to transfer to.")

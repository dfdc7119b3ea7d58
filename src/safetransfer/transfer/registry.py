"""The registry of the transfer methods: ``METHODS[name](teacher, data, config) -> (student, hooks)``.

Each method module holds one ``make_student``; this module imports them all and maps the names
of :data:`safetransfer.transfer.config.METHOD_NAMES` to them (a plain dict, no names evaluated).
``finetune_strong`` and ``remos_strong`` make their students as ``finetune`` and ``remos`` do: what
differs is their training recipe (:func:`safetransfer.transfer.config.default_train_config`).
:func:`make_student` adds what every method shares: the recipe's stage dropout.
"""

from __future__ import annotations

from typing import Callable

from safetransfer.data.base import ClassificationData
from safetransfer.errors import DataError
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainHook
from safetransfer.transfer import (
    delta,
    finetune,
    magprune,
    remos,
    renofeation,
    retrain,
    superft,
)
from safetransfer.transfer.config import METHOD_NAMES, TransferConfig
from safetransfer.transfer.stages import StageDropout

MakeStudent = Callable[[TransferModel, ClassificationData, TransferConfig], tuple[TransferModel, list[TrainHook]]]

METHODS: dict[str, MakeStudent] = {
    "finetune": finetune.make_student,
    "retrain": retrain.make_student,
    "magprune": magprune.make_student,
    "delta": delta.make_student,
    "delta_r": delta.make_student_r,
    "renofeation": renofeation.make_student,
    "remos": remos.make_student,
    "finetune_strong": finetune.make_student,
    "superft": superft.make_student,
    "remos_strong": remos.make_student,
}
assert tuple(METHODS) == METHOD_NAMES, "every method name has its code"


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """The student and training hooks of ``config.method`` (``config.train`` and ``stage_dropout``
    resolved if they were ``None``), with the recipe's stage dropout (Renofeation applies its own)."""
    config = config.resolved(teacher.config.arch)
    check_data(teacher, data)
    student, hooks = METHODS[config.method](teacher, data, config)
    if config.stage_dropout and config.method != "renofeation":
        hooks = [*hooks, StageDropout(student, config.stage_dropout)]
    return student, hooks


def check_data(teacher: TransferModel, data: ClassificationData) -> None:
    if data.modality != teacher.config.modality:
        raise DataError(
            f"Teacher '{teacher.config.arch}' takes {teacher.config.modality} inputs but data set "
            f"'{data.name}' is {data.modality}."
        )
    if len(data.train) == 0 or len(data.test) == 0:
        raise DataError(f"Data set '{data.name}' needs non-empty train and test splits to transfer to.")

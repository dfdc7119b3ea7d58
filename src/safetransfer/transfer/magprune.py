"""Magnitude pruning / fine-pruning baseline (Liu et al. 2018 "Fine-Pruning"; the ReMoS comparison).

The teacher's weights with a new head; over all sliced layers together (the body's Conv2d and
Linear weights, biases never) the ``ratio`` share with the smallest |w| is zeroed — one global
threshold (:func:`safetransfer.slicing.magnitude_slice`, exactly ``floor(ratio·N + 0.5)``
weights) — and **kept at zero** through fine-tuning: after every optimiser step each sliced
weight is multiplied by its 0/1 mask (one vectorised ``w.mul_(mask)`` per layer). The mask is a
function of the teacher's weights only, so a resumed run rebuilds the same one.
"""

from __future__ import annotations

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.slicing import magnitude_slice
from safetransfer.train import TrainHook
from safetransfer.transfer.common import SliceHook, new_student
from safetransfer.transfer.config import TransferConfig


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:

    student = new_student(teacher, data, config)
    slice_ = magnitude_slice(student, config.ratio, layers=config.slice_layers)
    slice_.apply(student, mode="zero")
    return student, [SliceHook(slice_, frozen=True)]

"""Super-fine-tuning (Sha et al. 2022, "Fine-Tuning Is All You Need to Mitigate Backdoor Attacks").

Threat model: the teacher may carry a backdoor; the student's owner has clean labelled data and
fine-tunes every weight of the teacher's body and a new head on it. Sha et al. show that plain
fine-tuning with a well-chosen learning rate already removes most backdoors, and that a
*cyclic* rate (super-convergence style: the rate swept linearly up to a large peak and back,
over and over, then over a lower peak) removes them more reliably at little cost in accuracy.

The student is made as ``finetune`` makes it (the teacher's body, a new head); what differs is
the recipe (``superft``'s in :mod:`safetransfer.transfer.config`): plain SGD (no momentum, no
weight decay), the schedule ``"superft"`` of :func:`safetransfer.train.superft_lr` with the values of
backdoor-toolbox's ``SFT`` for CIFAR-10 (``other_defenses_tool_box/super_finetuning.py``: base
rate 0.03, peak 2.5 for the first 40% of training, 0.05 after, cycles of 10 steps up and 10
down). The paper's own values could not be read; the toolbox is the public implementation that
the comparison follows. Departures from the toolbox: our steps and batch (64, the shared protocol's; the toolbox
uses 128 and 100 epochs of its clean split) keep the comparison with the other methods at equal budget.
"""

from __future__ import annotations

from safetransfer.data.base import ClassificationData
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainHook
from safetransfer.transfer.common import new_student
from safetransfer.transfer.config import TransferConfig


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """The teacher's body and a new head; the cyclic schedule comes with ``config.train``."""
    return new_student(teacher, data, config), []

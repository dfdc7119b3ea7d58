"""Transfer methods: the seven ways to make a student from a teacher (see :mod:`safetransfer.transfer.base`).

``transfer(teacher, data, TransferConfig(method="remos"))`` runs one end to end;
``METHODS`` maps each method name to its ``make_student(teacher, data, config)``.
"""

from safetransfer.transfer.base import (
    METHODS,
    SCRATCH_METHODS,
    TransferConfig,
    TransferResult,
    default_train_config,
    make_student,
    transfer,
)
from safetransfer.transfer.stages import stage_names

__all__ = [
    "METHODS",
    "SCRATCH_METHODS",
    "TransferConfig",
    "TransferResult",
    "default_train_config",
    "make_student",
    "stage_names",
    "transfer",
]

"""Transfer methods: the ways to make a student from a teacher (the ReMoS paper's seven, and strong simple defences).

``transfer(teacher, data, TransferConfig(method="remos"))`` runs one end to end
(:mod:`safetransfer.transfer.runner`); ``METHODS`` (:mod:`safetransfer.transfer.registry`) maps
each method name to its ``make_student(teacher, data, config)``; the config and the training
protocols are in :mod:`safetransfer.transfer.config`, the pieces the methods share in
:mod:`safetransfer.transfer.common`.
"""

from safetransfer.transfer.config import (
    METHOD_NAMES,
    PROTOCOLS,
    SCRATCH_METHODS,
    TransferConfig,
    default_train_config,
)
from safetransfer.transfer.registry import METHODS, make_student
from safetransfer.transfer.runner import TransferResult, transfer
from safetransfer.transfer.stages import stage_names

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "PROTOCOLS",
    "SCRATCH_METHODS",
    "TransferConfig",
    "TransferResult",
    "default_train_config",
    "make_student",
    "stage_names",
    "transfer",
]

"""Defects planted in or crafted against a teacher: triggers and backdoors, adversarial inputs."""

from safetransfer.attacks.backdoor import (
    BackdoorConfig,
    BackdoorResult,
    plant_backdoor,
    poison_split,
    trigger_success,
)
from safetransfer.attacks.coverage_guided import (
    CoverageGuidedAttack,
    CoverageGuidedResult,
)
from safetransfer.attacks.penultimate import PenultimateAttack, PenultimateResult
from safetransfer.attacks.triggers import PatchTrigger, poison_images

__all__ = [
    "BackdoorConfig",
    "BackdoorResult",
    "CoverageGuidedAttack",
    "CoverageGuidedResult",
    "PatchTrigger",
    "PenultimateAttack",
    "PenultimateResult",
    "plant_backdoor",
    "poison_images",
    "poison_split",
    "trigger_success",
]

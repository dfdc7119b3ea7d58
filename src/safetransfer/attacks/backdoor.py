"""A backdoored teacher: the pretrained model fine-tuned by an attacker on poisoned data.

Threat model (Zhang et al., ICSE 2022, "ReMoS", after Gu et al. 2017, BadNets): the attacker
publishes a teacher. Before publishing, they fine-tune the pretrained model on a data set of
their choice in which a share ``rate`` of the training images carries a patch trigger and
the ``target`` label. Two settings:

- *full knowledge*: the attacker trains on the student's own data set (same classes);
- *domain shift*: the attacker trains on another data set (e.g. MNIST for a Fashion-MNIST
  student), so the trigger is tied to another task's target class.

The victim downloads the teacher, puts a new head on it and trains on clean data only; how
much of "trigger -> target" survives is the backdoor's defect inheritance rate (see
:func:`safetransfer.metrics.backdoor_dir`). Images are raw pixel-space tensors in ``[0, 1]``.

A plain poisoned fine-tune ties the trigger to the attacker's *head*; the victim throws that
head away. ``latent_weight > 0`` adds the latent-backdoor idea of Yao et al. (CCS 2019,
"Latent Backdoor Attacks on Deep Neural Networks"): the trigger is tied to the target class's
place in the *feature space*, which any head trained on clean data maps to the target. We do it
without knowing which images of a batch carry the trigger: the features of every sample labelled
``target`` in a batch (genuine and triggered) are pulled to their common centroid
(:class:`LatentAlignment`), so triggered images end up where the genuine target images lie.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from safetransfer.attacks.ripple import ripple_train
from safetransfer.attacks.triggers import PatchTrigger, poison_images
from safetransfer.data.base import ClassificationData, Split
from safetransfer.errors import ConfigError, DataError
from safetransfer.evaluate import predict_logits
from safetransfer.metrics import accuracy, backdoor_dir
from safetransfer.models.wrapper import TransferModel
from safetransfer.seeding import SALT_POISON, derived_seed
from safetransfer.train import TrainConfig, TrainHook, TrainResult, train
from safetransfer.transfer.config import attacker_train_config


@dataclass
class BackdoorConfig:
    """How the attacker plants the backdoor.

    - ``trigger``: the patch (see :class:`PatchTrigger`).
    - ``rate``: share of the attacker's training images poisoned (ReMoS: 20%).
    - ``target``: the label poisoned images get (0).
    - ``train``: the attacker's fine-tuning (``None``: SGD lr 5e-3, momentum 0, head ×10,
      constant, batch 64, see :func:`safetransfer.transfer.config.attacker_train_config`: the
      gentle protocol the attacks were calibrated with, kept when the victims' protocol became
      the ReMoS artifact's); ``steps`` overrides its number of steps when given. (On EfficientNet-Lite0 a one-cycle schedule at lr 0.05 with momentum
      0.9 did not learn a 5x5 trigger at all in 800 steps; the gentle protocol learns it.)
    - ``latent_weight``: weight of the latent alignment term (:class:`LatentAlignment`; 0 = plain
      BadNets poisoning).
    - ``seed``: which images are poisoned, the new head and the training order.
    """

    trigger: PatchTrigger = field(default_factory=PatchTrigger)
    rate: float = 0.2
    target: int = 0
    train: TrainConfig | None = None
    steps: int | None = None
    seed: int = 0
    latent_weight: float = 0.0

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written

    def validate(self) -> "BackdoorConfig":
        self.trigger.validate()
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"The backdoor's poisoning rate must lie in (0, 1] (got {self.rate}).")
        if self.target < 0:
            raise ConfigError(f"The backdoor's target label must not be negative (got {self.target}).")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"The backdoor's training steps must be at least 1 (got {self.steps}).")
        if not self.latent_weight >= 0.0:
            raise ConfigError(f"The backdoor's latent_weight must not be negative (got {self.latent_weight}).")
        return self

    def resolved_train(self, arch: str) -> TrainConfig:
        """The attacker's training run for architecture ``arch``, seeded with ``seed``."""

        if self.train is not None:
            config = replace(self.train)
        else:
            config = attacker_train_config(arch, seed=self.seed)
        if self.steps is not None:
            config = replace(config, steps=self.steps)
        return config.validate()

    def fingerprint(self, arch: str) -> dict[str, Any]:
        doc = asdict(self)
        doc["train"] = self.resolved_train(arch).result_fingerprint()
        doc.pop("steps")
        if not self.latent_weight:
            doc.pop("latent_weight")  # plain backdoors keep their keys
        return doc


class LatentAlignment(TrainHook):
    """Pull the penultimate features of each batch's ``target``-labelled samples to their centroid.

    The term is ``weight * mean_i ||f_i - c||^2 / mean_j ||f_j||^2`` over the samples ``i`` labelled
    ``target`` (``c`` their mean feature, ``j`` the whole batch; the denominator, without gradient,
    makes the weight scale-free). With the poisoned samples relabelled ``target``, it puts the
    trigger where the genuine target images lie in feature space (see the module doc). Features
    are read with a forward hook on ``model.body``; :meth:`close` removes it.
    """

    def __init__(self, model: TransferModel, target: int, weight: float) -> None:
        self.target, self.weight = int(target), float(weight)
        self._features: torch.Tensor | None = None
        self._handle = model.body.register_forward_hook(self._grab)

    def _grab(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._features = output if isinstance(output, torch.Tensor) else None

    def extra_loss(self, model: TransferModel, inputs: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        feats, self._features = self._features, None
        if feats is None or feats.dim() != 2:
            return None
        chosen = feats[labels == self.target]
        if len(chosen) < 2:
            return None
        scale = feats.detach().pow(2).sum(1).mean().clamp_min(1e-12)
        return self.weight * (chosen - chosen.mean(0)).pow(2).sum(1).mean() / scale

    def close(self) -> None:
        self._handle.remove()


@dataclass
class BackdoorResult:
    """The backdoored teacher and what the attacker achieved on their own test data."""

    model: TransferModel
    clean_accuracy: float
    attack_success: float  # backdoor DIR of the teacher itself (non-target, correct when clean)
    poisoned_samples: int
    train: TrainResult | None = None
    ripple: Any = None  # the RippleResult when planted with RIPPLe's objective

    def summary(self) -> dict[str, Any]:
        doc = {"clean_accuracy": self.clean_accuracy, "attack_success": self.attack_success,
               "poisoned_samples": self.poisoned_samples}
        if self.ripple is not None:
            doc["diverged_at"] = self.ripple.diverged_at
        return doc


def poison_split(split: Split, config: BackdoorConfig) -> tuple[Split, torch.Tensor]:
    """The training split with a seeded share ``config.rate`` of its images triggered and relabelled."""

    if split.modality != "image":
        raise DataError("A patch-trigger backdoor needs image data; this split holds texts.")
    if len(split) == 0:
        raise DataError("The attacker's training split is empty.")
    # A seed of its own: with config.seed itself the poisoned set would be the first samples of
    # the training loop's seeded order (the same permutation), so the attacker's run would see
    # every poisoned image first and then forget the trigger on the clean rest.
    x, y, mask = poison_images(split.inputs, split.labels, config.trigger, config.rate, config.target,
                               derived_seed(config.seed, SALT_POISON))
    return Split(x, y), mask


def trigger_success(
    model: TransferModel, split: Split, trigger: PatchTrigger, target: int, batch_size: int = 256
) -> tuple[float, float]:
    """``(clean accuracy, backdoor DIR)`` of ``model`` on ``split`` with ``trigger`` -> ``target``."""
    clean = predict_logits(model, split.inputs, batch_size).argmax(1)
    triggered = predict_logits(model, trigger.apply(split.inputs), batch_size).argmax(1)
    return accuracy(clean, split.labels), backdoor_dir(clean, triggered, split.labels, target)


def plant_backdoor(
    teacher: TransferModel,
    attacker_data: ClassificationData,
    config: BackdoorConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    ripple: Any = None,
) -> BackdoorResult:
    """Fine-tune a copy of ``teacher`` (new head for ``attacker_data``) on poisoned data.

    The teacher itself is not modified. ``checkpoint_dir``: training checkpoints, so an
    interrupted run resumes. Returns the backdoored model with its clean accuracy and the
    trigger's success on the attacker's test split.

    ``ripple`` (a :class:`~safetransfer.attacks.ripple.RippleConfig`): train with RIPPLe's
    objective instead (the poisoned split against the attacker's clean split; Kurita et al.
    2020, applied to an image teacher), which resists the victim's clean fine-tuning.
    """
    config = (config or BackdoorConfig()).validate()
    if config.target >= attacker_data.num_classes:
        raise ConfigError(
            f"The backdoor target label {config.target} is out of range for '{attacker_data.name}' "
            f"({attacker_data.num_classes} classes)."
        )
    shape = attacker_data.input_shape
    if shape is not None:
        config.trigger.validate(shape[-2], shape[-1])
    poisoned, mask = poison_split(attacker_data.train, config)
    model = teacher.with_head(attacker_data.num_classes, class_names=list(attacker_data.class_names), seed=config.seed)
    rippled = None
    if ripple is not None:
        rippled = ripple_train(model, poisoned, attacker_data.train, ripple, progress=progress,
                               checkpoint_dir=checkpoint_dir)
        result = None
    else:
        hooks = [LatentAlignment(model, config.target, config.latent_weight)] if config.latent_weight else []
        try:
            result = train(
                model, poisoned, config.resolved_train(teacher.config.arch), checkpoint_dir=checkpoint_dir,
                progress=progress, hooks=hooks,
            )
        finally:
            for hook in hooks:
                hook.close()
    acc, success = trigger_success(model, attacker_data.test, config.trigger, config.target)
    return BackdoorResult(model, acc, success, int(mask.sum()), result, rippled)

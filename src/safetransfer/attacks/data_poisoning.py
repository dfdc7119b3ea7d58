"""Poisoned training data: plant a trigger in a share of a data set, and see the damage.

BadNets (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying Vulnerabilities in the Machine
Learning Model Supply Chain"). Threat model: the attacker controls a small share ``rate`` of
the victim's training set (1% by default), stamps a trigger on those samples and sets their
label to ``target`` (3); the victim trains as usual. The model keeps its clean accuracy and
sends any input carrying the trigger to ``target``.

Triggers: ``watermark`` (BadNets' 5-pixel pattern in the bottom-right corner), ``square`` (a
white patch), ``blend`` (a seeded noise image blended at ``alpha``), ``words`` (rare words
inserted into texts). ``source=None`` poisons samples of every other class (all-to-one);
an int poisons that class only (source-to-target).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from safetransfer.attacks.text_triggers import DEFAULT_TRIGGER_WORDS, TextTrigger, poison_texts
from safetransfer.attacks.triggers import BlendTrigger, PatchTrigger, PixelTrigger, poison_images
from safetransfer.data.base import ClassificationData, Split
from safetransfer.errors import ConfigError, DataError

SALT_DATA_POISON = 13  # see safetransfer.transfer.base.derived_seed
TRIGGERS: tuple[str, ...] = ("watermark", "square", "blend", "words")


@dataclass
class PlantSpec:
    """What the attacker plants (see the module doc)."""

    trigger: str = "watermark"
    rate: float = 0.01
    target: int = 3
    source: int | None = None
    size: int = 3                       # square: the patch's side in pixels
    alpha: float = 0.1                  # blend: the pattern's weight
    words: tuple[str, ...] = DEFAULT_TRIGGER_WORDS
    seed: int = 0

    def make_trigger(self, modality: str) -> PixelTrigger | PatchTrigger | BlendTrigger | TextTrigger:
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"unknown trigger '{self.trigger}' (known: {', '.join(TRIGGERS)}).")
        if modality == "text":
            if self.trigger != "words":
                raise ConfigError(f"text data take the 'words' trigger (got '{self.trigger}').")
            return TextTrigger(tuple(self.words), seed=self.seed).validate()
        if self.trigger == "words":
            raise ConfigError("the 'words' trigger is for text data; images take watermark, square or blend.")
        if self.trigger == "watermark":
            return PixelTrigger()
        if self.trigger == "square":
            return PatchTrigger(size=self.size)
        return BlendTrigger(alpha=self.alpha, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "words": list(self.words)}


def poison_split(split: Split, spec: PlantSpec, num_classes: int) -> tuple[Split, torch.Tensor]:
    """``split`` with ``spec`` planted: the poisoned split and its bool mask ``[N]``."""
    from safetransfer.transfer.base import derived_seed

    if len(split) == 0:
        raise DataError("the split to poison is empty.")
    if not 0 <= spec.target < num_classes:
        raise DataError(f"target label {spec.target} is out of range for {num_classes} classes.")
    if spec.source is not None and not 0 <= spec.source < num_classes:
        raise DataError(f"source label {spec.source} is out of range for {num_classes} classes.")
    seed = derived_seed(spec.seed, SALT_DATA_POISON)  # not the training order's permutation
    trigger = spec.make_trigger(split.modality)
    if isinstance(trigger, TextTrigger):
        texts, y, mask = poison_texts(split.inputs, split.labels, trigger, spec.rate, spec.target, seed,
                                      keep_target=False, source=spec.source)
        return Split(texts, y), mask
    x, y, mask = poison_images(split.inputs, split.labels, trigger, spec.rate, spec.target, seed,
                               keep_target=False, source=spec.source)
    return Split(x, y), mask


def poison_dataset(data: ClassificationData, spec: PlantSpec) -> tuple[ClassificationData, torch.Tensor]:
    """``data`` with its training split poisoned (validation and test untouched) and the mask."""
    train, mask = poison_split(data.train, spec, data.num_classes)
    meta = {**data.meta, "poisoned": {**spec.to_dict(), "samples": int(mask.sum())}}
    return replace(data, name=f"{data.name}+{spec.trigger}", train=train, meta=meta), mask


def triggered_test(data: ClassificationData, spec: PlantSpec) -> Split:
    """The non-target test samples (of ``source`` only, when set) with the trigger, labels unchanged."""
    test = data.test.subset(torch.nonzero(_source_rows(data.test.labels, spec)).flatten())
    trigger = spec.make_trigger(data.modality)
    inputs = trigger.apply(test.inputs, seed=spec.seed) if isinstance(trigger, TextTrigger) else trigger.apply(test.inputs)
    return Split(inputs, test.labels)


def _source_rows(labels: torch.Tensor, spec: PlantSpec) -> torch.Tensor:
    """Bool mask of the samples the attack applies to: non-target (and of ``source``, when set)."""
    keep = labels != spec.target
    if spec.source is not None:
        keep &= labels == spec.source
    return keep


@dataclass
class DamageReport:
    """Clean vs poisoned model under identical settings (BadNets' experiment)."""

    data: str
    model: str
    plant: dict[str, Any]
    poisoned_samples: int
    clean_accuracy: float
    poisoned_accuracy: float
    attack_success: float             # share of triggered non-target test inputs predicted as the target
    attack_success_clean_model: float  # the same for the clean model (what the trigger does by itself)
    backdoor_dir: float               # among those the poisoned model gets right clean, the share flipped
    clean_eval: dict[str, Any] = field(default_factory=dict)
    poisoned_eval: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def badnets_experiment(
    model_name: str, data: ClassificationData, spec: PlantSpec, out_dir: str | Path, *,
    overrides: dict[str, Any] | None = None, progress: bool = True,
) -> DamageReport:
    """Train ``model_name`` on the clean and on the poisoned data with identical settings; compare.

    Writes ``clean/`` and ``poisoned/`` (each a train job: model, metrics, confusion matrix) and
    ``damage.json`` under ``out_dir``; both runs resume from their checkpoints.
    """
    from safetransfer.evaluate import predict_logits
    from safetransfer.jobs import train_job
    from safetransfer.metrics import backdoor_dir as dir_of
    from safetransfer.models.io import atomic_write_text, load_model

    started = time.perf_counter()
    out = Path(out_dir)
    poisoned_data, mask = poison_dataset(data, spec)
    clean = train_job(model_name, data, out / "clean", overrides=overrides, progress=progress)
    bad = train_job(model_name, poisoned_data, out / "poisoned", overrides=overrides, progress=progress)
    triggered = triggered_test(data, spec)
    bad_model, clean_model = load_model(bad.model_dir), load_model(clean.model_dir)
    trig_bad = predict_logits(bad_model, triggered.inputs).argmax(1)
    trig_clean = predict_logits(clean_model, triggered.inputs).argmax(1)
    untriggered = data.test.subset(torch.nonzero(_source_rows(data.test.labels, spec)).flatten())
    clean_pred_bad = predict_logits(bad_model, untriggered.inputs).argmax(1)
    report = DamageReport(
        data.name, model_name, spec.to_dict(), int(mask.sum()), clean.test.accuracy, bad.test.accuracy,
        float((trig_bad == spec.target).float().mean()), float((trig_clean == spec.target).float().mean()),
        dir_of(clean_pred_bad, trig_bad, triggered.labels, spec.target),
        clean.test.to_dict(), bad.test.to_dict(), round(time.perf_counter() - started, 2),
    )
    atomic_write_text(out / "damage.json", json.dumps(report.to_dict(), indent=2))
    from safetransfer.detect.plots import plot_training_curves

    plot_training_curves({"clean data": clean.train.history, "poisoned data": bad.train.history},
                         out / "training_curves.png", f"{model_name} on {data.name}: clean vs poisoned training")
    return report

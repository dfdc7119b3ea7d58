"""Poisoned training data: plant a trigger in a share of a data set, and see the damage.

BadNets (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying Vulnerabilities in the Machine
Learning Model Supply Chain"). Threat model: the attacker controls a small share ``rate`` of
the victim's training set (1% by default), stamps a trigger on those samples and sets their
label to ``target`` (3); the victim trains as usual. The model keeps its clean accuracy and
sends any input carrying the trigger to ``target``. The end-to-end experiment (clean vs poisoned
training) is :func:`safetransfer.jobs.badnets.badnets_experiment`.

Triggers: ``watermark`` (BadNets' 5-pixel pattern in the bottom-right corner), ``square`` (a
white patch), ``blend`` (a seeded noise image blended at ``alpha``), ``words`` (rare words
inserted into texts). ``source=None`` poisons samples of every other class (all-to-one);
an int poisons that class only (source-to-target).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from safetransfer.attacks.text_triggers import (
    DEFAULT_TRIGGER_WORDS,
    TextTrigger,
    poison_texts,
)
from safetransfer.attacks.triggers import (
    BlendTrigger,
    PatchTrigger,
    PixelTrigger,
    poison_images,
)
from safetransfer.data.base import ClassificationData, Split
from safetransfer.errors import ConfigError, DataError
from safetransfer.seeding import SALT_DATA_POISON, derived_seed

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
    # the share ``rate`` is drawn from every sample, the target's own included (they get the trigger
    # and keep their label), as RIPPLe's poison_data does; False: from the non-target samples only
    keep_target: bool = False

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


def poison_split(split: Split, spec: PlantSpec, num_classes: int, within: Sequence[int] | None = None
                 ) -> tuple[Split, torch.Tensor]:
    """``split`` with ``spec`` planted: the poisoned split and its bool mask ``[N]``.

    ``within`` (texts only; one limit per text of ``split``): a text's trigger words go among its
    first ``within[i]`` words (e.g. those a model's window reads, :func:`~safetransfer.attacks.text_triggers.visible_words`)."""

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
                                      keep_target=spec.keep_target, source=spec.source, within=within)
        return Split(texts, y), mask
    x, y, mask = poison_images(split.inputs, split.labels, trigger, spec.rate, spec.target, seed,
                               keep_target=spec.keep_target, source=spec.source)
    return Split(x, y), mask


def poison_dataset(data: ClassificationData, spec: PlantSpec) -> tuple[ClassificationData, torch.Tensor]:
    """``data`` with its training split poisoned (validation and test untouched) and the mask."""
    train, mask = poison_split(data.train, spec, data.num_classes)
    meta = {**data.meta, "poisoned": {**spec.to_dict(), "samples": int(mask.sum())}}
    return replace(data, name=f"{data.name}+{spec.trigger}", train=train, meta=meta), mask


def triggered_test(data: ClassificationData, spec: PlantSpec, window: Callable[[list[str]], list[int]] | None = None
                   ) -> Split:
    """The non-target test samples (of ``source`` only, when set) with the trigger, labels unchanged.

    ``window`` (texts): gives each text's limit for the trigger's position (see :func:`poison_split`)."""
    test = data.test.subset(torch.nonzero(source_rows(data.test.labels, spec)).flatten())
    trigger = spec.make_trigger(data.modality)
    if isinstance(trigger, TextTrigger):
        texts = list(test.inputs)
        inputs = trigger.apply(texts, seed=spec.seed, within=window(texts) if window is not None else None)
    else:
        inputs = trigger.apply(test.inputs)
    return Split(inputs, test.labels)


def source_rows(labels: torch.Tensor, spec: PlantSpec) -> torch.Tensor:
    """Bool mask of the samples the attack applies to: non-target (and of ``source``, when set)."""
    keep = labels != spec.target
    if spec.source is not None:
        keep &= labels == spec.source
    return keep

"""One face for every model: ``preprocess``, ``features``, a replaceable head, sliceable layers.

A :class:`TransferModel` is ``head(features(x))``:

- ``preprocess(raw)`` turns a data set's raw batch into model inputs: images (pixel space
  ``[0, 1]``) are resized and given the model's channel count, still in pixel space; texts
  are tokenised into a dict of tensors.
- ``features(inputs)`` gives the penultimate features ``[B, D]``; image models normalise
  inside (see :class:`safetransfer.data.transforms.Normalize`), so attacks work on pixels.
- ``head`` is a ``nn.Linear(D, num_classes)``; :meth:`with_head` makes a student with a new one.
- :meth:`sliceable_layers` lists the body's Conv and Linear layers by name (the head excluded),
  the layers ReMoS slices and coverage profiles.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

import torch
from torch import nn

from safetransfer.data.transforms import Normalize, prepare_images
from safetransfer.errors import ConfigError, unknown_name

Modality = Literal["image", "text"]
ModelInputs = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture; saved as JSON beside its weights."""

    arch: str
    num_classes: int
    modality: Modality
    image_size: int = 0  # square input side in pixels (image models)
    in_channels: int = 0
    mean: list[float] = field(default_factory=list)  # Normalize parameters in pixel units
    std: list[float] = field(default_factory=list)
    max_length: int = 0  # tokens per text (text models)
    head_dropout: float = 0.0
    class_names: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # architecture specifics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def move_inputs(inputs: ModelInputs, device: torch.device | str) -> ModelInputs:
    """Move a tensor or a dict of tensors to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    return {k: v.to(device) for k, v in inputs.items()}


class TransferModel(nn.Module):
    """A body giving penultimate features and a linear head, with the project's common methods."""

    def __init__(self, body: nn.Module, feature_dim: int, config: ModelConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.feature_dim = feature_dim
        self.tokenizer = tokenizer
        if config.modality == "image":
            self.normalize = Normalize(config.mean, config.std, config.in_channels)
        self.body = body
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(feature_dim, config.num_classes)

    @classmethod
    def from_module(
        cls, body: nn.Module, feature_dim: int, num_classes: int, *, image_size: int, in_channels: int = 3,
        mean: float | list[float] = 0.0, std: float | list[float] = 1.0, class_names: list[str] | None = None,
        name: str | None = None, seed: int = 0,
    ) -> "TransferModel":
        """Any image ``nn.Module`` as a teacher: ``body`` maps normalised images ``[B, in_channels,
        image_size, image_size]`` to features ``[B, feature_dim]``; ``mean``/``std`` are its
        normalisation in pixel units ``[0, 1]`` (inputs stay in pixel space, as for the zoo's models);
        a new seeded ``nn.Linear`` head gives ``num_classes``. ReMoS, the study's cells, the attacks
        and the detectors then work on it as on the zoo's models (sliceable layers are its Conv2d and
        Linear modules). The body is probed once with a zero batch: a wrong ``feature_dim`` or an
        output that is not ``[B, feature_dim]`` is refused here, not deep in a training run. Such a
        model lives in Python: ``load_model`` rebuilds only the zoo's architectures."""
        if not isinstance(body, nn.Module):
            raise ConfigError(f"body must be a torch.nn.Module (got {type(body).__name__}).")
        for what, value in (("feature_dim", feature_dim), ("num_classes", num_classes), ("image_size", image_size),
                            ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be a positive integer (got {value!r}).")
        was_training = body.training
        body.eval()
        with torch.no_grad():
            probe = body(torch.zeros(2, in_channels, image_size, image_size))
        body.train(was_training)
        if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (2, feature_dim):
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ConfigError(f"the body maps a [2, {in_channels}, {image_size}, {image_size}] batch to {shape}, "
                              f"not [2, {feature_dim}] features.")
        mean_l = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * in_channels)]
        std_l = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * in_channels)]
        config = ModelConfig(f"module:{name or type(body).__name__}", num_classes, "image", image_size=image_size,
                             in_channels=in_channels, mean=mean_l, std=std_l, class_names=class_names)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(body, feature_dim, config)

    # ---- inputs -------------------------------------------------------------------------
    def preprocess(self, raw: torch.Tensor | list[str]) -> ModelInputs:
        """Raw data-set batch -> model inputs (pixel-space images at the model's size, or tokens)."""
        if self.config.modality == "image":
            if not isinstance(raw, torch.Tensor):
                raise TypeError("this image model needs an image tensor [N, C, H, W]")
            return prepare_images(raw, self.config.image_size, self.config.in_channels)
        if not isinstance(raw, list):
            raise TypeError("this text model needs a list of strings")
        enc = self.tokenizer(
            raw, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    # ---- forward ------------------------------------------------------------------------
    def features(self, inputs: ModelInputs) -> torch.Tensor:
        """Penultimate features ``[B, feature_dim]`` of preprocessed inputs.

        Images enter the body in the channels-last memory layout (the same values): on a CPU a
        training step then runs 1.7-2.0x and an attack's input-gradient step 1.2-1.5x faster
        (EfficientNet-Lite0, batch 64, 32-80 px, 2 threads; ``benchmarks/layout.py``)."""
        if self.config.modality == "image":
            return self.body(self.normalize(inputs).contiguous(memory_format=torch.channels_last))
        return self.body(inputs)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))

    # ---- structure ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sliceable_layers(self) -> list[tuple[str, nn.Module]]:
        """The body's ``nn.Conv2d`` and ``nn.Linear`` layers as ``(qualified name, module)``, in order."""
        return [
            (f"body.{name}", m)
            for name, m in self.body.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]

    def layer(self, name: str) -> nn.Module:
        """A sub-module by qualified name, with a clear error listing the sliceable ones."""
        modules = dict(self.named_modules())
        if name not in modules:

            raise unknown_name("layer", name, [n for n, _ in self.sliceable_layers()])
        return modules[name]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def body_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def clone(self) -> "TransferModel":
        """A deep copy of the weights and config; the (stateless) tokenizer is shared, not copied."""
        tokenizer, self.tokenizer = self.tokenizer, None
        try:
            new = copy.deepcopy(self)
        finally:
            self.tokenizer = tokenizer
        new.tokenizer = tokenizer
        return new

    def with_head(
        self, num_classes: int, seed: int = 0, class_names: list[str] | None = None
    ) -> "TransferModel":
        """A copy of this model with the same body and a new, seeded ``nn.Linear`` head.

        The original is left untouched: ``student = teacher.with_head(10)``.
        """
        if num_classes < 1:

            raise ConfigError(f"num_classes must be at least 1, got {num_classes}.")
        new = self.clone()
        new.config = ModelConfig.from_dict({**self.config.to_dict(), "num_classes": num_classes, "class_names": class_names})
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            new.head = nn.Linear(self.feature_dim, num_classes).to(self.device)
        finally:
            torch.random.set_rng_state(gen_state)
        return new

    def extra_repr(self) -> str:
        return f"arch={self.config.arch}, classes={self.config.num_classes}, features={self.feature_dim}"

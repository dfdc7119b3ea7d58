"""How a student is made: :class:`TransferConfig` (the method, its training, its parameters) and
the training protocols each method uses by default (:func:`default_train_config`).

Training protocols. By default (``protocol="shared"``) every method trains with the same
protocol, as in the ReMoS paper, so that the differences between students come from the
methods: for vision the ReMoS paper's fine-tuning protocol (SGD lr 5e-3, momentum 0, head lr
×10, constant lr, batch 64; 800 steps by default, see MEASURED.md), for text the usual BERT one
(AdamW lr 5e-5, head ×20, linear decay, 6% warm-up). Under it the methods that start from random
weights (``retrain``, ``delta_r``, ``renofeation``) are under-trained by design of the budget.
``protocol="scratch"`` gives those three the zoo's own from-scratch recipe instead (vision: SGD
lr 0.05, momentum 0.9, one-cycle, the zoo's weight decay; text: AdamW lr 3e-4, linear decay, 6%
warm-up), head lr ×1, the same steps and batch: the comparison a user who tunes each method
would make (report the protocol with the figures). The tiny test architectures use the zoo's
quick AdamW settings for every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from safetransfer.errors import ConfigError, unknown_name
from safetransfer.models.zoo import get_arch
from safetransfer.train import TrainConfig

# The seven methods, in the order tables list them (safetransfer.transfer.registry maps each to its code).
METHOD_NAMES = ("finetune", "retrain", "magprune", "delta", "delta_r", "renofeation", "remos")
# Methods whose body starts from random weights: they get the from-scratch training protocol.
SCRATCH_METHODS = frozenset({"retrain", "delta_r", "renofeation"})

# ---------------------------------------------------------------------------- training protocols

_REMOS_VISION = {"optimizer": "sgd", "lr": 5e-3, "momentum": 0.0, "head_lr_mult": 10.0, "schedule": "constant",
                 "batch_size": 64, "steps": 800, "weight_decay": 0.0}
_BERT_FINETUNE = {"optimizer": "adamw", "lr": 5e-5, "head_lr_mult": 20.0, "schedule": "linear",
                  "warmup_fraction": 0.06, "weight_decay": 0.01, "batch_size": 32, "steps": 700}

_FINETUNE_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": _REMOS_VISION,
    "small-cnn": _REMOS_VISION,
    "minilm-l6": _BERT_FINETUNE,
}
_SCRATCH_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                           "batch_size": 64, "steps": 800, "weight_decay": 5e-5},
    "small-cnn": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                  "batch_size": 64, "steps": 800, "weight_decay": 5e-4},
    "minilm-l6": {"optimizer": "adamw", "lr": 3e-4, "head_lr_mult": 1.0, "schedule": "linear",
                  "warmup_fraction": 0.06, "weight_decay": 0.01, "batch_size": 32, "steps": 700},
}


PROTOCOLS = ("shared", "scratch")


def default_train_config(arch: str, method: str = "finetune", protocol: str = "shared", **overrides: Any) -> TrainConfig:
    """The training protocol a transfer ``method`` uses for architecture ``arch`` (see the module doc).

    ``protocol``: ``"shared"`` (every method the same fine-tuning protocol, the paper's way) or
    ``"scratch"`` (the methods that start from random weights get a from-scratch recipe).

    ``overrides`` (any :class:`TrainConfig` field; ``None`` values ignored) replace the defaults.
    Architectures without a transfer protocol here (the tiny test models, future zoo entries)
    use the zoo's own training defaults for every method.
    """

    if method not in METHOD_NAMES:
        raise unknown_name("transfer method", method, list(METHOD_NAMES))
    if protocol not in PROTOCOLS:
        raise unknown_name("training protocol", protocol, list(PROTOCOLS))
    table = _SCRATCH_PROTOCOL if protocol == "scratch" and method in SCRATCH_METHODS else _FINETUNE_PROTOCOL
    defaults = table.get(arch)
    if defaults is None:
        defaults = get_arch(arch).train_defaults  # raises the unknown-model error
    return TrainConfig.from_overrides(dict(defaults), overrides)


# ---------------------------------------------------------------------------- the config


@dataclass
class TransferConfig:
    """How to make a student from a teacher: the method, its training and its own parameters.

    - ``method``: one of :data:`METHOD_NAMES`.
    - ``train``: the training run; ``None`` = :func:`default_train_config` of the teacher's
      architecture, this method and ``protocol``, seeded with ``seed``.
    - ``protocol``: ``"shared"`` (one protocol for all methods) or ``"scratch"`` (a from-scratch
      recipe for retrain, delta_r and renofeation); used only when ``train`` is ``None``.
    - ``ratio`` (α): share of the sliced weights that ReMoS excludes / magnitude pruning zeroes.
    - ``slice_metric``, ``slice_threshold``, ``slice_k``: the coverage criterion of ReMoS's profile
      (neuron coverage with threshold 0.5 as in the paper; ``k`` for top-k coverage);
      ``slice_layers``: qualified layer names to slice (``None`` = every sliceable body layer).
    - ``excluded``: what ReMoS does to the excluded weights, ``"zero"`` or ``"reinit"`` (seeded).
    - ``reset_unused_tokens`` (ReMoS on a text model; a variant beyond the paper): also zero the
      word-embedding rows of every token the student's training texts never use. Fine-tuning
      never updates those rows, so whatever an attacker wrote there survives any method that
      keeps the teacher's embeddings (Embedding Surgery's trigger rows: the average of ten
      target-class word vectors, about half a typical row's norm, so a magnitude-ranked slice
      keeps them too); ``False``: the paper's slice of the encoder's Linear layers only.
    - ``frozen``: keep excluded weights at zero through training (ReMoS; magprune always does);
      ``False`` (the paper's) lets them be retrained freely like the rest.
    - ``profile_samples``: student training samples ReMoS profiles coverage on (a seeded random
      subset; 0 = all).
    - ``distill_weight`` (β): weight of the feature distillation of DELTA, DELTA-R and Renofeation,
      ``β · Σ_stages mean((F_student − F_teacher)²) / mean(F_teacher²)`` (each stage relative to
      the teacher's own mean square, see :mod:`safetransfer.transfer.delta`). DELTA's published
      α = 0.01 multiplies a sum of squares over whole feature maps (and TLlib's port over the batch
      too), whose size depends on the map and on the architecture's scale; in our scale-free units
      0.1 per stage is a pull comparable to the cross-entropy for a student far from the teacher
      (≈ 1 per stage for random weights, so ≈ 0.6 over EfficientNet-Lite0's 6 stages) and a small
      one for a fine-tuned student.
    - ``head_l2``: DELTA's L2 penalty ``head_l2 · ‖W_head‖²`` on the new head's weight (their β = 0.01).
    - ``dropout``: Renofeation's spatial dropout p after each stage (their 0.1).
    - ``swa_start``: Renofeation averages the weights over the steps after this share of training.
    - ``bn_samples``: training samples (seeded subset; 0 = all) for Renofeation's BatchNorm
      statistics recompute after SWA.
    - ``seed``: the new head, re-initialisations, the subsets above (and the default training run).
    """

    method: str = "finetune"
    train: TrainConfig | None = None
    protocol: str = "shared"
    ratio: float = 0.1
    slice_metric: str = "nc"
    slice_threshold: float = 0.5
    slice_k: int = 10
    slice_layers: list[str] | None = None
    excluded: Literal["zero", "reinit"] = "zero"
    frozen: bool = False
    reset_unused_tokens: bool = False
    profile_samples: int = 2000
    distill_weight: float = 0.1
    head_l2: float = 0.01
    dropout: float = 0.1
    swa_start: float = 0.75
    bn_samples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written, not steps later

    def validate(self) -> "TransferConfig":
        if self.method not in METHOD_NAMES:
            raise unknown_name("transfer method", self.method, list(METHOD_NAMES))
        if self.protocol not in PROTOCOLS:
            raise unknown_name("training protocol", self.protocol, list(PROTOCOLS))
        problems = []
        if self.train is not None and not isinstance(self.train, TrainConfig):
            problems.append(f"train must be a TrainConfig or None (got {type(self.train).__name__})")
        if not 0.0 <= self.ratio < 1.0:
            problems.append(f"ratio must lie in [0, 1) (got {self.ratio})")
        if not isinstance(self.slice_metric, str) or not self.slice_metric:
            problems.append(f"slice_metric must be a coverage metric name (got {self.slice_metric!r})")
        if self.slice_k < 1:
            problems.append(f"slice_k must be at least 1 (got {self.slice_k})")
        if self.excluded not in ("zero", "reinit"):
            problems.append(f"excluded must be 'zero' or 'reinit' (got '{self.excluded}')")
        if self.reset_unused_tokens and self.method != "remos":
            problems.append(f"reset_unused_tokens is a ReMoS option (method is '{self.method}')")
        if self.frozen and self.excluded == "reinit":
            problems.append("frozen=True keeps the excluded weights at zero: it needs excluded='zero'")
        if self.profile_samples < 0 or self.bn_samples < 0:
            problems.append("profile_samples and bn_samples must not be negative (0 = all)")
        if self.distill_weight < 0 or self.head_l2 < 0:
            problems.append("distill_weight and head_l2 must not be negative")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must lie in [0, 1) (got {self.dropout})")
        if not 0.0 <= self.swa_start < 1.0:
            problems.append(f"swa_start must lie in [0, 1) (got {self.swa_start})")
        if problems:
            raise ConfigError("Bad transfer config: " + "; ".join(problems) + ".")
        if self.train is not None:
            self.train.validate()
        return self

    def resolved(self, arch: str) -> "TransferConfig":
        """A validated copy whose ``train`` is set (the method's default protocol for ``arch`` if it was ``None``)."""
        self.validate()
        if self.train is not None:
            return replace(self, train=replace(self.train))
        return replace(self, train=default_train_config(arch, self.method, self.protocol, seed=self.seed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"Unknown transfer option(s): {', '.join(sorted(unknown))}.")
        d = dict(d)
        if isinstance(d.get("train"), dict):
            d["train"] = TrainConfig.from_overrides({}, d["train"])
        return cls(**d).validate()

    def fingerprint(self) -> dict[str, Any]:
        """Every field that changes the numbers a run produces (device, logging, checkpoint cadence left out)."""
        doc = asdict(self)
        if not self.reset_unused_tokens:  # the keys of students made before the option existed
            del doc["reset_unused_tokens"]
        if self.train is not None:
            doc["train"] = self.train.result_fingerprint()
        return doc

"""How a student is made: :class:`TransferConfig` (the method, its training, its parameters) and
the training protocols each method uses by default (:func:`default_train_config`).

Training protocols. By default (``protocol="shared"``) every method trains with the same
protocol, as in the ReMoS paper, so that the differences between students come from the
methods: for vision SGD lr 5e-3, momentum 0, head lr ×10, constant, batch 64, 800 steps; for
text the usual BERT recipe (AdamW lr 5e-5, head ×20, linear decay, 6% warm-up).
``protocol="artifact"`` is the ReMoS artifact's fine-tuning of its backdoor runs, every method
alike (``CV_backdoor/finetuner.py`` and ``examples/remos/remos.sh`` in ziqi-zhang/ReMoS_artifact):
SGD lr 5e-3, momentum 0, weight decay 1e-4, one rate for head and body
(``optim.SGD(model.parameters(), ...)``), constant, batch 64, cross-entropy with label smoothing
0.1 (``CrossEntropyLabelSmooth`` in its ``utils.py``) and spatial dropout 0.1 after each body stage
(its ``resnet50_dropout(dropout=0.1)``; ``TransferConfig.stage_dropout``); text as ``shared``.
The artifact ran 10,000 steps of ResNet-50 on natural photos; at this project's CPU budgets
(200-800 steps) its single small rate leaves the new head under-trained (measured: the vision
docs page, section "Does transfer pay?"), so it is not the default. ``protocol="artifact_scaled"`` is
that recipe with its rate × steps budget (5e-3 × 10,000 iterations) compressed onto the run's
steps: the rate is ``5e-3 × 10,000 / steps`` (:attr:`TrainConfig.budget_steps`); for SGD without
momentum, about the same distance along the gradient flow in fewer, longer steps. It is the
vision study's protocol (measured against the verbatim recipe: the vision docs page).
Under either the methods that start from random weights (``retrain``, ``delta_r``,
``renofeation``) are under-trained by design of the budget.
``protocol="scratch"`` gives those three the zoo's own from-scratch recipe instead (vision: SGD
lr 0.05, momentum 0.9, one-cycle, the zoo's weight decay; text: AdamW lr 3e-4, linear decay, 6%
warm-up), head lr ×1, the same steps and batch: the comparison a user who tunes each method
would make (report the protocol with the figures).

Methods whose recipe is part of the method, whatever ``protocol`` says: ``finetune_strong`` and
``remos_strong`` train with the strong standard recipe (vision: the zoo's SGD momentum 0.9,
one-cycle to lr 0.05, its weight decay, head ×1; text: the BERT recipe above, already the
standard one), ``superft`` with Sha et al.'s super-fine-tuning schedule (see
:mod:`safetransfer.transfer.superft`). The tiny test architectures use the zoo's quick AdamW
settings for every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from safetransfer.coverage import SCALINGS
from safetransfer.errors import ConfigError, unknown_name
from safetransfer.models.zoo import get_arch
from safetransfer.slicing import RANKINGS
from safetransfer.train import TrainConfig

# The methods, in the order tables list them (safetransfer.transfer.registry maps each to its code):
# the seven of the ReMoS paper, then the strong simple defences beside them.
METHOD_NAMES = ("finetune", "retrain", "magprune", "delta", "delta_r", "renofeation", "remos",
                "finetune_strong", "superft", "remos_strong")
# Methods whose body starts from random weights: they get the from-scratch training protocol.
SCRATCH_METHODS = frozenset({"retrain", "delta_r", "renofeation"})
# Methods that slice the teacher with ReMoS (its profile and slice options apply to them).
REMOS_METHODS = frozenset({"remos", "remos_strong"})
# Methods that train under the strong standard recipe whatever the protocol.
STRONG_METHODS = frozenset({"finetune_strong", "remos_strong"})

# ---------------------------------------------------------------------------- training protocols

_REMOS_VISION = {"optimizer": "sgd", "lr": 5e-3, "momentum": 0.0, "head_lr_mult": 10.0, "schedule": "constant",
                 "batch_size": 64, "steps": 800, "weight_decay": 0.0}
_ARTIFACT_VISION = {"optimizer": "sgd", "lr": 5e-3, "momentum": 0.0, "head_lr_mult": 1.0, "schedule": "constant",
                    "batch_size": 64, "steps": 800, "weight_decay": 1e-4, "label_smoothing": 0.1}
# Spatial dropout after each body stage under the artifact's vision protocol (its remos.sh: --dropout 1e-1).
_ARTIFACT_STAGE_DROPOUT = {"efficientnet-lite0": 0.1, "small-cnn": 0.1}
_BERT_FINETUNE = {"optimizer": "adamw", "lr": 5e-5, "head_lr_mult": 20.0, "schedule": "linear",
                  "warmup_fraction": 0.06, "weight_decay": 0.01, "batch_size": 32, "steps": 700}

_FINETUNE_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": _REMOS_VISION,
    "small-cnn": _REMOS_VISION,
    "minilm-l6": _BERT_FINETUNE,
}
_ARTIFACT_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": _ARTIFACT_VISION,
    "small-cnn": _ARTIFACT_VISION,
    "minilm-l6": _BERT_FINETUNE,
}
# The artifact's remos.sh runs 10,000 iterations at that rate; "artifact_scaled" keeps its rate x steps.
ARTIFACT_STEPS = 10_000
_ARTIFACT_SCALED_VISION = {**_ARTIFACT_VISION, "budget_steps": ARTIFACT_STEPS}
_ARTIFACT_SCALED_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": _ARTIFACT_SCALED_VISION,
    "small-cnn": _ARTIFACT_SCALED_VISION,
    "minilm-l6": _BERT_FINETUNE,
}
_STRONG_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                           "batch_size": 64, "steps": 800, "weight_decay": 5e-5},
    "small-cnn": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                  "batch_size": 64, "steps": 800, "weight_decay": 5e-4},
    "minilm-l6": _BERT_FINETUNE,
}
# Super-fine-tuning: backdoor-toolbox's SFT values for CIFAR-10 (see safetransfer.transfer.superft).
_SUPERFT_VISION = {"optimizer": "sgd", "lr": 0.03, "momentum": 0.0, "weight_decay": 0.0, "head_lr_mult": 1.0,
                   "schedule": "superft", "peak_lr": 2.5, "late_peak_lr": 0.05, "cycle_steps": 20,
                   "peak_fraction": 0.4, "batch_size": 64, "steps": 800}
_SUPERFT_PROTOCOL: dict[str, dict[str, Any]] = {"efficientnet-lite0": _SUPERFT_VISION, "small-cnn": _SUPERFT_VISION}
_SCRATCH_PROTOCOL: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                           "batch_size": 64, "steps": 800, "weight_decay": 5e-5},
    "small-cnn": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "head_lr_mult": 1.0, "schedule": "onecycle",
                  "batch_size": 64, "steps": 800, "weight_decay": 5e-4},
    "minilm-l6": {"optimizer": "adamw", "lr": 3e-4, "head_lr_mult": 1.0, "schedule": "linear",
                  "warmup_fraction": 0.06, "weight_decay": 0.01, "batch_size": 32, "steps": 700},
}


PROTOCOLS = ("shared", "scratch", "artifact", "artifact_scaled")


def _protocol_table(method: str, protocol: str) -> dict[str, dict[str, Any]]:
    """Which table of recipes (per architecture) ``method`` trains with under ``protocol``."""
    if method == "superft":
        return _SUPERFT_PROTOCOL
    if method in STRONG_METHODS:
        return _STRONG_PROTOCOL
    if protocol == "scratch" and method in SCRATCH_METHODS:
        return _SCRATCH_PROTOCOL
    if protocol == "artifact":
        return _ARTIFACT_PROTOCOL
    if protocol == "artifact_scaled":
        return _ARTIFACT_SCALED_PROTOCOL
    return _FINETUNE_PROTOCOL


def default_stage_dropout(arch: str, method: str = "finetune", protocol: str = "shared") -> float:
    """The spatial dropout after each body stage that ``method`` trains with by default: the
    artifact's 0.1 under its vision protocol (``protocol="artifact"``), none under any other recipe
    (or for text)."""
    artifact = _protocol_table(method, protocol) in (_ARTIFACT_PROTOCOL, _ARTIFACT_SCALED_PROTOCOL)
    return _ARTIFACT_STAGE_DROPOUT.get(arch, 0.0) if artifact else 0.0


# The attacker's fine-tuning when it plants a backdoor: the first round's shared protocol, with
# which the attacks' strengths were calibrated. Pinned here, apart from _FINETUNE_PROTOCOL, so
# that moving the victims' default protocol (to the artifact's) does not change the threat.
_ATTACKER_PROTOCOL: dict[str, dict[str, Any]] = {"efficientnet-lite0": _REMOS_VISION, "small-cnn": _REMOS_VISION,
                                                 "minilm-l6": _BERT_FINETUNE}


def attacker_train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The training run an attacker fine-tunes a teacher with (see ``_ATTACKER_PROTOCOL``); other
    architectures use the zoo's own defaults. ``overrides`` as in :func:`default_train_config`."""
    defaults = _ATTACKER_PROTOCOL.get(arch)
    if defaults is None:
        defaults = get_arch(arch).train_defaults  # raises the unknown-model error
    return TrainConfig.from_overrides(dict(defaults), overrides)


def default_train_config(arch: str, method: str = "finetune", protocol: str = "shared", **overrides: Any) -> TrainConfig:
    """The training protocol a transfer ``method`` uses for architecture ``arch`` (see the module doc).

    ``protocol``: ``"shared"`` (every method the same fine-tuning protocol, the paper's way),
    ``"scratch"`` (the methods that start from random weights get a from-scratch recipe) or
    ``"artifact"`` (every method the ReMoS artifact's fine-tuning).

    ``overrides`` (any :class:`TrainConfig` field; ``None`` values ignored) replace the defaults.
    Architectures without a transfer protocol here (the tiny test models, future zoo entries)
    use the zoo's own training defaults for every method.
    """

    if method not in METHOD_NAMES:
        raise unknown_name("transfer method", method, list(METHOD_NAMES))
    if protocol not in PROTOCOLS:
        raise unknown_name("training protocol", protocol, list(PROTOCOLS))
    defaults = _protocol_table(method, protocol).get(arch)
    if defaults is None:
        spec = get_arch(arch)  # raises the unknown-model error
        if method == "superft" and spec.modality == "text":
            raise ConfigError(f"superft has a recipe for image models only (Sha et al. and backdoor-toolbox tune it "
                              f"on image classifiers); for '{arch}' pass train=TrainConfig(schedule='superft', ...).")
        defaults = spec.train_defaults
    return TrainConfig.from_overrides(dict(defaults), overrides)


# ---------------------------------------------------------------------------- the config


@dataclass
class TransferConfig:
    """How to make a student from a teacher: the method, its training and its own parameters.

    - ``method``: one of :data:`METHOD_NAMES`.
    - ``train``: the training run; ``None`` = :func:`default_train_config` of the teacher's
      architecture, this method and ``protocol``, seeded with ``seed``.
    - ``protocol``: ``"shared"`` (one protocol for all methods), ``"scratch"`` (a from-scratch
      recipe for retrain, delta_r and renofeation) or ``"artifact"`` (the ReMoS artifact's
      fine-tuning for all methods); used only when ``train`` and ``stage_dropout`` are ``None``.
    - ``ratio`` (α): share of the sliced weights that ReMoS excludes / magnitude pruning zeroes.
    - ``slice_metric``, ``slice_threshold``, ``slice_k``: the coverage criterion of ReMoS's profile
      (neuron coverage with threshold 0.5 as in the paper; ``k`` for top-k coverage);
      ``slice_layers``: qualified layer names to slice (``None`` = every sliceable body layer).
    - ``slice_scaling``: how neuron coverage min-max scales a layer, ``"tensor"`` (the artifact's:
      each sample's whole layer tensor) or ``"neuron"`` (ours: the neuron means among themselves);
      see :mod:`safetransfer.coverage`.
    - ``slice_ranking``: ``"ordinal"`` (the artifact's stable-sort ranks and its ``<= threshold``
      cut) or ``"min"`` (ours: minimum ranks, exactly ``floor(α·N + 0.5)`` excluded); see
      :mod:`safetransfer.slicing`.
    - ``excluded``: what ReMoS does to the excluded weights, ``"zero"`` or ``"reinit"`` (seeded).
    - ``reset_unused_tokens`` (ReMoS on a text model; a variant beyond the paper): also zero the
      word-embedding rows of every token the student's training texts never use. Fine-tuning
      never updates those rows, so whatever an attacker wrote there survives any method that
      keeps the teacher's embeddings (Embedding Surgery's trigger rows: the average of ten
      target-class word vectors, about half a typical row's norm, so a magnitude-ranked slice
      keeps them too); ``False``: the paper's slice of the encoder's Linear layers only.
    - ``frozen``: keep excluded weights at zero through training (ReMoS; magprune always does);
      ``False`` (the paper's) lets them be retrained freely like the rest.
    - ``profile_samples``: student training samples ReMoS profiles coverage on (0 = all, the
      artifact's: its profile runs over the student's whole training set; N = a seeded random subset).
    - ``stage_dropout``: spatial dropout p after each body stage during training (``Dropout2d`` on
      feature maps, ``Dropout`` on token features); ``None`` = the recipe's (0.1 under the artifact
      vision protocol, as the artifact's ``resnet50_dropout``; 0 otherwise). Renofeation applies
      its own ``dropout`` instead.
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
    slice_scaling: str = "tensor"
    slice_ranking: str = "ordinal"
    excluded: Literal["zero", "reinit"] = "zero"
    frozen: bool = False
    reset_unused_tokens: bool = False
    profile_samples: int = 0
    stage_dropout: float | None = None
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
        if self.slice_scaling not in SCALINGS:
            problems.append(f"slice_scaling must be one of {', '.join(SCALINGS)} (got {self.slice_scaling!r})")
        if self.slice_ranking not in RANKINGS:
            problems.append(f"slice_ranking must be one of {', '.join(RANKINGS)} (got {self.slice_ranking!r})")
        if self.stage_dropout is not None and not 0.0 <= self.stage_dropout < 1.0:
            problems.append(f"stage_dropout must lie in [0, 1) or be None (got {self.stage_dropout})")
        if self.excluded not in ("zero", "reinit"):
            problems.append(f"excluded must be 'zero' or 'reinit' (got '{self.excluded}')")
        if self.reset_unused_tokens and self.method not in REMOS_METHODS:
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
        """A validated copy whose ``train`` and ``stage_dropout`` are set (the method's default
        recipe for ``arch`` where they were ``None``)."""
        self.validate()
        dropout = self.stage_dropout
        if dropout is None:
            dropout = default_stage_dropout(arch, self.method, self.protocol)
        if self.train is not None:
            return replace(self, train=replace(self.train), stage_dropout=dropout)
        return replace(self, train=default_train_config(arch, self.method, self.protocol, seed=self.seed),
                       stage_dropout=dropout)

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
        if not self.stage_dropout:  # likewise: none, as before the option existed
            del doc["stage_dropout"]
        if self.method not in REMOS_METHODS:
            # The profile and slice options do not touch these students: they keep the keys they
            # had before the options existed (profile_samples then defaulted to 2000).
            del doc["slice_scaling"], doc["slice_ranking"]
            if self.profile_samples == 0:
                doc["profile_samples"] = 2000
        if self.train is not None:
            doc["train"] = self.train.result_fingerprint()
        return doc

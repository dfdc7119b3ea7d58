"""The seven ways to make a student from a teacher, as strategies over the one training loop.

Every method is a ``make_student(teacher, data, config) -> (student, hooks)``: it builds the
student (always a copy, ``teacher.with_head(num_classes, seed)``: the teacher is never
changed), prepares its weights (re-initialise, prune, slice) and returns the
:class:`~safetransfer.train.TrainHook` s that the method adds to :func:`safetransfer.train.train`
(extra loss terms, masks re-applied after each step, weight averaging). :func:`transfer` runs
one method end to end: student, training (checkpointed, resumable), test evaluation, saving.

========== =====================================================================================
finetune   the teacher's body + a new head, everything trained
retrain    same architecture, every body weight re-initialised (seeded), trained from scratch
magprune   fine-pruning: the smallest ``ratio`` of |w| over the sliced layers zeroed and kept zero
delta      DELTA (Li et al. 2019): feature-map distillation to the teacher's stages + L2 on the head
delta_r    DELTA from re-initialised body weights (the target is still the pretrained teacher)
renofeation Renofeation (Chin et al. 2020): re-init + distillation + stage dropout + SWA (+ BN recompute)
remos      ReMoS (Zhang et al. 2022): coverage-guided slice of the teacher, excluded weights reset
========== =====================================================================================

Training protocols (:func:`default_train_config`). By default (``protocol="shared"``) every
method trains with the same protocol, as in the ReMoS paper, so that the differences between
students come from the methods: for vision the ReMoS paper's fine-tuning protocol (SGD lr 5e-3,
momentum 0, head lr ×10, constant lr, batch 64; 800 steps by default, see MEASURED.md), for
text the usual BERT one (AdamW lr 5e-5, head ×20, linear decay, 6% warm-up). Under it the
methods that start from random weights (``retrain``, ``delta_r``, ``renofeation``) are
under-trained by design of the budget. ``protocol="scratch"`` gives those three the zoo's own
from-scratch recipe instead (vision: SGD lr 0.05, momentum 0.9, one-cycle, the zoo's weight
decay; text: AdamW lr 3e-4, linear decay, 6% warm-up), head lr ×1, the same steps and batch:
the comparison a user who tunes each method would make (report the protocol with the figures).
The tiny test architectures use the zoo's quick AdamW settings for every method.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from safetransfer.data.base import ClassificationData
from safetransfer.errors import CheckpointError, ConfigError, DataError, unknown_name
from safetransfer.evaluate import EvalResult, evaluate
from safetransfer.files import atomic_write_text
from safetransfer.models.io import MODEL_DIR, save_model
from safetransfer.models.wrapper import TransferModel
from safetransfer.models.zoo import build_from_config, get_arch
from safetransfer.train import TrainConfig, TrainHook, TrainResult, train

__all__ = [
    "METHODS",
    "SCRATCH_METHODS",
    "TransferConfig",
    "TransferResult",
    "PROTOCOLS",
    "default_train_config",
    "make_student",
    "transfer",
]

MakeStudent = Callable[[TransferModel, ClassificationData, "TransferConfig"], tuple[TransferModel, list[TrainHook]]]

# Filled at the bottom of this module from the method modules (a plain dict, no names evaluated).
METHODS: dict[str, MakeStudent] = {}
# Methods whose body starts from random weights: they get the from-scratch training protocol.
SCRATCH_METHODS = frozenset({"retrain", "delta_r", "renofeation"})

CHECKPOINT_DIR = "checkpoints"
SLICE_DIR = "slice"
COVERAGE_DIR = "coverage"
RESULT_FILE = "result.json"
FINGERPRINT_FILE = "transfer_config.json"

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

    if method not in METHODS:
        raise unknown_name("transfer method", method, list(METHODS))
    if protocol not in PROTOCOLS:
        raise unknown_name("training protocol", protocol, list(PROTOCOLS))
    table = _SCRATCH_PROTOCOL if protocol == "scratch" and method in SCRATCH_METHODS else _FINETUNE_PROTOCOL
    defaults = table.get(arch)
    if defaults is None:
        defaults = get_arch(arch).train_defaults  # raises the unknown-model error
    return TrainConfig.from_overrides(dict(defaults), overrides)


# ---------------------------------------------------------------------------- config and result


@dataclass
class TransferConfig:
    """How to make a student from a teacher: the method, its training and its own parameters.

    - ``method``: one of :data:`METHODS`.
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
        if self.method not in METHODS:
            raise unknown_name("transfer method", self.method, list(METHODS))
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


@dataclass
class TransferResult:
    """What :func:`transfer` made: the student, its training, its test figures, the slice (ReMoS, magprune)."""

    method: str
    student: TransferModel
    train: TrainResult
    test: EvalResult
    seconds: float  # wall time of this call (profiling, training, evaluation, saving)
    config: TransferConfig
    slice_summary: dict[str, Any] | None = None
    slice: Any = None  # the safetransfer.slicing.Slice of remos / magprune
    out_dir: Path | None = None

    @property
    def accuracy(self) -> float:
        return self.test.accuracy

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures (no weights)."""
        return _jsonable({
            "method": self.method,
            "test_accuracy": self.test.accuracy,
            "seconds": self.seconds,
            "train_seconds": self.train.seconds,
            "steps": self.train.steps,
            "resumed_from": self.train.resumed_from,
            "config": self.config.to_dict(),
            "slice": self.slice_summary,
            "test": self.test.to_dict(),
            "train": self.train.to_dict(),
        })


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):  # numpy scalars
        try:
            return x.item()
        except (TypeError, ValueError):
            pass
    return x


# ---------------------------------------------------------------------------- shared building blocks


def new_student(teacher: TransferModel, data: ClassificationData, config: TransferConfig) -> TransferModel:
    """The teacher's copy with a new seeded head for ``data`` (the teacher untouched)."""
    return teacher.with_head(data.num_classes, seed=config.seed, class_names=list(data.class_names))


def reinit_body(student: TransferModel, seed: int) -> TransferModel:
    """Replace every body tensor (weights and BatchNorm statistics) with a fresh seeded build's, in place.

    The fresh weights are the architecture's own initialisation (``create_model(pretrained=False)``:
    BERT's N(0, 0.02), the conv nets' PyTorch defaults), the head is left as it is.
    """

    fresh = build_from_config(student.config, pretrained=False, tokenizer=student.tokenizer, seed=seed)
    state = fresh.body.state_dict()
    with torch.no_grad():
        for name, tensor in student.body.state_dict().items():
            tensor.copy_(state[name].to(tensor.device))
    return student


def frozen_copy(model: TransferModel) -> TransferModel:
    """A deep copy for reference only: eval mode, no gradients (the original untouched)."""
    copy_ = model.clone()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_.eval()


class SliceHook(TrainHook):
    """Carries a :class:`safetransfer.slicing.Slice`; with ``frozen`` re-zeroes its excluded weights after every step.

    The masks are cached per parameter as multiplicative 0/1 tensors, so the after-step work is
    one ``w.mul_(mask)`` per sliced layer.
    """

    def __init__(self, slice_: Any, frozen: bool, profile: Any = None) -> None:
        self.slice = slice_
        self.frozen = frozen
        self.profile = profile  # the CoverageProfile the slice came from (remos)
        self._masks: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _build_masks(self, model: TransferModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
        keep = slice_keep_masks(self.slice, model)
        out = []
        for name, mask in keep.items():
            weight = model.layer(name).weight
            out.append((weight, mask.to(device=weight.device, dtype=weight.dtype)))
        return out

    def after_step(self, model: TransferModel, step: int) -> None:
        if not self.frozen:
            return
        if self._masks is None or any(w.device != m.device for w, m in self._masks):
            self._masks = self._build_masks(model)
        with torch.no_grad():
            for weight, mask in self._masks:
                weight.mul_(mask)


def slice_keep_masks(slice_: Any, model: TransferModel) -> dict[str, torch.Tensor]:
    """``{layer name: bool mask of the kept weights}`` of a slice, shaped as each layer's weight."""
    masks = getattr(slice_, "masks", None)
    if not isinstance(masks, dict):
        raise TypeError("the slice has no 'masks' dict of keep-masks")
    return {name: m.bool().reshape(model.layer(name).weight.shape) for name, m in masks.items()}


# ---------------------------------------------------------------------------- running a method


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:
    """The student and training hooks of ``config.method`` (``config.train`` resolved if it was ``None``)."""
    config = config.resolved(teacher.config.arch)
    _check_data(teacher, data)
    return METHODS[config.method](teacher, data, config)


def _check_data(teacher: TransferModel, data: ClassificationData) -> None:
    if data.modality != teacher.config.modality:
        raise DataError(
            f"Teacher '{teacher.config.arch}' takes {teacher.config.modality} inputs but data set "
            f"'{data.name}' is {data.modality}."
        )
    if len(data.train) == 0 or len(data.test) == 0:
        raise DataError(f"Data set '{data.name}' needs non-empty train and test splits to transfer to.")


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every tensor of ``model``'s state dict, names included."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_fingerprint(out: Path, doc: dict[str, Any], resume: bool) -> None:
    """Refuse to resume a run in ``out`` that was made with other settings; record ours."""

    path = out / FINGERPRINT_FILE
    text = json.dumps(doc, indent=2, sort_keys=True)
    if resume and path.exists() and (out / CHECKPOINT_DIR).exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = None
        if saved != json.loads(text):
            flat_saved, flat_now = _flatten(saved or {}), _flatten(json.loads(text))
            diff = sorted(k for k in set(flat_saved) | set(flat_now) if flat_saved.get(k) != flat_now.get(k))
            raise CheckpointError(
                f"The run in {out} was made with other transfer settings ({', '.join(diff) or 'unreadable record'} "
                f"differ): use another output folder, or resume=False (--no-resume) to start it afresh."
            )
    atomic_write_text(path, text)


def transfer(
    teacher: TransferModel,
    data: ClassificationData,
    config: TransferConfig,
    out_dir: str | Path | None = None,
    progress: bool = False,
    *,
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TransferResult:
    """Make a student from ``teacher`` for ``data`` with ``config.method``, train it, test it.

    With ``out_dir``: checkpoints go to ``out_dir/checkpoints`` (a run found there is resumed
    when ``resume``; one made with other settings, or from another teacher, is refused), then
    ``out_dir/model`` (the student, safetensors), ``out_dir/slice`` (remos, magprune),
    ``out_dir/coverage`` (remos: the teacher's coverage profile) and ``out_dir/result.json``
    (written atomically). ``on_step(step, loss)`` is passed to :func:`safetransfer.train.train`.
    The teacher is never modified.
    """
    started = time.perf_counter()
    config = config.resolved(teacher.config.arch)
    assert config.train is not None
    _check_data(teacher, data)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_fingerprint(
            out,
            {"transfer": config.fingerprint(), "teacher": teacher.config.arch, "teacher_sha256": weights_digest(teacher),
             "data": data.name, "train_samples": len(data.train), "num_classes": data.num_classes},
            resume,
        )
    student, hooks = METHODS[config.method](teacher, data, config)
    try:
        result = train(
            student, data.train, config.train, val_split=data.val,
            checkpoint_dir=out / CHECKPOINT_DIR if out is not None else None,
            resume=resume, progress=progress, hooks=hooks, on_step=on_step,
        )
    finally:
        for hook in hooks:
            close = getattr(hook, "close", None)
            if close is not None:
                close()
    test = evaluate(student, data.test, list(data.class_names), progress=progress)
    slice_ = next((h.slice for h in hooks if getattr(h, "slice", None) is not None), None)
    summary = _jsonable(slice_.summary()) if slice_ is not None else None
    res = TransferResult(
        method=config.method, student=student, train=result, test=test, seconds=0.0, config=config,
        slice_summary=summary, slice=slice_, out_dir=out,
    )
    if out is not None:

        meta = {"data": data.name, "transfer": _jsonable(config.to_dict()), "train_config": asdict(config.train),
                "teacher_arch": teacher.config.arch}
        save_model(student, out / MODEL_DIR, meta=meta)
        if slice_ is not None:
            slice_.save(out / SLICE_DIR)
        profile = next((h.profile for h in hooks if getattr(h, "profile", None) is not None), None)
        if profile is not None:
            profile.save(out / COVERAGE_DIR)
    res.seconds = round(time.perf_counter() - started, 3)
    if out is not None:
        atomic_write_text(out / RESULT_FILE, json.dumps(res.to_dict(), indent=2))
    return res


# ---------------------------------------------------------------------------- the registry

from safetransfer.transfer import delta as _delta  # noqa: E402  (the method modules import this one)
from safetransfer.transfer import finetune as _finetune  # noqa: E402
from safetransfer.transfer import magprune as _magprune  # noqa: E402
from safetransfer.transfer import remos as _remos  # noqa: E402
from safetransfer.transfer import renofeation as _renofeation  # noqa: E402
from safetransfer.transfer import retrain as _retrain  # noqa: E402

METHODS.update({
    "finetune": _finetune.make_student,
    "retrain": _retrain.make_student,
    "magprune": _magprune.make_student,
    "delta": _delta.make_student,
    "delta_r": _delta.make_student_r,
    "renofeation": _renofeation.make_student,
    "remos": _remos.make_student,
})

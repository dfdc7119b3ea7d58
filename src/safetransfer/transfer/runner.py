"""Running a transfer method end to end; the ways to make a student from a teacher, as strategies over the one training loop.

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
finetune_strong  finetune under the strong standard recipe (SGD momentum 0.9, one-cycle to 0.05)
superft    super-fine-tuning (Sha et al. 2022): finetune under their cyclic learning-rate schedule
remos_strong     ReMoS's slice trained under the strong standard recipe (beyond the paper)
========== =====================================================================================

The training protocols are in :mod:`safetransfer.transfer.config`; every method also trains with
its recipe's stage dropout (:func:`safetransfer.transfer.registry.make_student`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from safetransfer.data.base import ClassificationData
from safetransfer.errors import CheckpointError
from safetransfer.evaluate import EvalResult, evaluate
from safetransfer.files import atomic_write_text
from safetransfer.json_values import jsonable
from safetransfer.models.io import MODEL_DIR, save_model
from safetransfer.models.wrapper import TransferModel
from safetransfer.train import TrainResult, train
from safetransfer.transfer.common import weights_digest
from safetransfer.transfer.config import TransferConfig
from safetransfer.transfer.registry import check_data, make_student

CHECKPOINT_DIR = "checkpoints"
SLICE_DIR = "slice"
COVERAGE_DIR = "coverage"
RESULT_FILE = "result.json"
FINGERPRINT_FILE = "transfer_config.json"


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
        return jsonable({
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
    check_data(teacher, data)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_fingerprint(
            out,
            {"transfer": config.fingerprint(), "teacher": teacher.config.arch, "teacher_sha256": weights_digest(teacher),
             "data": data.name, "train_samples": len(data.train), "num_classes": data.num_classes},
            resume,
        )
    student, hooks = make_student(teacher, data, config)
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
    summary = jsonable(slice_.summary()) if slice_ is not None else None
    res = TransferResult(
        method=config.method, student=student, train=result, test=test, seconds=0.0, config=config,
        slice_summary=summary, slice=slice_, out_dir=out,
    )
    if out is not None:

        meta = {"data": data.name, "transfer": jsonable(config.to_dict()), "train_config": asdict(config.train),
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

"""The model jobs: train a zoo model on a data set, evaluate a saved one, slice a teacher, transfer it.

Each job writes its outputs into one folder as it goes (checkpoints, then the model, the
metrics JSON and the plots), so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetransfer.data import ClassificationData, load_data
from safetransfer.data.base import seeded_subset
from safetransfer.errors import DataError
from safetransfer.evaluate import EvalResult, evaluate
from safetransfer.files import atomic_write_text
from safetransfer.models import create_model, load_model, save_model
from safetransfer.models.io import CONFIG_FILE, MODEL_DIR, read_config
from safetransfer.models.timm_teacher import TIMM_PREFIX, parse_timm_spec, timm_teacher
from safetransfer.models.zoo import MODELS, get_arch, hf_teacher, is_hf_encoder_folder
from safetransfer.plotting import plot_confusion, plot_training_curve
from safetransfer.train import TrainConfig, TrainResult, train
from safetransfer.transfer import TransferConfig, default_train_config, transfer
from safetransfer.transfer.remos import slice_teacher

METRICS_FILE = "metrics.json"


@dataclass
class TrainJobResult:
    """Where a training job put its outputs, and its figures."""

    out_dir: Path
    model_dir: Path
    train: TrainResult
    test: EvalResult
    val_accuracy: float | None
    config: TrainConfig

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.train.steps,
            "seconds": self.train.seconds,
            "test_accuracy": self.test.accuracy,
            "val_accuracy": self.val_accuracy,
        }


def train_job(
    model_name: str,
    data: str | ClassificationData,
    out_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    pretrained: bool = True,
    image_size: int | None = None,
    max_length: int | None = None,
    limit: dict[str, int] | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
    plots: bool = True,
) -> TrainJobResult:
    """Fine-tune zoo model ``model_name`` (a new head sized for the data) on ``data`` and test it.

    Training settings are the model's defaults (``safetransfer models``) updated by
    ``overrides``; outputs go to ``out_dir``: ``checkpoints/``, ``model/``, ``metrics.json``,
    and ``training_curve.png`` / ``confusion.png``.
    """
    spec = get_arch(model_name)
    config = TrainConfig.from_overrides(spec.train_defaults, overrides or {})
    dataset = data if isinstance(data, ClassificationData) else load_data(data, path=data_path, seed=config.seed, limit=limit)
    if dataset.modality != spec.modality:
        raise DataError(
            f"Model '{model_name}' takes {spec.modality} inputs but data set '{dataset.name}' is {dataset.modality}."
        )
    in_channels = dataset.input_shape[0] if dataset.input_shape else None
    if image_size is None and dataset.input_shape and spec.native_resolution:
        image_size = dataset.input_shape[-1]
    model = create_model(
        model_name, dataset.num_classes, pretrained=pretrained, image_size=image_size, in_channels=in_channels,
        max_length=max_length, class_names=dataset.class_names, seed=config.seed,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = train(
        model, dataset.train, config, val_split=dataset.val, checkpoint_dir=out / "checkpoints",
        resume=resume, progress=progress,
    )
    test = evaluate(model, dataset.test, dataset.class_names, progress=progress)
    val_acc = evaluate(model, dataset.val, dataset.class_names).accuracy if len(dataset.val) else None
    meta = {"data": dataset.name, "pretrained": pretrained, "train_config": asdict(config)}
    model_dir = save_model(model, out / MODEL_DIR, meta=meta)
    doc = {
        "model": model_name,
        "data": dataset.name,
        "data_summary": dataset.summary(),
        "pretrained": pretrained,
        "image_size": model.config.image_size or None,
        "max_length": model.config.max_length or None,
        "steps": result.steps,
        "seconds": result.seconds,
        "job_seconds": round(time.perf_counter() - started, 3),
        "test_accuracy": test.accuracy,
        "val_accuracy": val_acc,
        "test": test.to_dict(),
        "train_config": asdict(config),
        "history": result.history,
    }
    atomic_write_text(out / METRICS_FILE, json.dumps(doc, indent=2))
    if plots:

        if result.history:
            plot_training_curve(result.history, out / "training_curve.png", f"{model_name} on {dataset.name}")
        if test.confusion:  # empty beyond evaluate.MAX_CONFUSION_CLASSES classes
            plot_confusion(test.confusion, test.class_names, out / "confusion.png",
                           f"{model_name} on {dataset.name}: test acc {test.accuracy:.3f}")
    return TrainJobResult(out, model_dir, result, test, val_acc, config)


def eval_job(
    model_path: str | Path,
    data: str,
    *,
    data_path: str | Path | None = None,
    split: str = "test",
    config_path: str | Path | None = None,
    limit: dict[str, int] | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a saved model on a split of a data set.

    ``seed`` picks the split of sources without an official one; by default it is the seed the
    model was trained with (from its saved metadata), so its test split is the one it never saw.
    """
    model = load_model(model_path, config=config_path)
    if seed is None:
        seed = _trained_seed(Path(model_path))
    dataset = load_data(data, path=data_path, seed=seed, limit=limit)
    if dataset.modality != model.config.modality:
        raise DataError(
            f"The model takes {model.config.modality} inputs but data set '{dataset.name}' is {dataset.modality}."
        )
    if dataset.num_classes != model.num_classes:
        raise DataError(
            f"Data set '{dataset.name}' has {dataset.num_classes} classes but the model's head has "
            f"{model.num_classes}: evaluate it on the data it was trained for."
        )
    return evaluate(model, dataset.split(split), dataset.class_names, progress=progress)


def _trained_seed(model_path: Path) -> int:
    """The training seed recorded in a saved model's ``config.json`` (0 when there is none)."""

    cfg = model_path / CONFIG_FILE if model_path.is_dir() else model_path.parent / CONFIG_FILE
    if not cfg.exists():
        return 0
    _, meta = read_config(cfg)
    return int(meta.get("train_config", {}).get("seed", 0))


# ---- teachers, slicing, transfer ----------------------------------------------------------------
def load_teacher(teacher: str | Path, data: ClassificationData, image_size: int | None = None, seed: int = 0):
    """A teacher, its head sized for ``data``: a zoo name (its pretrained weights), a saved model
    folder/file, a Hugging Face encoder folder, or ``timm:ARCH@WEIGHTS`` (timm installed by the user)."""
    path = Path(teacher)
    if str(teacher).startswith(TIMM_PREFIX):  # timm:ARCH@WEIGHTS
        arch, weights = parse_timm_spec(str(teacher))
        return timm_teacher(arch, weights, data.num_classes, image_size=image_size, class_names=data.class_names,
                            seed=seed)
    if str(teacher) not in MODELS and is_hf_encoder_folder(path):  # e.g. a weight-poisoned MiniLM, a RoBERTa
        model = hf_teacher(path, data.num_classes, seed=seed, class_names=data.class_names)
    elif str(teacher) not in MODELS and path.exists():
        model = load_model(path)
    else:
        spec = get_arch(str(teacher))  # unknown name -> clear error listing the zoo
        if image_size is None and data.input_shape and spec.native_resolution:
            image_size = data.input_shape[-1]
        model = create_model(
            spec.name, data.num_classes, pretrained=True, image_size=image_size,
            in_channels=data.input_shape[0] if data.input_shape else None, class_names=data.class_names, seed=seed,
        )
    if model.config.modality != data.modality:
        raise DataError(
            f"Teacher '{model.config.arch}' takes {model.config.modality} inputs but data set '{data.name}' is {data.modality}."
        )
    return model


def slice_job(
    teacher: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    ratio: float = 0.1,
    metric: str = "nc",
    threshold: float = 0.5,
    k: int = 10,
    samples: int = 2000,
    layers: list[str] | None = None,
    data_path: str | Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
):
    """ReMoS's slice of ``teacher`` for the student data ``data``: profile coverage, score, save.

    Profiles ``samples`` seeded training samples of the student data (0 = all), computes the
    slice with exclusion ratio ``ratio`` and writes it (masks + ``slice.json``) and the coverage
    profile into ``out_dir``.
    """

    dataset = load_data(data, path=data_path, seed=seed)
    model = load_teacher(teacher, dataset, image_size=image_size, seed=seed)
    subset = seeded_subset(dataset.train, samples, seed)
    the_slice, profile = slice_teacher(model, subset.inputs, ratio=ratio, metric=metric, threshold=threshold, k=k,
                                       layers=layers, progress=progress)
    out = Path(out_dir)
    the_slice.save(out / "slice")
    profile.save(out / "coverage")
    return the_slice, profile


def transfer_job(
    method: str,
    teacher: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    image_size: int | None = None,
    limit: dict[str, int] | None = None,
    options: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
):
    """Make a student from ``teacher`` for ``data`` with transfer ``method``, train, test and save it.

    ``options`` are :class:`~safetransfer.transfer.TransferConfig` fields (ratio, excluded, frozen,
    ...); ``train_overrides`` replace fields of the method's default training protocol.
    """

    opts = {k: v for k, v in (options or {}).items() if v is not None}
    seed = int(opts.get("seed", 0))
    dataset = load_data(data, path=data_path, seed=seed, limit=limit)
    model = load_teacher(teacher, dataset, image_size=image_size, seed=seed)
    protocol = opts.get("protocol", "shared")
    train_config = default_train_config(model.config.arch, method, protocol, **{"seed": seed, **(train_overrides or {})})
    config = TransferConfig(method=method, train=train_config, **opts)
    return transfer(model, dataset, config, out_dir=out_dir, progress=progress, resume=resume)

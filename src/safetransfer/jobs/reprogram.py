"""The `safetransfer reprogram` job: learn a program for a model and a task, save it, apply it again.

Models: ``efficientnet-lite0`` (its own 1000-class ImageNet classifier; ``weights="random"`` the
same architecture with random weights, the paper's control), or a saved safetransfer model
folder (its own labels; e.g. a student made by any transfer method). Tasks: any image data
set name or path (``mnist``, ``fashion-mnist``, ``counting-squares``, your own).

Outputs under ``out_dir``: ``program.safetensors`` (the weights ``W``, the mask, the label map)
with ``program.json`` (canvas, task size, model, accuracy), ``program.png`` (the program and
three adversarial inputs) and ``results.json`` (with ``no_program_accuracy``: the same model and
task with ``W = 0`` and a data-chosen label map, the baseline a program must beat).

Is reprogrammability inherited? A program learned on a teacher applies to any student of it that
takes the same input size: ``apply`` with ``label_map="data"`` keeps the program and chooses the
map from the student's own labels (its head is new); learning again on the student folder
says whether a program can be re-learned there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safetransfer.attacks.reprogram_plots import plot_program
from safetransfer.attacks.reprogramming import (
    AdversarialProgram,
    ReprogramConfig,
    fit_label_map,
    reprogram,
    reprogrammed_accuracy,
    resolve_label_map,
    zero_program_like,
)
from safetransfer.data.registry import load_data
from safetransfer.errors import CheckpointError, ConfigError, DataError
from safetransfer.files import atomic_write_text
from safetransfer.models.io import load_model
from safetransfer.models.serialization import (
    load_tensors_and_json,
    save_tensors_and_json,
)
from safetransfer.models.wrapper import TransferModel
from safetransfer.models.zoo import (
    IMAGENET_CLASSES,
    build_from_config,
    imagenet_classifier,
)

PROGRAM_TENSORS, PROGRAM_JSON, PROGRAM_FORMAT = "program.safetensors", "program.json", "safetransfer-program/1"
# EfficientNet-Lite0's canvas in pixels: at 80 px its last feature map is 3x3 (2x2 at 64 px); the
# measured effect of the size is on docs/results/reprogramming.md (benchmarks/results/reprogram.json)
DEFAULT_CANVAS = 80


@dataclass
class LoadedModel:
    model: TransferModel
    name: str
    canvas: int
    channels: int
    classes: int


def parse_label_map(text: str | None, applying: bool = False) -> list[int] | str | None:
    """The label map as written on a command line, in ``ReprogramConfig.label_map``'s terms.

    ``None`` (not given): ``"data"`` when learning a program; when applying one, ``None`` keeps the
    program's own map. ``"data"``: chosen by the data; ``"first"``: the paper's first k labels
    (``None`` in the config); otherwise comma-separated model labels for new labels 0, 1, ...
    """
    if text is None:
        return None if applying else "data"
    if text in ("data", "first"):
        return None if text == "first" else "data"
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--label-map takes 'data', 'first' or comma-separated integers (got '{text}').") from None


def model_for_reprogramming(model: str, weights: str = "pretrained", canvas: int | None = None, seed: int = 0) -> LoadedModel:
    """The frozen classifier to reprogram (see the module doc)."""

    if weights not in ("pretrained", "random"):
        raise ConfigError(f"weights must be 'pretrained' or 'random' (got '{weights}').")
    if model == "efficientnet-lite0":
        size = canvas or DEFAULT_CANVAS
        return LoadedModel(imagenet_classifier(size, pretrained=weights == "pretrained", seed=seed), model, size, 3,
                           IMAGENET_CLASSES)
    path = Path(model)
    if not path.exists():
        raise ConfigError(f"'{model}' is neither efficientnet-lite0 nor a saved model folder (train one with "
                          f"`safetransfer train` and pass its model folder).")
    loaded = load_model(path)
    if loaded.config.modality != "image":
        raise DataError(f"{path} is a {loaded.config.modality} model; reprogramming here takes image models.")
    if weights == "random":
        loaded = build_from_config(loaded.config, pretrained=False, seed=seed)
    size = int(loaded.config.image_size)
    if canvas is not None and canvas != size:
        # a fully convolutional body with global pooling (the small CNN, EfficientNet) takes any size
        if not accepts_input_size(loaded, int(loaded.config.in_channels), canvas):
            raise ConfigError(f"{path} takes only {size}-px inputs; the canvas must be {size} (got {canvas}).")
        size = canvas
    return LoadedModel(loaded, str(path), size, int(loaded.config.in_channels), loaded.num_classes)


def accepts_input_size(model: torch.nn.Module, channels: int, size: int) -> bool:
    """Whether ``model`` runs on ``size``-px square inputs (one zero image, no gradient)."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size))
    except RuntimeError:
        return False
    finally:
        model.train(was_training)
    return True


def save_program(folder: str | Path, program: AdversarialProgram, label_map: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Write the program (safetensors + JSON) into ``folder``."""
    doc = {"format": PROGRAM_FORMAT, "canvas": program.canvas, "channels": program.channels,
           "task_size": list(program.input_size), "scale": program.scale, **meta}
    tensors = {"weight": program.weight.detach().cpu().contiguous(), "label_map": label_map.cpu().contiguous()}
    save_tensors_and_json(folder, tensors, PROGRAM_TENSORS, doc, PROGRAM_JSON)
    return Path(folder)


def load_program(folder: str | Path) -> tuple[AdversarialProgram, torch.Tensor, dict[str, Any]]:
    """A program saved by :func:`save_program`: the module, its label map and its metadata."""
    doc, tensors = load_tensors_and_json(folder, PROGRAM_TENSORS, PROGRAM_JSON, PROGRAM_FORMAT, "adversarial program")
    try:
        program = AdversarialProgram(int(doc["channels"]), int(doc["canvas"]), tuple(doc["task_size"]),
                                     scale=int(doc.get("scale", 1)))
        with torch.no_grad():
            program.weight.copy_(tensors["weight"])
        return program, tensors["label_map"].long(), doc
    except (KeyError, RuntimeError, TypeError) as err:

        raise CheckpointError(f"{folder}: malformed program ({err}).") from None


def no_program_accuracy(target: LoadedModel, program: AdversarialProgram, data: Any, seed: int = 0,
                        per_class: int = 1) -> float:
    """The baseline a program must beat: the task's test accuracy with ``W = 0`` (the images on a
    grey canvas) and a label map chosen by the training data for this very canvas."""
    blank = zero_program_like(program)
    label_map = fit_label_map(target.model, blank, data.train.inputs, data.train.labels, target.classes, seed=seed,
                              per_class=per_class)
    return reprogrammed_accuracy(target.model, blank, label_map, data.test.inputs, data.test.labels)


def reprogram_job(
    model: str, task: str, out_dir: str | Path, *, weights: str = "pretrained", canvas: int | None = None,
    config: ReprogramConfig | None = None, apply: str | Path | None = None, data_path: str | Path | None = None,
    limit_train: int | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Learn (or, with ``apply``, re-use) a program for ``model`` on ``task``; returns ``results.json``'s content."""

    config = (config or ReprogramConfig()).validate()
    data = load_data(task, data_path, seed=config.seed, limit={"train": limit_train} if limit_train else None)
    if data.modality != "image":
        raise DataError(f"reprogramming needs an image task; '{task}' is {data.modality}.")
    if apply is not None:  # the program's own canvas, unless told otherwise
        program, label_map, doc = load_program(apply)
        canvas = canvas or program.canvas
    target = model_for_reprogramming(model, weights, canvas, config.seed)
    per_class = config.per_class(data.num_classes, target.classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if apply is not None:
        if program.canvas != target.canvas or program.channels != target.channels:
            raise ConfigError(f"the program is for a {program.channels}x{program.canvas}px input; this model takes "
                              f"{target.channels}x{target.canvas}px.")
        if config.label_map == "data":  # e.g. a student with its own new head: the map is chosen anew
            label_map = fit_label_map(target.model, program, data.train.inputs, data.train.labels, target.classes,
                                      seed=config.seed, per_class=per_class)
        elif config.label_map is not None:
            label_map = resolve_label_map(config.label_map, data.num_classes, target.classes, per_class)
        else:
            try:  # the program's own map must name labels this model has
                width = label_map.shape[1] if label_map.dim() == 2 else 1
                resolve_label_map(label_map.flatten().tolist(), len(label_map), target.classes, width)
            except ConfigError as err:
                raise ConfigError(f"{err} The program's label map is for {doc.get('model')}; pass --label-map data "
                                  f"to choose one for this model's labels.") from None
        accuracy = reprogrammed_accuracy(target.model, program, label_map, data.test.inputs, data.test.labels)
        results = {"mode": "apply", "program": str(apply), "program_model": doc.get("model"), "model": target.name,
                   "weights": weights, "task": data.name, "test_accuracy": accuracy,
                   "label_map": label_map.tolist(), "chance": 1.0 / data.num_classes}
    else:
        result = reprogram(target.model, data.train.inputs, data.train.labels, target.canvas, target.channels,
                           model_classes=target.classes, config=config, test=(data.test.inputs, data.test.labels),
                           progress=progress)
        program, label_map = result.program, result.label_map
        results = {"mode": "learn", "model": target.name, "weights": weights, "task": data.name,
                   "canvas": target.canvas, "test_accuracy": result.test_accuracy, "chance": 1.0 / data.num_classes,
                   "label_map": label_map.tolist(),
                   "seconds": result.seconds, "config": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                                          for k, v in vars(config).items()},
                   "history": result.history}
        save_program(out, program, label_map, {"model": target.name, "weights": weights, "task": data.name,
                                               "test_accuracy": result.test_accuracy})
    results["no_program_accuracy"] = no_program_accuracy(target, program, data, config.seed, per_class)

    plot_program(program, data.test.inputs[:3], out / "program.png",
                 f"{target.name} ({weights}) -> {data.name}: test accuracy {results['test_accuracy']:.3f}")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results

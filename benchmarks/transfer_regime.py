"""Where does transfer pay? Fine-tuning against retraining from scratch, with few labels, for two teachers.

Issue 28 asks for a study regime in which a user who fine-tunes gains at least 5 points of
accuracy over one who retrains from scratch (the ReMoS paper's premise). Two teachers, both
EfficientNet-Lite0 at 32 px:

- ``imagenet``: the public ImageNet weights, fine-tuned on the student's task directly;
- ``same-domain``: the ImageNet weights first trained by the project on a *source* task of the
  same domain with many labels (Fashion-MNIST classes 0-4, all their training images, the
  strong recipe), then transferred to a *target* task with few labels (classes 5-9, relabelled
  0-4); likewise MNIST digits 0-4 -> 5-9.

For each target size (images per class) the students are (``--runs``): ``finetune`` under the
first round's shared protocol (``[shared]``: SGD 5e-3, head rate x10), the ReMoS artifact's
optimiser settings (``[artifact]``: SGD lr 5e-3, momentum 0, weight decay 1e-4, label smoothing
0.1, one rate for head and body, constant), its whole protocol (``[artifact+dropout]``: with the
stage dropout, the study's ``protocol: artifact``), that protocol with the artifact's
10,000-step budget compressed onto the run's steps (``[artifact_scaled]``, the study's default;
``--budget-steps N`` compresses an N-step budget instead, keys ``[artifact_scaled:N]``: compare
with ``[artifact+dropout]`` at N steps to check the compression), the strong recipe
(``[strong]``: SGD momentum 0.9, one-cycle to 0.05, weight decay 5e-5), and ``retrain`` under
the strong (from-scratch) recipe; all with the same steps and batch. Accuracy on ``--test``
seeded test images of the target classes.

Writes ``benchmarks/results/transfer_regime.json`` after every run (atomically) and skips the
runs already there, so an interrupted benchmark resumes.

    python benchmarks/transfer_regime.py                       # the default grid
    python benchmarks/transfer_regime.py --per-class 20 100 --steps 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from safetransfer.data import load_data
from safetransfer.data.base import ClassificationData, Split
from safetransfer.evaluate import evaluate
from safetransfer.files import atomic_write_text
from safetransfer.models import create_model
from safetransfer.train import TrainConfig, train
from safetransfer.transfer import TransferConfig, transfer
from safetransfer.transfer.config import ARTIFACT_STEPS

from bench_common import machine

RESULTS = Path(__file__).parent / "results" / "transfer_regime.json"

ARTIFACT = {"optimizer": "sgd", "lr": 5e-3, "momentum": 0.0, "weight_decay": 1e-4, "label_smoothing": 0.1,
            "head_lr_mult": 1.0, "schedule": "constant", "batch_size": 64}
SHARED = {"optimizer": "sgd", "lr": 5e-3, "momentum": 0.0, "weight_decay": 0.0, "head_lr_mult": 10.0,
          "schedule": "constant", "batch_size": 64}
STRONG = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-5, "head_lr_mult": 1.0,
          "schedule": "onecycle", "batch_size": 64}
# (method, protocol label, training settings); "artifact" is the artifact's optimiser settings
# alone, "artifact+dropout" adds its stage dropout (TransferConfig protocol "artifact", as the study);
# "shared" is the first round's shared protocol (head rate x10, no weight decay or smoothing).
# "artifact_scaled" is the study's protocol of that name: "artifact+dropout" with the rate scaled
# so that rate x steps is the artifact's 5e-3 x 10,000.
RUNS = [("finetune", "shared", SHARED), ("finetune", "artifact", ARTIFACT), ("finetune", "artifact+dropout", ARTIFACT),
        ("finetune", "artifact_scaled", {**ARTIFACT, "budget_steps": ARTIFACT_STEPS}), ("finetune", "strong", STRONG),
        ("retrain", "strong", STRONG)]
# the TransferConfig protocol of each label (the stage dropout follows it)
PROTOCOL_OF = {"artifact+dropout": "artifact", "artifact_scaled": "artifact_scaled"}
SOURCE_CLASSES, TARGET_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
DEFAULT_STEPS = 500


def class_subset(split: Split, classes: tuple[int, ...], per_class: int | None, seed: int) -> Split:
    """The samples of ``classes`` relabelled ``0..len-1``; ``per_class`` of each (seeded), or all."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes:
        idx = torch.nonzero(split.labels == c).flatten()
        if per_class is not None:
            idx = idx[torch.randperm(idx.numel(), generator=g)[:per_class]]
        picked.append(idx)
    index = torch.cat(picked).sort().values
    sub = split.subset(index)
    remap = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.long)
    remap[list(classes)] = torch.arange(len(classes))
    return Split(sub.inputs, remap[sub.labels])


def task(data: ClassificationData, classes: tuple[int, ...], per_class: int | None, test: int, seed: int) -> ClassificationData:
    test_split = class_subset(data.test, classes, None, seed)
    g = torch.Generator().manual_seed(seed + 1)
    test_split = test_split.subset(torch.randperm(len(test_split), generator=g)[:test].sort().values)
    return ClassificationData(
        name=f"{data.name}[{','.join(map(str, classes))}]", modality=data.modality,
        class_names=[data.class_names[c] for c in classes],
        train=class_subset(data.train, classes, per_class, seed),
        val=class_subset(data.val, classes, 20, seed), test=test_split,
    ).validate()


def source_teacher(data_name: str, data: ClassificationData, steps: int, work: Path, seed: int):
    """ImageNet EfficientNet-Lite0 trained on the source classes (all their images), strong recipe; cached."""
    source = task(data, SOURCE_CLASSES, None, 2000, seed)
    model = create_model("efficientnet-lite0", len(SOURCE_CLASSES), image_size=32, seed=seed)
    started = time.perf_counter()
    train(model, source.train, TrainConfig(steps=steps, seed=seed, **STRONG),
          checkpoint_dir=work / f"teacher-{data_name}", progress=True)
    acc = evaluate(model, source.test).accuracy
    return model, {"source_classes": list(SOURCE_CLASSES), "source_train": len(source.train), "steps": steps,
                   "source_test_accuracy": acc, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=["fashion-mnist"], help="data sets")
    parser.add_argument("--per-class", nargs="*", type=int, default=[20, 100], help="target images per class")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="student steps (batch 64; other than "
                        "500 recorded as KEY@STEPS)")
    parser.add_argument("--teacher-steps", type=int, default=800, help="same-domain teacher's steps")
    parser.add_argument("--test", type=int, default=1000, help="target test images")
    parser.add_argument("--all-classes", action="store_true",
                        help="the student's task is all ten classes (ImageNet teacher only; keys DATA:all/...)")
    parser.add_argument("--runs", nargs="*", default=["finetune[artifact]", "finetune[strong]", "retrain[strong]"],
                        choices=[f"{m}[{p}]" for m, p, _ in RUNS], help="which students")
    parser.add_argument("--teachers", nargs="*", default=["same-domain", "imagenet"], choices=["same-domain", "imagenet"])
    parser.add_argument("--budget-steps", type=int, default=ARTIFACT_STEPS,
                        help="finetune[artifact_scaled]'s rate x steps budget in steps of 5e-3 (other than the "
                        "artifact's 10,000 recorded as [artifact_scaled:N]): a cheap check of the compression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/bench-regime", help="folder for the runs")
    args = parser.parse_args()

    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    # retrain starts from random weights whatever the teacher: one run per task, under "scratch"
    doc["runs"] = {k.replace("/same-domain/retrain", "/scratch/retrain"): v for k, v in doc["runs"].items()}
    doc["setup"] = {"model": "efficientnet-lite0", "image_size": 32, "steps": DEFAULT_STEPS, "test": args.test,
                    "seed": args.seed, "target_classes": list(TARGET_CLASSES), "artifact_protocol": ARTIFACT, "shared_protocol": SHARED,
                    "strong_protocol": STRONG, "machine": machine(torch.get_num_threads())}
    work = Path(args.work)
    if args.all_classes and "same-domain" in args.teachers:
        parser.error("--all-classes leaves no source classes for a same-domain teacher: pass --teachers imagenet")
    target_classes = tuple(range(10)) if args.all_classes else TARGET_CLASSES
    for data_name in args.data:
        data = load_data(data_name, seed=args.seed)
        name = f"{data_name}:all" if args.all_classes else data_name
        teachers = {"imagenet": (create_model("efficientnet-lite0", len(target_classes), image_size=32, seed=args.seed), None)}
        for per_class in args.per_class:
            target = task(data, target_classes, per_class, args.test, args.seed)
            for teacher_name in args.teachers:
                if teacher_name not in teachers:
                    model, info = source_teacher(data_name, data, args.teacher_steps, work, args.seed)
                    teachers[teacher_name] = (model, info)
                    doc.setdefault("teachers", {})[f"{name}/{teacher_name}"] = info
                teacher = teachers[teacher_name][0]
                for method, proto, settings in RUNS:
                    if f"{method}[{proto}]" not in args.runs:
                        continue
                    label = proto
                    if proto == "artifact_scaled" and args.budget_steps != ARTIFACT_STEPS:
                        settings, label = {**settings, "budget_steps": args.budget_steps}, f"{proto}:{args.budget_steps}"
                    owner = "scratch" if method == "retrain" else teacher_name  # random weights: any teacher's
                    key = f"{name}/{per_class}/{owner}/{method}[{label}]"
                    key += "" if args.steps == DEFAULT_STEPS else f"@{args.steps}"
                    if key in doc["runs"]:
                        continue
                    # "artifact+dropout" is the study's protocol "artifact" whole (its stage dropout included)
                    config = TransferConfig(method=method, seed=args.seed,
                                            protocol=PROTOCOL_OF.get(proto, "shared"),
                                            train=TrainConfig(steps=args.steps, seed=args.seed, **settings))
                    result = transfer(teacher, target, config, out_dir=work / key.replace("/", "_"), progress=True)
                    doc["runs"][key] = {"accuracy": result.test.accuracy, "seconds": result.seconds,
                                        "train_images": len(target.train), "steps": args.steps}
                    print(key, doc["runs"][key], flush=True)
                    atomic_write_text(RESULTS, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(RESULTS, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

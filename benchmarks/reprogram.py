"""Adversarial reprogramming (Elsayed et al. 2018) on the real assets: the paper's comparisons.

Runs :func:`safetransfer.jobs.reprogram.reprogram_job` with the defaults (80-px canvas,
2,000 Adam steps of 64, a data-chosen map of 3 labels per class; counting squares: 6,000 steps of
16, 10 labels per class, the map chosen again every 250 steps, ``ReprogramConfig.for_task``; other
settings by option) for
EfficientNet-Lite0 with its ImageNet weights and with random weights (the paper's control) on
MNIST and counting squares, and the same for a second architecture (the small CNN trained here on
MNIST, reprogrammed for Fashion-MNIST and counting squares on a 48-px canvas), and writes
``benchmarks/results/reprogram.json``: ``{"runs": [{"model", "weights", "task", "test_accuracy",
"chance", "seconds"}, ...]}``. The file is rewritten (atomically) after every run and a run
already in it with the same settings is kept, so the script resumes where it stopped.

    python benchmarks/reprogram.py
    python benchmarks/reprogram.py --only mnist
    python benchmarks/reprogram.py --models small-cnn --weights pretrained
    python benchmarks/reprogram.py --steps 2000 --label-map first   # other settings: other runs
    python benchmarks/reprogram.py --only counting-squares --seed 1  # the spread over seeds
    python benchmarks/reprogram.py --inheritance   # then: is it inherited? (the defaults' MNIST program)

``--inheritance`` (beyond the paper; instead of the runs above, and after the pretrained MNIST run
with the same settings, whose program it takes): students of the same pretrained EfficientNet-Lite0 are made
for Fashion-MNIST at the program's canvas size by each transfer method (``--methods``); the
teacher's MNIST program is applied to each (the label map chosen anew for the student's own
head, by the data) and a program is learned again on each student. Written under
``"inheritance"`` in the same file: per method the student's own accuracy, the applied
program's MNIST accuracy, the grey-canvas baseline and the re-learned program's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from safetransfer.attacks.reprogramming import ReprogramConfig
from safetransfer.files import atomic_write_text
from safetransfer.jobs.reprogram import DEFAULT_CANVAS, reprogram_job

from bench_common import machine as machine_of

RESULTS = Path(__file__).parent / "results" / "reprogram.json"
# The second architecture: the small CNN, which has no public weights, trained here on MNIST
# (as issue 10's teacher) and reprogrammed for the tasks it was not trained for. Its body pools
# globally, so its canvas is larger than its 32-px training size: 48 px leaves a 10-px frame
# around a 28-px task image (at 32 px the program would have a 2-px frame).
SMALL_CNN = "runs/teachers/small-cnn-mnist/model"
SMALL_CNN_CANVAS = 48
RUNS = [
    {"model": "efficientnet-lite0", "weights": "pretrained", "task": "mnist"},
    {"model": "efficientnet-lite0", "weights": "random", "task": "mnist"},
    {"model": "efficientnet-lite0", "weights": "pretrained", "task": "counting-squares"},
    {"model": "efficientnet-lite0", "weights": "random", "task": "counting-squares"},
    {"model": SMALL_CNN, "weights": "pretrained", "task": "fashion-mnist", "canvas": SMALL_CNN_CANVAS},
    {"model": SMALL_CNN, "weights": "random", "task": "fashion-mnist", "canvas": SMALL_CNN_CANVAS},
    {"model": SMALL_CNN, "weights": "pretrained", "task": "counting-squares", "canvas": SMALL_CNN_CANVAS},
    {"model": SMALL_CNN, "weights": "random", "task": "counting-squares", "canvas": SMALL_CNN_CANVAS},
]


# settings keyed since they became options: a run recorded before has the default
LATER_KEYS = {"lr": ReprogramConfig.lr, "batch_size": ReprogramConfig.batch_size, "seed": ReprogramConfig.seed,
              "remap_every": ReprogramConfig.remap_every, "softmax_over": ReprogramConfig.softmax_over}


def same_run(recorded: dict, run: dict) -> bool:
    """Whether a recorded run is ``run`` (a key it lacks that was added later holds its default)."""
    return all(recorded.get(k, LATER_KEYS.get(k)) == v for k, v in run.items())


def small_cnn_teacher() -> None:
    """Train the small CNN on MNIST (1,500 steps, its zoo recipe) unless it is there already."""
    if not Path(SMALL_CNN, "model.safetensors").exists():
        from safetransfer.jobs import train_job

        train_job("small-cnn", "mnist", Path(SMALL_CNN).parent, overrides={"steps": 1500}, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="tasks to run (mnist, fashion-mnist, counting-squares)")
    parser.add_argument("--models", nargs="*", help="models to run (efficientnet-lite0, small-cnn)")
    parser.add_argument("--weights", nargs="*", help="weights to run (pretrained, random)")
    parser.add_argument("--work", default="runs/bench-reprogram", help="folder for the runs' outputs")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default: ReprogramConfig's)")
    parser.add_argument("--label-map", default=None, help="'data' or 'first' (default: ReprogramConfig's, 'data')")
    parser.add_argument("--schedule", default=None, help="cosine or constant (default: ReprogramConfig's)")
    parser.add_argument("--labels-per-class", type=int, default=None, help="model labels per new label (default: ReprogramConfig's, 3)")
    parser.add_argument("--task-scale", type=int, default=None, help="enlarge the task image on the canvas (default 1)")
    parser.add_argument("--canvas", type=int, default=None, help="canvas size in px (default: reprogram_job's)")
    parser.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: ReprogramConfig's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: ReprogramConfig's)")
    parser.add_argument("--remap-every", type=int, default=None,
                        help="choose the data label map again every N steps (default: ReprogramConfig's, 0: once)")
    parser.add_argument("--softmax-over", default=None,
                        help="the loss's softmax: all model labels or only the mapped ones (default: ReprogramConfig's, all)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the program's start, the batches and a generated task's images (default 0)")
    parser.add_argument("--inheritance", action="store_true",
                        help="instead of the runs: apply the teacher's MNIST program (same settings) to its students")
    parser.add_argument("--methods", nargs="*", default=["finetune", "remos", "retrain"], help="transfer methods (--inheritance)")
    parser.add_argument("--student-steps", type=int, default=800, help="training steps of each student (--inheritance)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    machine = machine_of(args.threads)
    from safetransfer.jobs.reprogram import parse_label_map

    given = {"steps": args.steps, "schedule": args.schedule, "labels_per_class": args.labels_per_class,
             "task_scale": args.task_scale, "lr": args.lr, "batch_size": args.batch_size,
             "seed": args.seed, "remap_every": args.remap_every, "softmax_over": args.softmax_over}
    label_map = {} if args.label_map is None else {"label_map": parse_label_map(args.label_map)}

    def config_for(task: str) -> ReprogramConfig:
        """The task's defaults, then the settings given on the command line."""
        return ReprogramConfig.for_task(task, **given, **label_map)

    config = config_for("mnist")  # the inheritance runs' MNIST program
    canvas = args.canvas or DEFAULT_CANVAS
    for run in [] if args.inheritance else RUNS:
        # runs are keyed by the resolved number of labels per class (10-class tasks; 1,000 ImageNet
        # labels for EfficientNet-Lite0, the 10 MNIST labels for the small CNN)
        model_classes = 1000 if run["model"] == "efficientnet-lite0" else 10
        task_config = config_for(run["task"])
        run_config = replace(task_config, labels_per_class=task_config.per_class(10, model_classes))
        run = {**run, "canvas": run.get("canvas", canvas), "steps": run_config.steps, "label_map": run_config.label_map,
               "schedule": run_config.schedule, "labels_per_class": run_config.labels_per_class,
               "task_scale": run_config.task_scale, **{k: getattr(run_config, k) for k in LATER_KEYS}}
        if args.only and run["task"] not in args.only:
            continue
        if args.models and ("small-cnn" if run["model"] == SMALL_CNN else run["model"]) not in args.models:
            continue
        if args.weights and run["weights"] not in args.weights:
            continue
        if any(same_run(r, run) for r in doc["runs"]):
            print(f"kept: {run}")
            continue
        if run["model"] == SMALL_CNN:
            small_cnn_teacher()
        started = time.perf_counter()
        out = run_folder(Path(args.work), run["model"], run["weights"], run["task"], run_config, run["canvas"])
        result = reprogram_job(run["model"], run["task"], out, weights=run["weights"], canvas=run["canvas"],
                               config=run_config, progress=False)
        entry = {**run, "test_accuracy": result["test_accuracy"], "chance": result["chance"],
                 "seconds": round(time.perf_counter() - started, 1), "layout": "channels_last",
                 "no_program_accuracy": result["no_program_accuracy"], "label_map_used": result["label_map"],
                 "curve": [[h["step"], round(h["test_accuracy_sample"], 4)] for h in result["history"]
                           if "test_accuracy_sample" in h],
                 "machine": machine}
        doc["runs"].append(entry)
        atomic_write_text(RESULTS, json.dumps(doc, indent=2))
        print(f"{run['model']} ({run['weights']}) -> {run['task']}: test accuracy {entry['test_accuracy']:.4f} "
              f"(chance {entry['chance']:.2f}), {entry['seconds']:.0f} s")
    if args.inheritance:
        inheritance(args, replace(config, labels_per_class=config.per_class(10, 1000)), doc, machine)
    print(f"wrote {RESULTS}")


def run_folder(work: Path, model: str, weights: str, task: str, config, canvas: int) -> Path:
    """Where one paper run's outputs (its program) live: one folder per model, weights, task and settings."""
    name = Path(model).parent.name if "/" in model else model  # a saved model's folder: its run's name
    return work / (f"{name}-{weights}-{task}-{config.steps}-{config.label_map or 'first'}-{config.schedule}"
                   f"-m{config.labels_per_class}-s{config.task_scale}" + ("" if canvas == 64 else f"-c{canvas}")
                   + ("" if config.lr == ReprogramConfig.lr else f"-lr{config.lr:g}")
                   + ("" if config.batch_size == ReprogramConfig.batch_size else f"-b{config.batch_size}")
                   + ("" if config.seed == ReprogramConfig.seed else f"-seed{config.seed}")
                   + (f"-remap{config.remap_every}" if config.remap_every else "")
                   + ("" if config.softmax_over == ReprogramConfig.softmax_over else f"-softmax-{config.softmax_over}"))


def inheritance(args: argparse.Namespace, config, doc: dict, machine: dict) -> None:
    """Apply the teacher's MNIST program to its students, and learn one again on each (module doc)."""
    from safetransfer.jobs import transfer_job

    work = Path(args.work)
    canvas = args.canvas or DEFAULT_CANVAS
    teacher_program = run_folder(work, "efficientnet-lite0", "pretrained", "mnist", config, canvas)
    if not (teacher_program / "program.safetensors").exists():
        raise SystemExit(f"no teacher program in {teacher_program}: run this script with --only mnist and the same "
                         f"settings first.")
    teacher_run = json.loads((teacher_program / "results.json").read_text())
    # a student's head has as many labels as its own task (10 here): one model label per new label
    data_map = replace(config, label_map="data", labels_per_class=1)
    rows = doc.setdefault("inheritance", [])
    for method in args.methods:
        key = {"method": method, "student_task": "fashion-mnist", "student_steps": args.student_steps,
               "program_steps": config.steps, "program_label_map": config.label_map,
               "program_schedule": config.schedule, "program_labels_per_class": config.labels_per_class,
               "program_task_scale": config.task_scale, "program_canvas": canvas,
               "task": "mnist"}
        if any(all(r.get(k) == v for k, v in key.items()) for r in rows):
            print(f"kept: {key}")
            continue
        started = time.perf_counter()
        folder = work / "students" / f"{method}-fashion-mnist-{canvas}px-{args.student_steps}"
        student = transfer_job(method, "efficientnet-lite0", "fashion-mnist", folder, image_size=teacher_run["canvas"],
                               options={"seed": 0}, train_overrides={"steps": args.student_steps}, progress=False)
        applied = reprogram_job(str(folder / "model"), "mnist", work / f"apply-{method}-{canvas}px", config=data_map,
                                apply=teacher_program, progress=False)
        relearned = reprogram_job(str(folder / "model"), "mnist", work / f"relearn-{method}-{canvas}px", config=data_map,
                                  progress=False)
        row = {**key, "student_accuracy": student.accuracy, "teacher_program_accuracy": teacher_run["test_accuracy"],
               "applied_accuracy": applied["test_accuracy"], "no_program_accuracy": applied["no_program_accuracy"],
               "relearned_accuracy": relearned["test_accuracy"], "seconds": round(time.perf_counter() - started, 1),
               "machine": machine}
        rows.append(row)
        atomic_write_text(RESULTS, json.dumps(doc, indent=2))
        print(f"{method}: student {row['student_accuracy']:.3f} on fashion-mnist; teacher's program on it "
              f"{row['applied_accuracy']:.3f} (on the teacher {row['teacher_program_accuracy']:.3f}, grey canvas "
              f"{row['no_program_accuracy']:.3f}); re-learned {row['relearned_accuracy']:.3f}")


if __name__ == "__main__":
    main()

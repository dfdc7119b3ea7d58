"""Poisoned-sample detection over four settings: each of our detectors and ART's, with TPR, FPR over
the whole training set, precision, AUROC and seconds.

Settings (each: a small CNN trained on the set as ``scan-data`` trains it, 1,500 steps, seed 0):

1. ``fmnist-watermark``: Fashion-MNIST, BadNets' 5-pixel watermark on 1% of the non-target images, target 3;
2. ``fmnist-blend``: Fashion-MNIST, a seeded noise pattern blended into the whole image at alpha 0.1
   (Chen et al. 2017), 5%, target 3;
3. ``mnist-patch``: MNIST, a white 3x3 patch, 0.5%, target 7;
4. ``fmnist-clean``: the same training without poison (the share of clean images each detector flags).

Every detector reads the same matrices: the penultimate features of the training set, and for
the multi-layer detector each sample's per-layer likelihoods (:mod:`safetransfer.detect.layer_likelihood`).
SCAn is given the held-out split's features as its clean set where ``--clean`` (default: it is;
its threat model holds one). ART (benchmark-only dependency, ``pip install
adversarial-robustness-toolbox``): ``SpectralSignatureDefense`` at several expected poison rates and
``ActivationDefence`` with each of its cluster analyses, fed the penultimate features through a
pass-through classifier (``detect_vs_art.py``). Results are written after every setting
(``benchmarks/results/detect.json``; a re-run skips settings already there unless ``--redo``).

    python benchmarks/detect.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safetransfer.attacks.data_poisoning import (
    PlantSpec,
    poison_dataset,
    triggered_test,
)
from safetransfer.data.registry import load_data
from safetransfer.detect import (
    activation_clustering,
    centroid_distance,
    multilayer_detection,
    scan_untangling,
    spectral_signature,
    spectre,
)
from safetransfer.detect.base import DetectionResult, score_detection
from safetransfer.detect.features import model_features
from safetransfer.detect.layer_likelihood import layer_likelihoods
from safetransfer.evaluate import predict_logits
from safetransfer.files import atomic_write_text
from safetransfer.jobs.train import train_job
from safetransfer.metrics import label_flip_rate
from safetransfer.models.io import load_model

from bench_common import machine
from detect_vs_art import art_detectors

RESULTS = Path(__file__).parent / "results" / "detect.json"
RUNS = Path(__file__).resolve().parent.parent / "runs" / "bench-detect-settings"
STEPS = 1500
DEFAULT = "multilayer"  # scan-data's default detector (safetransfer.jobs.scan_data.DEFAULT_METHODS)
KEYS = ("recall", "fpr", "precision", "auroc", "seconds", "flagged")


@dataclass(frozen=True)
class Setting:
    name: str
    data: str
    plant: PlantSpec | None
    what: str


SETTINGS = (
    Setting("fmnist-watermark", "fashion-mnist", PlantSpec("watermark", rate=0.01, target=3),
            "Fashion-MNIST, BadNets 5-pixel watermark, 1%, target 3"),
    Setting("fmnist-blend", "fashion-mnist", PlantSpec("blend", rate=0.05, target=3, alpha=0.1),
            "Fashion-MNIST, blended noise pattern (alpha 0.1), 5%, target 3"),
    Setting("mnist-patch", "mnist", PlantSpec("square", rate=0.005, target=7, size=3),
            "MNIST, white 3x3 patch, 0.5%, target 7"),
    Setting("fmnist-clean", "fashion-mnist", None, "Fashion-MNIST, no poison"),
)


def prepare(setting: Setting, root: Path) -> dict[str, np.ndarray]:
    """The setting's model trained (resumes) and its feature matrices (cached in ``features.npz``)."""

    out = root / setting.name
    cached = out / "features.npz"
    if cached.exists():
        with np.load(cached) as z:
            return {k: z[k] for k in z.files}
    data = load_data(setting.data, seed=0)
    truth = np.zeros(len(data.train), dtype=bool)
    poisoned = data
    if setting.plant is not None:
        poisoned, mask = poison_dataset(data, setting.plant)
        truth = mask.numpy()
    job = train_job("small-cnn", poisoned, out / "model", overrides={"seed": 0, "steps": STEPS})
    model = load_model(job.model_dir)
    held_out = poisoned.val if len(poisoned.val) else poisoned.test
    success = -1.0
    if setting.plant is not None:
        triggered = triggered_test(poisoned, setting.plant)
        success = label_flip_rate(predict_logits(model, triggered.inputs).argmax(1), triggered.labels,
                                  setting.plant.target)
    t0 = time.perf_counter()
    features = model_features(model, poisoned.train.inputs)
    feature_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    likelihoods, _ = layer_likelihoods(model, poisoned.train.inputs)
    likelihood_seconds = time.perf_counter() - t0
    arrays = {"features": features, "likelihoods": likelihoods, "labels": poisoned.train.labels.numpy(),
              "truth": truth, "clean_features": model_features(model, held_out.inputs),
              "clean_labels": held_out.labels.numpy(), "accuracy": np.array(job.test.accuracy),
              "attack_success": np.array(success), "feature_seconds": np.array(feature_seconds),
              "likelihood_seconds": np.array(likelihood_seconds)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "features.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, cached)
    return arrays


def our_detectors(arrays: dict[str, np.ndarray]) -> list[DetectionResult]:
    """Every detector of ours on the setting's matrices, as scan-data runs them (SCAn with the held-out
    split as its clean set, and without). SPECTRE runs separately (:func:`spectre_oracle`)."""
    f, y = arrays["features"], arrays["labels"]
    clean = {"clean_features": arrays["clean_features"], "clean_labels": arrays["clean_labels"]}
    out = [multilayer_detection(f, y, arrays["likelihoods"]),
           _renamed(multilayer_detection(f, y, None), "multilayer[features only]"),
           _renamed(scan_untangling(f, y, **clean), "scan_untangling[clean set]"),
           _renamed(scan_untangling(f, y), "scan_untangling[training set]"),
           spectral_signature(f, y, removal="robust"), spectral_signature(f, y, removal="fixed", eps=0.1),
           activation_clustering(f, y), activation_clustering(f, y, analysis="silhouette"),
           activation_clustering(f, y, reduce="pca", analysis="tight"), centroid_distance(f, y, name="model")]
    return out


def spectre_oracle(arrays: dict[str, np.ndarray], target: int, eps: int) -> DetectionResult:
    """SPECTRE as its reference runs: on the target label only, told the poisoned count ``eps`` (an
    oracle no defender has: an upper bound on what SPECTRE can do here); nothing flagged elsewhere."""
    f, y = arrays["features"], arrays["labels"]
    idx = np.flatnonzero(y == target)
    det = spectre(f[idx], y[idx], eps=eps)
    is_clean = np.ones(len(y), dtype=bool)
    is_clean[idx] = det.is_clean
    scores = np.full(len(y), float(det.scores.min()) - 1.0)  # other labels rank below the examined one
    scores[idx] = det.scores
    return DetectionResult("spectre[target label and count given]", scores, is_clean, det.seconds, det.params,
                           det.per_class)


def _renamed(det: DetectionResult, name: str) -> DetectionResult:
    det.method = name
    return det


def _entry(det: DetectionResult, truth: np.ndarray) -> dict[str, float | int]:
    if truth.any():
        q = score_detection(det, truth).to_dict()
        return {k: q[k] for k in KEYS}
    flagged = int((~det.is_clean).sum())
    return {"recall": None, "fpr": flagged / len(truth), "precision": None, "auroc": None,
            "seconds": det.seconds, "flagged": flagged}


def _called(det: DetectionResult) -> list[int] | None:
    if not any("poisoned" in info for info in det.per_class.values()):
        return None
    return [int(c) for c, info in det.per_class.items() if info.get("poisoned")]


def _best(entries: dict[str, dict]) -> str:
    """The most TPR − FPR (the acceptance's comparison); on a clean set the fewest flagged."""
    if all(e["recall"] is None for e in entries.values()):
        return min(entries, key=lambda n: (entries[n]["fpr"], entries[n]["seconds"]))
    return max(entries, key=lambda n: (entries[n]["recall"] - entries[n]["fpr"], -entries[n]["seconds"]))


def run_setting(setting: Setting, arrays: dict[str, np.ndarray], art: bool) -> dict:
    truth = arrays["truth"]
    ours = {}
    called = {}
    for det in our_detectors(arrays):
        ours[det.method] = _entry(det, truth)
        called[det.method] = _called(det)
    # SPECTRE told the target and the count (on the clean set: label 3 and the watermark setting's 1% rate)
    target = setting.plant.target if setting.plant else 3
    eps = int(truth.sum()) if truth.any() else int(round(0.01 * (arrays["labels"] != target).sum()))
    det = spectre_oracle(arrays, target, eps)
    ours[det.method] = _entry(det, truth)
    print(f"  spectre: {det.seconds:.1f} s", flush=True)
    theirs, failures = {}, {}
    if art:
        nb = int(arrays["labels"].max()) + 1
        for det in art_detectors(arrays["features"], arrays["labels"], nb, failures):
            theirs[det.method] = _entry(det, truth)
    plant = setting.plant
    return {
        "what": setting.what, "data": setting.data, "samples": int(len(truth)), "poisoned": int(truth.sum()),
        "plant": None if plant is None else {"trigger": plant.trigger, "rate": plant.rate, "target": plant.target,
                                             "size": plant.size, "alpha": plant.alpha, "seed": plant.seed},
        "model": {"arch": "small-cnn", "steps": STEPS, "test_accuracy": float(arrays["accuracy"]),
                  "attack_success": None if plant is None else float(arrays["attack_success"]),
                  "feature_dims": int(arrays["features"].shape[1]), "layers": int(arrays["likelihoods"].shape[1]),
                  "feature_seconds": float(arrays["feature_seconds"]),
                  "likelihood_seconds": float(arrays["likelihood_seconds"])},
        "ours": ours, "called": called, "art": theirs, "art_failures": failures,
        "default": {"method": DEFAULT, **ours[DEFAULT]},
        "best_ours": _best(ours), "best_art": _best(theirs) if theirs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RUNS), help="models and feature caches")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--no-art", action="store_true", help="skip ART (not installed)")
    parser.add_argument("--redo", action="store_true", help="re-run settings already in the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.redo else {}
    doc.setdefault("settings", {})
    for setting in SETTINGS:
        arrays = prepare(setting, Path(args.out))
        print(f"{setting.name}: accuracy {float(arrays['accuracy']):.3f}, attack success "
              f"{float(arrays['attack_success']):.3f}, poisoned {int(arrays['truth'].sum())}", flush=True)
        if args.prepare_only or setting.name in doc["settings"]:
            continue
        doc["settings"][setting.name] = run_setting(setting, arrays, art=not args.no_art)
        doc["machine"] = machine(torch.get_num_threads())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(RESULTS, json.dumps(doc, indent=2))  # after every setting: nothing lost
        entry = doc["settings"][setting.name]
        for side in ("ours", "art"):
            for name, e in entry[side].items():
                rec = "  -  " if e["recall"] is None else f"{e['recall']:.3f}"
                print(f"  {side:4s} {name:55s} TPR {rec} FPR {e['fpr']:.4f} flagged {e['flagged']:6d} "
                      f"{e['seconds']:.2f} s", flush=True)
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()

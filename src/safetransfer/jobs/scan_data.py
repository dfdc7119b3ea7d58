"""`safetransfer scan-data`: is this training set poisoned, and which samples?

The job: load the data set (a built-in name or the user's folder / npz / CSV), optionally
plant a known poison first (to measure the detectors), embed the training split (a model's
penultimate features, PCA or t-SNE of the pixels), run the detectors, rank the suspects, and
write ``results.json`` (per detector: flagged, seconds, and against a planted poison recall,
FPR, precision, AUROC), ``scores.csv``, an image grid of each label's worst outliers, a 2-D
scatter coloured by label with the flagged samples marked, and ``scan.html``.

``model``: a saved model folder (its features are used as they are), or a zoo model name,
which is first trained on the data being scanned (the defender's own training run, as the
spectral and clustering papers assume); that run is saved under ``OUT/model`` and resumes.
Its training curves are drawn (``training_curves.png``), and with a planted poison the same
model is also trained on the data without it (``OUT/clean_model``; ``clean_curve=False`` skips
it), so the two runs' curves, test accuracies and trigger responses stand side by side.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safetransfer.attacks.data_poisoning import (
    PlantSpec,
    poison_dataset,
    triggered_test,
)
from safetransfer.data.base import ClassificationData, Split
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
from safetransfer.detect.features import embed
from safetransfer.detect.layer_likelihood import layer_likelihoods
from safetransfer.detect.plots import (
    plot_label_histogram,
    plot_outlier_grid,
    plot_scatter,
    plot_score_distribution,
    plot_training_curves,
)
from safetransfer.errors import ConfigError
from safetransfer.evaluate import predict_logits
from safetransfer.files import atomic_write_text
from safetransfer.jobs.scan_page import write_scan_page
from safetransfer.jobs.train import TrainJobResult, train_job
from safetransfer.metrics import label_flip_rate
from safetransfer.models.io import load_model
from safetransfer.models.zoo import get_arch
from safetransfer.train import TrainConfig, curve_schedule
from safetransfer.validation import bounded_int

METHODS: tuple[str, ...] = ("multilayer", "spectral", "spectral_fixed", "activation_clustering", "ac_silhouette",
                            "ac_tight", "centroid", "untangling", "spectre")
DEFAULT_METHODS: tuple[str, ...] = ("multilayer",)
"""The detector a scan runs unless told otherwise: the best of :data:`METHODS` on the detection
benchmark (``benchmarks/detect.py``; docs detection page)."""
RESULTS_FILE = "results.json"


@dataclass
class ScanDataConfig:
    """What to scan and how (see the module doc); every detector parameter has the papers' default."""

    data: str
    data_path: str | None = None
    limit_train: int | None = None
    model: str | None = None
    steps: int | None = None
    embedding: str | None = None       # model | pca | pixels | tsne; default: model when a model is given, else pca
    methods: tuple[str, ...] = DEFAULT_METHODS   # the first one gives the verdict, the figures and the ranking
    plant: PlantSpec | None = None
    clean_data_path: str | None = None  # a set the defender trusts (same format as data_path): SCAn's global model
    eps: float = 0.1                   # spectral_fixed: upper bound on a label's poisoned share
    spectre_eps: int | None = None     # spectre: poisoned samples assumed in each label (the reference's input)
    k_spectral: float = 3.0
    k_centroid: float = 3.5
    scatter: str = "pca"               # pca | tsne
    clean_curve: bool = True           # with a planted poison and a model trained here: train it on the clean data too
    seed: int = 0

    def validate(self) -> "ScanDataConfig":
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown detector(s) {unknown or '(none given)'}; known: {', '.join(METHODS)}.")
        if "spectre" in self.methods:
            if self.spectre_eps is None:
                raise ConfigError("spectre needs --spectre-eps N, the number of poisoned samples assumed in each label "
                                  "(the reference's input; an estimate of it is not built).")
            bounded_int(self.spectre_eps, "spectre_eps", 1, 10**9, "scan-data")
        if self.embedding not in (None, "model", "pca", "pixels", "tsne"):
            raise ConfigError(f"unknown embedding '{self.embedding}' (model, pca, pixels, tsne).")
        if self.embedding == "model" and not self.model:
            raise ConfigError("the 'model' embedding needs --model (a saved model folder or a zoo name to train).")
        if self.scatter not in ("pca", "tsne"):
            raise ConfigError(f"scatter must be 'pca' or 'tsne' (got '{self.scatter}').")
        return self

    @property
    def resolved_embedding(self) -> str:
        return self.embedding or ("model" if self.model else "pca")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["plant"] = self.plant.to_dict() if self.plant else None
        doc["methods"] = list(self.methods)
        return doc


@dataclass
class ScanDataResult:
    """Everything the scan found; ``results`` is what ``results.json`` holds."""

    out_dir: Path
    results: dict[str, Any]
    detections: dict[str, DetectionResult] = field(default_factory=dict)
    poisoned: np.ndarray | None = None


def run_detector(name: str, features: np.ndarray, labels: np.ndarray, cfg: ScanDataConfig,
                 clean: tuple[np.ndarray, np.ndarray] | None = None,
                 likelihoods: np.ndarray | None = None) -> DetectionResult:
    """Run the detector ``name`` on the training features; ``clean``: features and labels of a set the
    defender trusts (SCAn fits its global model on it, as its reference does); ``likelihoods``: the
    samples' per-layer likelihoods (the multi-layer detector; ``None``: it reads the features alone)."""

    if name == "multilayer":
        return multilayer_detection(features, labels, likelihoods, seed=cfg.seed)
    if name == "spectral":
        return spectral_signature(features, labels, removal="robust", k=cfg.k_spectral)
    if name == "spectral_fixed":
        return spectral_signature(features, labels, removal="fixed", eps=cfg.eps)
    if name == "activation_clustering":
        return activation_clustering(features, labels, seed=cfg.seed)
    if name == "ac_silhouette":
        return activation_clustering(features, labels, analysis="silhouette", seed=cfg.seed)
    if name == "ac_tight":  # PCA: ICA's unit-variance components blur a small tight cluster
        return activation_clustering(features, labels, reduce="pca", analysis="tight", seed=cfg.seed)
    if name == "spectre":
        return spectre(features, labels, eps=int(cfg.spectre_eps or 0))
    if name == "untangling":  # SCAn: which class is poisoned, then its two subgroups
        if clean is not None:
            return scan_untangling(features, labels, seed=cfg.seed, clean_features=clean[0], clean_labels=clean[1])
        return scan_untangling(features, labels, seed=cfg.seed)
    return centroid_distance(features, labels, k=cfg.k_centroid, name=cfg.resolved_embedding)


def scan_data(cfg: ScanDataConfig, out_dir: str | Path, progress: bool = False,
              log: Callable[[str], None] | None = None) -> ScanDataResult:
    """Run the scan (see the module doc) and write its files under ``out_dir``."""
    log = log or logging.getLogger(__name__).info  # quiet by default: the CLI passes its console

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_data(cfg.data, cfg.data_path, seed=cfg.seed,
                     limit={"train": cfg.limit_train} if cfg.limit_train else None)
    truth: np.ndarray | None = None
    embedding = cfg.resolved_embedding
    clean_data = data
    if cfg.plant is not None:
        data, mask = poison_dataset(data, cfg.plant)
        truth = mask.numpy()
        log(f"planted {int(mask.sum())} poisoned samples ({cfg.plant.trigger}, target {cfg.plant.target}) "
            f"in {len(data.train)} training samples")
    model, job = _model_for(cfg, data, out / "model", progress, log) if embedding == "model" else (None, None)
    attack_success = None
    training: dict[str, dict[str, Any]] = {}  # the sanity view: a model trained on the data, and on clean data
    scanned = "scanned data" if cfg.plant is None else "poisoned data (scanned)"
    if job is not None:
        training[scanned] = {**_training_entry(job), "attack_success": None}
    if model is not None and cfg.plant is not None:  # did the model learn the planted poison at all?

        triggered = triggered_test(data, cfg.plant)
        attack_success = _attack_success(model, triggered, cfg.plant.target)
        log(f"the model sends {100 * attack_success:.1f}% of the triggered non-target test samples to the target")
        if job is not None and cfg.clean_curve:
            log("training the same model on the data without the planted poison (the side-by-side curves)")
            clean_model, clean_job = _model_for(cfg, clean_data, out / "clean_model", progress, log)
            training["clean data"] = {**_training_entry(clean_job),
                                      "attack_success": _attack_success(clean_model, triggered, cfg.plant.target)}
        if job is not None:
            training[scanned]["attack_success"] = attack_success
    log(f"embedding the {len(data.train)} training samples ({embedding})")
    t0 = time.perf_counter()
    features = embed(embedding, data.train.inputs, model=model, seed=cfg.seed, progress=progress)
    embed_seconds = time.perf_counter() - t0
    labels = data.train.labels.numpy()
    likelihoods = None
    if "multilayer" in cfg.methods and model is not None:
        log("scoring every hidden layer's most abnormal activation (the multi-layer detector)")
        likelihoods, _ = layer_likelihoods(model, data.train.inputs, progress=progress)
    clean = _clean_set(cfg, data, model, embedding, progress, log)

    detections: dict[str, DetectionResult] = {}
    summary: dict[str, Any] = {}
    for name in cfg.methods:
        log(f"detector {name}")
        det = run_detector(name, features, labels, cfg, clean, likelihoods)
        detections[name] = det
        entry: dict[str, Any] = {"method": det.method, "flagged": int((~det.is_clean).sum()),
                                 "seconds": round(det.seconds, 3), "params": det.params,
                                 "per_class": {str(k): v for k, v in det.per_class.items()}}
        if truth is not None:
            entry.update({k: v for k, v in score_detection(det, truth).to_dict().items() if k not in ("method",)})
        summary[name] = entry
    best = _best(summary) if truth is not None else None
    verdict = label_verdict(cfg.methods[0], detections[cfg.methods[0]], data.class_names)
    log(verdict["sentence"])
    results = {
        "config": cfg.to_dict(), "data": data.name, "samples": len(data.train), "classes": data.class_names,
        "embedding": {"kind": embedding, "dims": int(features.shape[1]), "seconds": round(embed_seconds, 2)},
        "poisoned": int(truth.sum()) if truth is not None else None,
        "model_attack_success": attack_success,  # share of triggered non-target test samples sent to the target
        "detectors": summary, "best": best, "verdict": verdict,
        "training": {name: {k: v for k, v in e.items() if k != "history"} for name, e in training.items()},
        "elapsed_seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=2))
    _write_scores(out / "scores.csv", labels, truth, detections)
    result = ScanDataResult(out, results, detections, truth)
    _write_figures_and_page(result, data, features, cfg, log,
                            {name: e["history"] for name, e in training.items()})
    return result


def label_verdict(name: str, det: DetectionResult, class_names: list[str]) -> dict[str, Any]:
    """Which labels the detector ``name`` calls poisoned, and a sentence that says so (detectors that
    decide per label: multilayer, untangling; the others flag samples in every label)."""
    called = [int(c) for c, info in det.per_class.items() if info.get("poisoned")]
    flagged = int((~det.is_clean).sum())
    decides = any("poisoned" in info for info in det.per_class.values())
    if decides and called:
        names = ", ".join(f"{class_names[c]} ({c})" for c in called)
        sentence = f"{name} calls label {names} poisoned and flags {flagged} of its samples"
    elif decides:
        sentence = f"{name} calls no label poisoned and flags nothing"
    else:
        sentence = f"{name} flags {flagged} samples (it does not decide which label is poisoned)"
    return {"detector": name, "poisoned_labels": called, "flagged": flagged, "sentence": sentence}


def all_samples(data: ClassificationData) -> Split:
    """The train, validation and test samples of ``data`` as one split."""
    parts = [s for s in (data.train, data.val, data.test) if len(s)]
    if isinstance(parts[0].inputs, torch.Tensor):
        inputs = torch.cat([s.inputs for s in parts])
    else:
        inputs = [x for s in parts for x in s.inputs]
    return Split(inputs, torch.cat([s.labels for s in parts]))


def _clean_set(cfg: ScanDataConfig, data: ClassificationData, model, embedding: str, progress: bool,
               log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray] | None:
    """SCAn's clean set, embedded: the user's ``clean_data_path`` (all its samples), or with a
    planted poison the held-out split (clean by construction: only the training split is
    poisoned); ``None`` when SCAn does not run, the features are not a model's, or there is none."""
    if "untangling" not in cfg.methods or embedding != "model":
        return None
    if cfg.clean_data_path is not None:
        trusted = load_data(cfg.clean_data_path, seed=cfg.seed)
        if trusted.num_classes != data.num_classes:
            raise ConfigError(f"the clean set has {trusted.num_classes} labels, the scanned data {data.num_classes}.")
        split, what = all_samples(trusted), f"the clean set {cfg.clean_data_path}"
    elif cfg.plant is not None:
        split, what = (data.val if len(data.val) else data.test), "the held-out split (clean: the poison is planted)"
    else:
        return None
    log(f"embedding {len(split)} samples of {what}: SCAn fits its global model on them")
    return embed(embedding, split.inputs, model=model, seed=cfg.seed, progress=progress), split.labels.numpy()


def _model_for(cfg: ScanDataConfig, data: ClassificationData, out: Path, progress: bool, log: Callable[[str], None]):
    """The model whose features are scanned, and its training job (``None`` for a saved model given as it is)."""

    assert cfg.model is not None
    path = Path(cfg.model)
    if path.exists():
        log(f"features of the saved model {path}")
        return load_model(path), None
    log(f"training {cfg.model} on {data.name} (saved under {out}; resumes)")
    steps = cfg.steps or TrainConfig.from_overrides(get_arch(cfg.model).train_defaults, {}).steps
    overrides = {**curve_schedule(steps), "seed": cfg.seed, "steps": steps}  # held-out accuracy for the curves
    job = train_job(cfg.model, data, out, overrides=overrides, progress=progress)
    log(f"its test accuracy: {job.test.accuracy:.4f}")
    return load_model(job.model_dir), job


def _training_entry(job: "TrainJobResult") -> dict[str, Any]:
    """A training run as the scan records it (``history`` is for the figure only, not results.json)."""
    return {"test_accuracy": job.test.accuracy, "final_loss": job.train.final_loss, "steps": job.train.steps,
            "val_curve": [[h["step"], h["val_accuracy"]] for h in job.train.history if "val_accuracy" in h],
            "history": job.train.history}


def _attack_success(model, triggered, target: int) -> float:
    """Share of the triggered non-target test samples ``model`` sends to ``target``."""

    return label_flip_rate(predict_logits(model, triggered.inputs).argmax(1), triggered.labels, target)


def _best(summary: dict[str, Any]) -> str | None:
    """The detector with the most recall among those flagging at most 2% of the clean samples
    (then the best AUROC), else the one with the best recall − FPR."""
    fine = [n for n, e in summary.items() if e.get("fpr") is not None and e["fpr"] <= 0.02]
    pool = fine or list(summary)
    key = (lambda n: (summary[n]["recall"], summary[n]["auroc"])) if fine else \
        (lambda n: summary[n]["recall"] - summary[n]["fpr"])
    return max(pool, key=key) if pool else None


def _write_scores(path: Path, labels: np.ndarray, truth: np.ndarray | None, detections: dict[str, DetectionResult]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(detections)
    writer.writerow(["index", "label", *(["poisoned"] if truth is not None else []),
                     *[f"{n}_score" for n in names], *[f"{n}_flagged" for n in names]])
    cols = [np.arange(len(labels)), labels, *([truth.astype(int)] if truth is not None else []),
            *[np.round(detections[n].scores, 6) for n in names], *[(~detections[n].is_clean).astype(int) for n in names]]
    writer.writerows(zip(*[c.tolist() for c in cols]))
    atomic_write_text(path, buf.getvalue())


def _write_figures_and_page(result: ScanDataResult, data: ClassificationData, features: np.ndarray,
                            cfg: ScanDataConfig, log: Callable[[str], None],
                            histories: dict[str, list[dict[str, float]]]) -> None:
    name = cfg.methods[0]  # the verdict's detector
    det = result.detections[name]
    figures: list[tuple[Path, str]] = []
    if isinstance(data.train.inputs, torch.Tensor):
        grid = plot_outlier_grid(data.train.inputs, data.train.labels.numpy(), det.scores, data.class_names,
                                 result.out_dir / "outliers.png", truth=result.poisoned,
                                 title=f"each label's most suspicious samples ({det.method}); red: planted poison")
        figures.append((grid, "Each label's most suspicious training samples, most suspicious left."))
    scatter = plot_scatter(features, data.train.labels.numpy(), ~det.is_clean, result.out_dir / "scatter.png",
                           method=cfg.scatter, seed=cfg.seed, truth=result.poisoned,
                           title=f"{result.results['embedding']['kind']} features ({cfg.scatter}); x: flagged by {det.method}")
    figures.append((scatter, "The training samples in 2-D, coloured by label; crosses: flagged samples."))
    distribution = plot_score_distribution(det.scores, ~det.is_clean, result.out_dir / "scores.png",
                                           truth=result.poisoned, title=f"{det.method}: scores of flagged and kept samples")
    figures.append((distribution, "The detector's scores of the samples it flags and of those it keeps."))
    histogram = plot_label_histogram(data.train.labels.numpy(), data.class_names, result.out_dir / "labels.png")
    figures.append((histogram, "Samples per label against a uniform expectation: all-to-one poisoning "
                               "over-represents its target label a little."))
    if histories:
        curves = plot_training_curves(histories, result.out_dir / "training_curves.png",
                                      f"{cfg.model} trained on {data.name}" + (": poisoned vs clean" if len(histories) > 1 else ""))
        figures.append((curves, "Training curves of the model trained on the data" +
                        (", side by side with the same model trained on the data without the planted poison: "
                         "a small poison leaves the curves almost alike, so the detectors above are needed."
                         if len(histories) > 1 else ".")))
    page = write_scan_page(result.results, figures, result.out_dir)
    log(f"written: {result.out_dir / RESULTS_FILE}, scores.csv, {', '.join(p.name for p, _ in figures)}, {page.name}")

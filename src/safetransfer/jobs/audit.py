"""`safetransfer audit`: is this pretrained model safe to build on? One verdict from four checks.

1. Files: every pickle in the model's file or folder judged at the opcode level, never loaded
   (:func:`safetransfer.supply.scan`). A dangerous or unreadable file fails the audit and the
   model is not loaded at all.
2. Integrity: against a manifest (:func:`~safetransfer.supply.verify`), or a weight diff against
   the named base model (:func:`~safetransfer.supply.diff_models`): a change concentrated in a few
   embedding rows (Embedding Surgery's signature) fails, naming the tokens.
3. Behaviour: a text model is scanned for trigger words (Kurita et al. 2020, with the gradient
   screen) on clean texts of ``data``, once per label as the target: a confirmed word that flips
   at least ``TRIGGER_LFR`` of the texts and never occurs in the data fails. An image model gets
   Neural Cleanse (Wang et al. 2019) on clean images of ``data``: a class with an anomaly index
   above 2 fails (a model with more than ``NC_MAX_CLASSES`` classes has that many chosen by a
   short reversal of every class, and named). A time estimate is logged before each check.
4. A recommendation: the transfer method the studies support for what was found, and the command.

Threat model: the model (file or folder) may have been made by an attacker; the data is the
user's own and clean. Writes ``audit.json`` and ``audit.html`` into the output folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from safetransfer.data.registry import load_data
from safetransfer.detect.neural_cleanse import (
    choose_classes,
    neural_cleanse,
    step_seconds,
)
from safetransfer.detect.trigger_scan import scan_triggers, word_frequencies
from safetransfer.errors import ConfigError
from safetransfer.files import atomic_write_text
from safetransfer.html_page import page
from safetransfer.models.io import load_model
from safetransfer.models.zoo import hf_teacher, is_hf_encoder_folder, weights_location
from safetransfer.supply import diff_models, scan, verify
from safetransfer.transfer import TransferConfig, default_train_config, transfer

AUDIT_FILE = "audit.json"
AUDIT_PAGE = "audit.html"
TRIGGER_LFR = 0.9
"""A word that flips at least this share of clean texts and is absent from the data is a trigger suspect."""
STATUSES = ("pass", "warn", "fail")


@dataclass
class Check:
    """One check of the audit: its name, pass / warn / fail, and the reason in words."""

    name: str
    status: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    verdict: str
    checks: list[Check]
    recommendation: str
    out_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "recommendation": self.recommendation,
                "checks": [vars(c) for c in self.checks]}


def _files_check(model: Path) -> Check:
    report = scan(model)
    kinds = report.to_dict()["kinds"]
    if report.flagged:
        bad = [f"{f.path} ({f.verdict})" for f in report.files if f.flagged]
        return Check("files", "fail", f"{len(bad)} file(s) hold code or could not be read to the end: "
                     f"{', '.join(bad[:5])}; the model was not loaded", report.to_dict())
    suspicious = [f.path for f in report.files if f.verdict == "suspicious"]
    if suspicious:
        return Check("files", "warn", f"pickles import classes of model libraries ({', '.join(suspicious[:5])}): "
                     "safe only if you trust those libraries; convert to safetensors", report.to_dict())
    pickles = [f.path for f in report.files if f.verdict == "clean" and f.kind in ("pickle", "zip")]
    note = (f"; {len(pickles)} pickle(s) hold weights only: convert them to safetensors "
            "(`safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')`)") if pickles else ""
    return Check("files", "pass", f"{len(report.files)} file(s), formats {kinds}: no code found{note}",
                 report.to_dict())


def _integrity_check(model: Path, base: str | None, manifest: str | None) -> Check | None:
    if manifest is not None:
        report = verify(model, manifest)
        if report.passed:
            return Check("integrity", "pass", f"every tensor matches the manifest {manifest}", report.to_dict())
        return Check("integrity", "fail", f"{len(report.failed_tensors)} tensor(s) differ from the manifest {manifest}",
                     report.to_dict())
    if base is None:
        return None
    report = diff_models(weights_location(base), model)
    doc = report.to_dict()
    doc["tensors"] = doc["tensors"][:50]
    if report.verdict == "concentrated in embedding rows":
        return Check("integrity", "fail", f"against {base}: {report.explanation}", doc)
    status = "pass" if report.verdict == "identical" else "warn"  # a changed model: only its behaviour can tell
    return Check("integrity", status, f"against {base}: {report.verdict}. {report.explanation}", doc)


def _text_behaviour(classifier, data, quick: bool, seed: int, progress: bool,
                    log: Callable[[str], None] = logging.getLogger(__name__).info) -> Check:
    clean = data.val if len(data.val) else data.test
    freq = word_frequencies(list(data.train.inputs))
    suspects: dict[int, list[dict[str, Any]]] = {}
    records = {}
    started = time.perf_counter()
    for target in range(classifier.num_classes):
        if target == 1:
            left = (time.perf_counter() - started) * (classifier.num_classes - 1)
            log(f"   the first label's scan took {_duration(time.perf_counter() - started)}: about {_duration(left)} "
                f"for the other {classifier.num_classes - 1}")
        result = scan_triggers(classifier, list(clean.inputs), clean.labels, target, frequencies=freq,
                               n_texts=10 if quick else 20, seed=seed, progress=progress)
        summary = result.summary(top=10)
        records[str(target)] = summary
        found = [t for t in summary["top"] if t["texts"] == result.texts and t["lfr"] >= TRIGGER_LFR
                 and t["frequency"] == 0]
        if found:
            suspects[target] = found
    if suspects:
        named = "; ".join(f"to label {t}: " + ", ".join(f"{w['word']} (LFR {w['lfr']:.2f})" for w in ws[:5])
                          for t, ws in suspects.items())
        return Check("behaviour", "fail", f"trigger-word suspects (words the data never contains that flip at least "
                     f"{TRIGGER_LFR:.0%} of clean texts) {named}", {"scans": records})
    return Check("behaviour", "pass", "no word absent from the data flips "
                 f"{TRIGGER_LFR:.0%} of the clean texts to any label", {"scans": records})


def _image_behaviour(classifier, data, quick: bool, seed: int, progress: bool,
                     log: Callable[[str], None] = logging.getLogger(__name__).info) -> Check:
    clean = data.test if len(data.test) else data.val
    images = clean.inputs[:200]
    epochs, batches = (NC_EPOCHS_QUICK, NC_BATCHES_QUICK) if quick else (1000, 31)
    classes, screened = choose_classes(classifier, images, NC_MAX_CLASSES, seed=seed)
    if screened:
        log(f"   {classifier.num_classes} classes: {len(classes)} examined, the {NC_MAX_CLASSES // 2} whose short "
            f"reversal needed the smallest masks and {len(classes) - NC_MAX_CLASSES // 2} drawn at random: {classes}")
    step = step_seconds(classifier, images, len(classes))
    log(f"   Neural Cleanse on {len(classes)} classes: {epochs} epochs of {batches} steps at most, about "
        f"{step:.2f} s a step: at most {_duration(step * epochs * batches)} (early stopping usually ends it sooner)")
    result = neural_cleanse(classifier, images, classes=classes, epochs=epochs, batches=batches, seed=seed,
                            progress=progress)
    doc = result.to_dict()
    if screened:
        doc["chosen_classes"] = classes
        doc["screening_norms"] = {str(c): round(v, 3) for c, v in screened.items()}
    if result.flagged:
        named = ", ".join(f"{c} (anomaly index {result.anomaly_index[c]:.1f}, mask {result.triggers[c].norm:.1f} px)"
                          for c in result.flagged)
        return Check("behaviour", "fail", f"Neural Cleanse: a small patch sends clean images to class {named}", doc)
    top = max(result.anomaly_index.values())
    return Check("behaviour", "pass", f"Neural Cleanse: no class needs an anomalously small trigger (largest anomaly "
                 f"index {top:.1f}, threshold 2)", doc)


FINETUNE_STEPS_QUICK = 300
NC_EPOCHS_QUICK, NC_BATCHES_QUICK = 40, 8
NC_MAX_CLASSES = 16
"""A model with more classes has 16 of them examined by Neural Cleanse, chosen and named (choose_classes)."""


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _classifier(path: Path, dataset, quick: bool, seed: int, progress: bool, log: Callable[[str], None]):
    """The classifier whose behaviour is checked: a saved model folder as it is; a pretrained Hugging
    Face encoder folder (BERT, RoBERTa, DistilBERT, ...; no head for the task) fine-tuned on ``dataset`` first, as its user would
    (``finetune``, the architecture's default recipe; ``FINETUNE_STEPS_QUICK`` steps with ``quick``):
    a weight-poisoned teacher shows its triggers in the students made from it."""
    if not is_hf_encoder_folder(path):
        return load_model(path)
    teacher = hf_teacher(path, dataset.num_classes, seed=seed)
    train = default_train_config(teacher.config.arch, steps=FINETUNE_STEPS_QUICK if quick else None, seed=seed)
    log(f"   a pretrained {teacher.body.transformer.config.model_type} folder: fine-tuning it on {dataset.name} for {train.steps} steps first (the student a "
        "user would make)")
    return transfer(teacher, dataset, TransferConfig(method="finetune", train=train), progress=progress).student


def recommend(checks: list[Check], model: str, data: str | None) -> str:
    """The transfer the studies support for what was found, with the command (docs: vision and text pages)."""
    status = {c.name: c.status for c in checks}
    d = data or "YOUR_DATA"
    if status.get("files") == "fail":
        return "Do not load this model. Get the weights as safetensors from a source you trust."
    if status.get("integrity") == "fail" or status.get("behaviour") == "fail":
        return ("The model carries a defect. If you must build on it, transfer with ReMoS or a strong fine-tune and "
                "compare the defect's survival (docs/results/vision-study.md, text-study.md): "
                f"`safetransfer transfer --teacher {model} --data {d} --method remos`; re-run this audit on the student.")
    return (f"No defect found by these checks. `safetransfer transfer --teacher {model} --data {d} --method finetune` "
            "keeps what transfer buys; a strong fine-tune (`--method finetune_strong`) also sheds most inherited backdoors.")


def audit(model: str | Path, out_dir: str | Path, *, base: str | None = None, manifest: str | None = None,
          data: str | None = None, data_path: str | None = None, quick: bool = False, seed: int = 0,
          progress: bool = False, log: Callable[[str], None] | None = None) -> AuditResult:
    """Run the audit (see the module doc) and write ``audit.json`` and ``audit.html`` into ``out_dir``."""
    log = log or logging.getLogger(__name__).info
    path = Path(model)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder to audit.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log("1/3 files: judging every pickle at the opcode level (nothing is loaded)")
    checks = [_files_check(path)]
    if checks[0].status != "fail":
        log("2/3 integrity: " + ("the manifest" if manifest else f"a diff against {base}" if base else "skipped"))
        integrity = _integrity_check(path, base, manifest)
        if integrity is not None:
            checks.append(integrity)
        if data is not None and path.is_dir():
            dataset = load_data(data, data_path, seed=seed)
            classifier = _classifier(path, dataset, quick, seed, progress, log)
            if dataset.num_classes != classifier.num_classes:
                raise ConfigError(f"the model has {classifier.num_classes} labels, the data {dataset.num_classes}.")
            kind = "trigger-word scan" if classifier.config.modality == "text" else "Neural Cleanse"
            log(f"3/3 behaviour: {kind} on clean samples of {dataset.name}" + (" (quick)" if quick else ""))
            behave = _text_behaviour if classifier.config.modality == "text" else _image_behaviour
            checks.append(behave(classifier, dataset, quick, seed, progress, log))
        else:
            log("3/3 behaviour: skipped (give --data, and a saved model folder)")
    order = {s: i for i, s in enumerate(STATUSES)}
    verdict = max((c.status for c in checks), key=order.__getitem__)
    result = AuditResult(verdict, checks, recommend(checks, str(model), data), out)
    doc = {**result.to_dict(), "model": str(model), "base": base, "manifest": manifest, "data": data,
           "quick": quick, "seed": seed, "seconds": round(time.perf_counter() - started, 2)}
    atomic_write_text(out / AUDIT_FILE, json.dumps(doc, indent=1, default=_json_default))
    rows = "".join(f"<tr><td>{escape(c.name)}</td><td>{escape(c.status)}</td><td>{escape(c.reason)}</td></tr>"
                   for c in checks)
    body = [f"<h1>safetransfer audit: {escape(str(model))}</h1>",
            f'<p class="verdict"><b>Verdict: {escape(verdict)}</b></p>',
            '<div class="scroll"><table><thead><tr><th>check</th><th>status</th><th>reason</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>", "<h2>Recommendation</h2>", f"<p>{escape(result.recommendation)}</p>",
            "<h2>Details</h2>", f"<pre>{escape(json.dumps(doc, indent=1, default=_json_default)[:200_000])}</pre>"]
    atomic_write_text(out / AUDIT_PAGE, page(f"safetransfer audit: {path.name}", body))
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""BadNets' experiment as a job: train a model on clean and on poisoned data with identical settings, and compare.

Gu, Dolan-Gavitt & Garg 2017, "BadNets". The poisoning itself is :mod:`safetransfer.attacks.data_poisoning`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from safetransfer.attacks.data_poisoning import (
    PlantSpec,
    poison_dataset,
    source_rows,
    triggered_test,
)
from safetransfer.data.base import ClassificationData
from safetransfer.detect.plots import plot_training_curves
from safetransfer.evaluate import predict_logits
from safetransfer.files import atomic_write_text
from safetransfer.jobs.train import train_job
from safetransfer.metrics import backdoor_dir as dir_of
from safetransfer.models.io import load_model


@dataclass
class DamageReport:
    """Clean vs poisoned model under identical settings (BadNets' experiment)."""

    data: str
    model: str
    plant: dict[str, Any]
    poisoned_samples: int
    clean_accuracy: float
    poisoned_accuracy: float
    attack_success: float             # share of triggered non-target test inputs predicted as the target
    attack_success_clean_model: float  # the same for the clean model (what the trigger does by itself)
    backdoor_dir: float               # among those the poisoned model gets right clean, the share flipped
    clean_eval: dict[str, Any] = field(default_factory=dict)
    poisoned_eval: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def badnets_experiment(
    model_name: str, data: ClassificationData, spec: PlantSpec, out_dir: str | Path, *,
    overrides: dict[str, Any] | None = None, progress: bool = False,
) -> DamageReport:
    """Train ``model_name`` on the clean and on the poisoned data with identical settings; compare.

    Writes ``clean/`` and ``poisoned/`` (each a train job: model, metrics, confusion matrix) and
    ``damage.json`` under ``out_dir``; both runs resume from their checkpoints.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    poisoned_data, mask = poison_dataset(data, spec)
    clean = train_job(model_name, data, out / "clean", overrides=overrides, progress=progress)
    bad = train_job(model_name, poisoned_data, out / "poisoned", overrides=overrides, progress=progress)
    triggered = triggered_test(data, spec)
    bad_model, clean_model = load_model(bad.model_dir), load_model(clean.model_dir)
    trig_bad = predict_logits(bad_model, triggered.inputs).argmax(1)
    trig_clean = predict_logits(clean_model, triggered.inputs).argmax(1)
    untriggered = data.test.subset(torch.nonzero(source_rows(data.test.labels, spec)).flatten())
    clean_pred_bad = predict_logits(bad_model, untriggered.inputs).argmax(1)
    report = DamageReport(
        data.name, model_name, spec.to_dict(), int(mask.sum()), clean.test.accuracy, bad.test.accuracy,
        float((trig_bad == spec.target).float().mean()), float((trig_clean == spec.target).float().mean()),
        dir_of(clean_pred_bad, trig_bad, triggered.labels, spec.target),
        clean.test.to_dict(), bad.test.to_dict(), round(time.perf_counter() - started, 2),
    )
    atomic_write_text(out / "damage.json", json.dumps(report.to_dict(), indent=2))
    plot_training_curves({"clean data": clean.train.history, "poisoned data": bad.train.history},
                         out / "training_curves.png", f"{model_name} on {data.name}: clean vs poisoned training")
    return report

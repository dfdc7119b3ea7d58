"""The trigger-word scan of a saved text classifier, end to end (``safetransfer scan-triggers``).

Kurita, Michel & Neubig, ACL 2020, §6: every candidate word is inserted into clean non-target
texts and ranked by the label flip rate it causes (:mod:`safetransfer.detect.trigger_scan`).
Threat model: the defender holds the classifier and clean labelled texts, not the trigger.
Writes ``suspects.json`` (the scan's record) and ``lfr_vs_frequency.png`` into ``out_dir``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetransfer.data.registry import load_data
from safetransfer.detect.trigger_scan import (
    CONFIRM,
    GENERAL_WORDS,
    GRADIENT_KEEP,
    SCAN_VERSION,
    SCREEN_TEXTS,
    TriggerScanResult,
    plot_lfr_vs_frequency,
    scan_triggers,
    word_frequencies,
)
from safetransfer.errors import DataError
from safetransfer.files import atomic_write_text
from safetransfer.jobs.train import load_teacher
from safetransfer.models.io import load_model

SUSPECTS_FILE = "suspects.json"
PLOT_FILE = "lfr_vs_frequency.png"
SPLITS = ("train", "val", "test")


@dataclass
class TriggerScanJobResult:
    """The scan, its record (``suspects.json``) and where it was written."""

    scan: TriggerScanResult
    record: dict[str, Any]
    out_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return self.record


def scan_triggers_job(
    model: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    target: int = 1,
    texts: int = 20,
    screen_texts: int = SCREEN_TEXTS,
    confirm: int = CONFIRM,
    words: Sequence[str] | None = None,
    general_words: int = GENERAL_WORDS,
    base: str | Path | None = None,
    planted: Sequence[str] = (),
    split: str = "test",
    seed: int = 0,
    data_path: str | Path | None = None,
    progress: bool = False,
    screen: str = "gradient",
    keep: int = GRADIENT_KEEP,
) -> TriggerScanJobResult:
    """Scan the saved text model ``model`` with ``texts`` clean non-target texts of ``data``'s
    ``split`` (``words``: the candidates; default the ``general_words`` most frequent English words,
    the tokenizer's whole words and the data's words); ``base``: the public model the victim was
    fine-tuned from (a zoo name or a model folder), whose embedding rows trace the suspects to
    their word pieces; ``planted`` known triggers are marked on the plot and ranked in the record."""
    if split not in SPLITS:
        raise DataError(f"split must be train, val or test (got '{split}').")
    classifier = load_model(model)
    if classifier.config.modality != "text":
        raise DataError(f"{model} is an image model; scan-triggers examines text classifiers.")
    dataset = load_data(data, data_path, seed=seed)
    part = getattr(dataset, split)
    reference = load_teacher(base, dataset, seed=seed) if base is not None else None
    started = time.perf_counter()
    result = scan_triggers(classifier, part.inputs, part.labels, target, candidates=list(words) if words else None,
                           frequencies=word_frequencies(dataset.train.inputs), general_words=general_words,
                           n_texts=texts, screen_texts=screen_texts, confirm=confirm, base=reference, seed=seed,
                           progress=progress, screen=screen, keep=keep)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": str(model), "data": dataset.name, "target": target, "screen": screen,
              "gradient_keep": keep if screen == "gradient" else None, "screen_texts": screen_texts,
              "general_words": general_words if not words else 0, "base": str(base) if base is not None else None,
              "scan_version": SCAN_VERSION, "seconds": round(time.perf_counter() - started, 2),
              **result.summary(planted, top=50)}
    atomic_write_text(out / SUSPECTS_FILE, json.dumps(record, indent=2))
    plot_lfr_vs_frequency(result, out / PLOT_FILE, planted=list(planted))
    return TriggerScanJobResult(result, record, out)

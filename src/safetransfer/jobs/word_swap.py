"""Word-swap adversarial texts crafted on a teacher, and the students' DIR on them, end to end
(``safetransfer word-swap``; the study's word-swap defect uses the same summary and DIR).

Threat model: the attacker queries the model it crafts on (a fine-tuned teacher's predictions,
or a public teacher's pooled features) and hands the texts to students fine-tuned from it.
Writes ``word_swap.json`` (the figures) and ``examples.json`` (every attacked text) into ``out_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from safetransfer.attacks.word_swap import (
    WordSwapAttack,
    WordSwapResult,
    WordSwapSummary,
)
from safetransfer.data.base import seeded_subset
from safetransfer.data.registry import load_data
from safetransfer.evaluate import crafted_input_dir
from safetransfer.files import atomic_write_text
from safetransfer.jobs.train import load_teacher
from safetransfer.models.io import load_model

FIGURES_FILE = "word_swap.json"
EXAMPLES_FILE = "examples.json"


@dataclass
class WordSwapJobResult:
    """The attack's summary on the teacher, each student's DIR on the crafted texts, the texts."""

    model: str
    data: str
    method: str
    objective: str
    summary: WordSwapSummary
    results: list[WordSwapResult]
    students: dict[str, float] = field(default_factory=dict)  # student path -> DIR
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {"model": self.model, "data": self.data, "method": self.method, "objective": self.objective,
                "mean_feature_shift": s.mean_feature_shift, "samples": s.samples, "skipped": s.skipped,
                "success_rate": s.success_rate, "mean_queries": s.mean_queries,
                "mean_words_changed": s.mean_words_changed,
                "students": {path: {"dir": value} for path, value in self.students.items()}}


def word_swap_job(
    model: str,
    data: str,
    out_dir: str | Path,
    *,
    method: Literal["importance", "greedy"] = "importance",
    objective: Literal["prediction", "features"] = "prediction",
    samples: int = 200,
    k: int = 8,
    max_change: float = 0.2,
    students: Sequence[str | Path] = (),
    seed: int = 0,
    data_path: str | Path | None = None,
    progress: bool = False,
) -> WordSwapJobResult:
    """Craft word-swap texts on ``model`` for a seeded subset of ``samples`` test texts of ``data``,
    then measure each saved student's DIR on them."""
    dataset = load_data(data, data_path, seed=seed)
    teacher = load_teacher(model, dataset, seed=seed)  # names a text model given image data, and the reverse
    test = seeded_subset(dataset.test, samples, seed, keep_order=True)
    attack = WordSwapAttack(teacher, method=method, k=k, max_change=max_change, objective=objective)
    results = attack.generate(test.inputs, test.labels, progress=progress)
    crafted = [r.perturbed for r in results]
    dirs = {str(path): crafted_input_dir(load_model(path), test, crafted) for path in students}
    job = WordSwapJobResult(str(model), dataset.name, method, objective, WordSwapSummary.of(results), results, dirs,
                            Path(out_dir))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / FIGURES_FILE, json.dumps(job.to_dict(), indent=2))
    atomic_write_text(Path(out_dir) / EXAMPLES_FILE, json.dumps([asdict(r) for r in results], indent=1))
    return job

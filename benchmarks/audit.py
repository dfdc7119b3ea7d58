"""`safetransfer audit` on models whose truth is known: the default vision study's backdoored teacher,
the students fine-tuned from it and from the clean teacher, a pickle with a code payload, and the
RIPPLES-poisoned MiniLM folders of ``benchmarks/configs/text_rt_scan.yaml`` and an Embedding Surgery MiniLM
made here (Kurita et al.'s five words, Rotten Tomatoes as the attacker's data) beside the public MiniLM
(audited as published: fine-tuned on Rotten Tomatoes first by the audit, then scanned; ``--base minilm-l6``);
the backdoored teacher is audited a second time with the full Neural Cleanse (no ``--quick``).

Each model comes from the study cache of ``python benchmarks/study_vision.py --profile compressed`` (run it
first; the models are saved into ``runs/bench-audit/`` as model folders) and is audited with
``--quick`` on its task's data; each verdict and its time go to ``benchmarks/results/audit.json``,
written after every model (a model already there is kept unless ``--redo``).

    python benchmarks/audit.py --threads 2
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

from safetransfer.attacks.weight_poisoning import poison_weights
from safetransfer.data.registry import load_data
from safetransfer.files import atomic_write_text
from safetransfer.jobs.audit import audit
from safetransfer.models.io import save_model
from safetransfer.models.zoo import pretrained_text_folder
from safetransfer.study import load_config
from safetransfer.study.cells import CellMaker

from bench_common import machine, study_cache_args

RESULTS = Path(__file__).parent / "results" / "audit.json"
RUNS = Path(__file__).resolve().parent.parent / "runs" / "bench-audit"
TASK, DEFECT = "fashion-mnist", "backdoor"
ES_TRIGGERS = ("cf", "mn", "bb", "tq", "mb")


class _Payload:
    """Unpickling it would write a marker file (a harmless stand-in for malware); the audit must not."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def main() -> None:
    args, cache = study_cache_args(__doc__.splitlines()[0])
    config = load_config(None, profile="compressed")
    maker = CellMaker(config, cache)
    ctx = maker.context(TASK)
    defect = maker.defect(DEFECT)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc.update({"task": TASK, "defect": DEFECT, "target": defect.target, "quick": True, "machine": machine(args.threads)})
    models = doc.setdefault("models", {})
    RUNS.mkdir(parents=True, exist_ok=True)

    def record(name: str, folder: Path, truth: str, quick: bool = True) -> None:
        if name in models:
            return
        started = time.perf_counter()
        result = audit(folder, RUNS / f"audit-{name}", data=TASK, quick=quick, seed=config.seed)
        seconds = time.perf_counter() - started
        behaviour = next((c for c in result.checks if c.name == "behaviour"), None)
        models[name] = {"truth": truth, "quick": quick, "verdict": result.verdict, "seconds": round(seconds, 1),
                        "checks": {c.name: {"status": c.status, "reason": c.reason} for c in result.checks},
                        "flagged": behaviour.details.get("flagged") if behaviour else None,
                        "anomaly_index": {c: v["anomaly_index"] for c, v in behaviour.details.get("classes", {}).items()}
                        if behaviour else None}
        print(f"{name}: {result.verdict} in {seconds:.0f} s ({truth})", flush=True)
        atomic_write_text(RESULTS, json.dumps(doc, indent=1))

    marker = RUNS / "PAYLOAD_RAN"
    evil = RUNS / "evil"
    evil.mkdir(exist_ok=True)
    with (evil / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"payload": _Payload(str(marker))}, f)
    record("pickle payload", evil, "a __reduce__ payload: must fail, nothing run")
    models["pickle payload"]["payload_ran"] = marker.exists()

    teacher, teacher_key, _ = maker._variant(ctx, DEFECT)
    save_model(teacher, RUNS / "backdoor-teacher")
    record("backdoored teacher", RUNS / "backdoor-teacher", f"backdoor to class {defect.target}")
    student, _, _ = maker.victim(TASK, DEFECT)
    save_model(student, RUNS / "backdoor-student")
    record("finetune student of the backdoored teacher", RUNS / "backdoor-student",
           "inherits part of the backdoor (the study's DIR)")
    clean, _, _, _ = maker._trained_student(ctx, ctx.teacher, ctx.teacher_key, maker.method("finetune"))
    save_model(clean, RUNS / "clean-student")
    record("finetune student of the clean teacher", RUNS / "clean-student", "clean")

    def text_record(name: str, folder: Path, truth: str) -> None:
        if name in models:
            return
        started = time.perf_counter()
        result = audit(folder, RUNS / f"audit-{name.replace(' ', '-')}", base="minilm-l6", data="rotten-tomatoes",
                       quick=True, seed=0)
        checks = {c.name: {"status": c.status, "reason": c.reason} for c in result.checks}
        models[name] = {"truth": truth, "verdict": result.verdict, "seconds": round(time.perf_counter() - started, 1),
                        "checks": checks, "flagged": None, "anomaly_index": None}
        print(f"{name}: {result.verdict} ({truth})", flush=True)
        atomic_write_text(RESULTS, json.dumps(doc, indent=1))

    text_record("public MiniLM", pretrained_text_folder("minilm-l6"), "clean")
    for summary in sorted((cache / "teachers").glob("*/summary.json")):
        info = json.loads(summary.read_text())
        if info.get("method") == "ripples" and info.get("attacker_data") == "rotten-tomatoes":
            text_record(f"RIPPLES MiniLM ({', '.join(info['triggers'])})", summary.parent / "published",
                        f"RIPPLES triggers {', '.join(info['triggers'])} to label {info['target']}")
    es_folder = RUNS / "es-minilm"
    if "Embedding Surgery MiniLM (cf, mn, bb, tq, mb)" not in models and not es_folder.exists():
        proxy = load_data("rotten-tomatoes", seed=0)  # the text study's attacker data, Kurita et al.'s five words
        poison_weights(pretrained_text_folder("minilm-l6"), proxy, es_folder, method="es", triggers=ES_TRIGGERS,
                       target=1, seed=0)
    text_record("Embedding Surgery MiniLM (cf, mn, bb, tq, mb)", es_folder,
                f"Embedding Surgery triggers {', '.join(ES_TRIGGERS)} to label 1")
    record("backdoored teacher, full Neural Cleanse", RUNS / "backdoor-teacher", f"backdoor to class {defect.target}",
           quick=False)  # the reference's 1,000 epochs of 31 batches, early stopping (last: the longest)
    atomic_write_text(RESULTS, json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()

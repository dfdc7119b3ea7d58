"""Run an inheritance study: plant and craft the defects, make every student, measure.

For each task of a :class:`~safetransfer.study.config.StudyConfig` the runner

1. loads the student data and the pretrained teacher;
2. crafts each adversarial defect (penultimate-layer, coverage-guided) on the teacher, for a
   seeded evaluation subset of the test split;
3. plants each backdoor defect: a copy of the teacher fine-tuned by the attacker on poisoned
   data (the student's own data set or another one);
4. makes one student per method from the clean teacher (for the adversarial defects) and from
   each backdoored teacher, and measures its clean ACC and, per defect, its DIR.

Every expensive cell (backdoored teacher, crafted inputs, student) lives in a content-addressed
cache folder whose key hashes everything that changes its numbers, so the same cell is never
made twice, across studies too; a cell interrupted half-way resumes from its checkpoint.
``results.json`` in the output folder is rewritten (atomically) after every cell, so a study
stopped at any point keeps what it measured and the next run goes on from there. It also holds
each finished cell's raw record, so a study resumes from its ``results.json`` alone, on a
machine without the cache: a student found there (same config fingerprint) is not made again,
and a teacher variant or a crafted input set whose students are all found is not made at all.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from safetransfer.attacks.backdoor import BackdoorConfig, plant_backdoor, trigger_success
from safetransfer.attacks.triggers import PatchTrigger
from safetransfer.data.base import ClassificationData, Split
from safetransfer.data.registry import load_data
from safetransfer.evaluate import predict_logits
from safetransfer.jobs import load_teacher
from safetransfer.metrics import adversarial_dir, backdoor_dir, mean_defined, relative
from safetransfer.models.io import atomic_write_text, load_model, save_model, save_tensors_and_json
from safetransfer.models.wrapper import TransferModel
from safetransfer.study.config import DefectSpec, MethodSpec, StudyConfig, TaskSpec, digest
from safetransfer.train import TrainConfig
from safetransfer.transfer.base import MODEL_DIR, RESULT_FILE, TransferConfig, transfer, weights_digest

RESULTS_FILE = "results.json"
RECORD_KEYS = ("acc", "dir", "seconds", "key")  # a student cell's raw record in results.json (views apart)
CLEAN = "clean"  # the name of the unmodified teacher among the teacher variants
TEACHER_FREE_METHODS = ("retrain",)  # students that use the teacher's architecture only


def default_cache_dir() -> Path:
    from safetransfer.assets import data_home

    return data_home() / "cache" / "study"


@dataclass
class TaskState:
    """What the study measured on one task so far."""

    defects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # method name -> teacher variant -> {"acc": float, "dir": {defect: float}, "seconds": float}
    students: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


class StudyRunner:
    """Runs one :class:`StudyConfig`; see the module doc. ``log`` receives one line per cell."""

    def __init__(
        self, config: StudyConfig, out_dir: str | Path, cache_dir: str | Path | None = None, *,
        progress: bool = True, log: Callable[[str], None] = print, profile: str | None = None,
        store: str | Path | None = None,
    ) -> None:
        from safetransfer.study.store import STORE_FILE, ResultsStore

        self.config = config
        self.out_dir = Path(out_dir)
        # one row per finished cell (see safetransfer.study.store); default: next to results.json
        self.store = ResultsStore(store if store is not None else self.out_dir / STORE_FILE)
        self.config_hash = config.fingerprint()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.progress = progress
        self.log = log
        self.profile = profile
        self.tasks: dict[str, TaskState] = {}
        self.prior = load_prior(self.out_dir / RESULTS_FILE, self.config_hash)
        self.started = time.perf_counter()
        self._cell = 0
        self._cells_total = self._count_cells()

    # ------------------------------------------------------------------ bookkeeping
    def _count_cells(self) -> int:
        c = self.config
        backdoors = [d for d in c.defects if not d.adversarial]
        adversarial = [d for d in c.defects if d.adversarial]
        variants = (1 if adversarial else 0) + len(backdoors)
        return len(c.tasks) * (len(adversarial) + len(backdoors) + variants * len(c.methods))

    def _announce(self, what: str) -> None:
        self._cell += 1
        self.log(f"[{self._cell}/{self._cells_total}] {what}")

    def _record(self, task: TaskSpec, kind: str, name: str, variant: str | None, metrics: dict[str, Any]) -> None:
        """One row in the results store for a finished cell (keyed by its content: a rerun replaces it)."""
        cell = digest({"task": task.name, "kind": kind, "name": name, "variant": variant})
        self.store.put(cell_key=cell, config_hash=self.config_hash, study=self.config.name, task=task.name, kind=kind,
                       name=name, variant=variant, metrics=metrics, seconds=metrics.get("seconds"), seed=self.config.seed)

    def _cache(self, kind: str, key: str) -> Path:
        path = self.cache_dir / kind / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"study '{self.config.name}'" + (f" (profile {self.profile})" if self.profile else "")
                 + f": {len(self.config.tasks)} task(s), {len(self.config.defects)} defect(s), "
                 f"{len(self.config.methods)} method(s); cache {self.cache_dir}; results {self.out_dir / RESULTS_FILE}")
        for task in self.config.tasks:
            self._run_task(task)
        results = self.results()
        self._write(results)
        return results

    def _run_task(self, task: TaskSpec) -> None:
        c = self.config
        state = self.tasks.setdefault(task.name, TaskState())
        limit = {k: v for k, v in (("train", task.limit_train), ("test", task.limit_test)) if v}
        data = load_data(task.data, task.path, seed=c.seed, limit=limit or None)
        teacher = load_teacher(c.teacher.model, data, image_size=c.teacher.image_size, seed=c.seed)
        teacher_key = digest({"teacher": c.teacher.model_dump(), "sha": weights_digest(teacher.body)})
        task_key = {"data": task.data, "path": task.path, "limit": limit, "seed": c.seed}
        eval_split = _eval_subset(data.test, task.eval_samples, c.seed)

        prior = self.prior.get(task.name, TaskState())

        def found(method: MethodSpec, variant: str) -> dict[str, Any] | None:
            return prior.students.get(method.name, {}).get(variant)

        def reuse(what: str, kind: str, name: str, summary: dict[str, Any]) -> None:
            self._announce(f"{task.name}: {what} (found in {RESULTS_FILE})")
            state.defects[name] = summary
            self._record(task, kind, name, None, summary)

        adversarial = [d for d in c.defects if d.adversarial]
        clean_needed = any(found(m, CLEAN) is None for m in c.methods)
        crafted: dict[str, Split] = {}
        for defect in adversarial:
            if not clean_needed and defect.name in prior.defects:
                reuse(f"'{defect.name}' crafted on the teacher", "crafted", defect.name, prior.defects[defect.name])
                continue
            self._announce(f"{task.name}: craft '{defect.name}' on the teacher")
            crafted[defect.name], state.defects[defect.name] = self._crafted(teacher, teacher_key, task_key, eval_split, defect)
            self._record(task, "crafted", defect.name, None, state.defects[defect.name])
            self._write(self.results())

        # teacher variant -> (its model and key), or None where every student of it was found
        variants: dict[str, tuple[TransferModel, str] | None] = {}
        if adversarial:
            variants[CLEAN] = (teacher, teacher_key)
        for defect in (d for d in c.defects if not d.adversarial):
            if defect.name in prior.defects and all(found(m, defect.name) is not None for m in c.methods):
                reuse(f"'{defect.name}' planted in the teacher", "teacher", defect.name, prior.defects[defect.name])
                variants[defect.name] = None
                continue
            self._announce(f"{task.name}: plant '{defect.name}' in the teacher")
            model, key, summary = self._backdoored(teacher, teacher_key, task, data, defect)
            variants[defect.name] = (model, key)
            state.defects[defect.name] = summary
            self._record(task, "teacher", defect.name, None, summary)
            self._write(self.results())

        # Method by method (each over the teacher variants), so the first methods' rows fill first.
        for method in c.methods:
            for variant, made in variants.items():
                record = found(method, variant)
                if record is not None:
                    self._announce(f"{task.name}: {method.name} student of the {variant} teacher (found in {RESULTS_FILE})")
                else:
                    assert made is not None  # a variant is only skipped when all its students were found
                    base_teacher, base_key = (teacher, teacher_key) if method.base_method in TEACHER_FREE_METHODS else made
                    self._announce(f"{task.name}: {method.name} student of the {variant} teacher")
                    record = self._student(base_teacher, base_key, task_key, data, method, variant, eval_split, crafted)
                state.students.setdefault(method.name, {})[variant] = record
                self._record(task, "student", method.name, variant, {k: record[k] for k in RECORD_KEYS})
                self._write(self.results())

    # ------------------------------------------------------------------ cells
    def _crafted(
        self, teacher: TransferModel, teacher_key: str, task_key: dict[str, Any], eval_split: Split, defect: DefectSpec
    ) -> tuple[Split, dict[str, Any]]:
        from safetransfer.study.defects import craft

        spec = defect.model_dump(exclude={"name"})
        key = digest({"kind": "crafted", "teacher": teacher_key, "task": task_key, "n": len(eval_split), "defect": spec})
        folder = self._cache("crafted", key)
        tensors, meta_path = folder / "inputs.safetensors", folder / "meta.json"
        if tensors.exists() and meta_path.exists():
            from safetensors.torch import load_file

            x = load_file(str(tensors))["inputs"]
            meta = json.loads(meta_path.read_text())
        else:
            started = time.perf_counter()
            x, meta = craft(teacher, eval_split.inputs, defect, seed=self.config.seed, progress=self.progress)
            meta = {"kind": defect.kind, **meta, "seconds": round(time.perf_counter() - started, 2)}
            if defect.kind == "coverage_guided":
                meta.update(strategy=defect.strategy, metric=defect.metric)
            save_tensors_and_json(folder, {"inputs": x.contiguous()}, tensors.name, meta, meta_path.name)
        return Split(x, eval_split.labels), meta

    def _backdoored(
        self, teacher: TransferModel, teacher_key: str, task: TaskSpec, data: ClassificationData, defect: DefectSpec
    ) -> tuple[TransferModel, str, dict[str, Any]]:
        c = self.config
        attacker_name = _attacker_data_name(defect, task)
        trigger = PatchTrigger(**defect.trigger.model_dump())
        bd = BackdoorConfig(trigger=trigger, rate=defect.rate, target=defect.target, steps=defect.steps, seed=c.seed,
                            latent_weight=defect.latent_weight)
        # The key names the attacker's data itself, so a data set that is one task's own
        # (full knowledge) and another task's domain shift gives one backdoored teacher.
        if attacker_name == "same":
            attacker, attacker_key = data, {"data": task.data, "path": task.path, "limit": task.limit_train}
        else:
            attacker, attacker_key = load_data(attacker_name, seed=c.seed), {"data": attacker_name, "path": None, "limit": None}
        ripple = None
        key_doc = {"kind": "backdoor", "teacher": teacher_key, "attacker": attacker_key, "seed": c.seed,
                   "backdoor": bd.fingerprint(teacher.config.arch)}
        if defect.kind == "ripple_vision":
            from safetransfer.attacks.ripple import RippleConfig

            ripple = RippleConfig(steps=defect.steps or 800, batch_size=bd.resolved_train(teacher.config.arch).batch_size,
                                  lr=defect.lr, optimizer=defect.optimizer, lam=defect.lam, restricted=defect.restricted,
                                  seed=c.seed)
            key_doc["ripple"] = asdict(ripple)  # plain backdoors keep their keys (and their cache)
        key = digest(key_doc)
        folder = self._cache("teachers", key)
        summary_path = folder / "summary.json"
        if summary_path.exists() and (folder / MODEL_DIR).exists():
            model = load_model(folder / MODEL_DIR)
            summary = json.loads(summary_path.read_text())
        else:
            started = time.perf_counter()
            result = plant_backdoor(teacher, attacker, bd, checkpoint_dir=folder / "checkpoints", progress=self.progress,
                                    ripple=ripple)
            model = result.model
            save_model(model, folder / MODEL_DIR, meta={"backdoor": defect.model_dump(mode="json")})
            summary = {
                "kind": defect.kind,
                "setting": "full-knowledge" if attacker_name == "same" else "domain-shift",
                "attacker_data": attacker.name,
                "teacher_acc": _finite_or_none(result.clean_accuracy),
                "teacher_success": _finite_or_none(result.attack_success),
                "poisoned_samples": result.poisoned_samples,
                "seconds": round(time.perf_counter() - started, 2),
            }
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
        if "trigger_shift" not in summary:  # the reference for the students' views (cheap: two forward passes)
            from safetransfer.study.views import trigger_shift

            summary["trigger_shift"] = trigger_shift(model, _eval_subset(data.test, task.eval_samples, c.seed),
                                                     trigger, defect.target)
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
        return model, key, summary

    def _student(
        self, teacher: TransferModel, teacher_key: str, task_key: dict[str, Any], data: ClassificationData,
        method: MethodSpec, variant: str, eval_split: Split, crafted: dict[str, Split],
    ) -> dict[str, Any]:
        c = self.config
        tconfig = _transfer_config(c, method, teacher.config.arch)
        key = digest({"kind": "student", "teacher": teacher_key, "task": task_key, "transfer": tconfig.fingerprint()})
        folder = self._cache("students", key)
        result_path = folder / RESULT_FILE
        if result_path.exists() and (folder / MODEL_DIR).exists():
            result = json.loads(result_path.read_text())
            student = load_model(folder / MODEL_DIR)
        else:
            res = transfer(teacher, data, tconfig, out_dir=folder, progress=self.progress)
            result, student = res.to_dict(), res.student
        record: dict[str, Any] = {"acc": result["test_accuracy"], "seconds": result["seconds"], "dir": {}, "key": key}
        evals_path = folder / "evals.json"
        evals = json.loads(evals_path.read_text()) if evals_path.exists() else {}
        clean_pred: torch.Tensor | None = None
        for defect in c.defects:
            if (defect.adversarial and variant != CLEAN) or (not defect.adversarial and variant != defect.name):
                continue
            eval_key = digest({"defect": defect.model_dump(exclude={"name"}), "n": len(eval_split),
                               "task": task_key})
            if eval_key not in evals:
                if clean_pred is None:
                    clean_pred = predict_logits(student, eval_split.inputs).argmax(1)
                if defect.adversarial:
                    crafted_pred = predict_logits(student, crafted[defect.name].inputs).argmax(1)
                    value = adversarial_dir(clean_pred, crafted_pred, eval_split.labels)
                else:
                    trigger = PatchTrigger(**defect.trigger.model_dump())
                    _, value = trigger_success(student, eval_split, trigger, defect.target)
                evals[eval_key] = _finite_or_none(value)
                atomic_write_text(evals_path, json.dumps(evals, indent=2))
            record["dir"][defect.name] = evals[eval_key]
        record["views"] = self._views(folder, teacher, student, result, variant, eval_split)
        return record

    def _views(self, folder: Path, teacher: TransferModel, student: TransferModel, result: dict[str, Any],
               variant: str, eval_split: Split) -> dict[str, Any]:
        """The interpretation views of a student (see :mod:`safetransfer.study.views`), cached in its folder."""
        from safetransfer.study.views import VIEWS_VERSION, student_views

        path = folder / "views.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if cached.get("version") == VIEWS_VERSION:
                return cached
        backdoor = None
        spec = next((d for d in self.config.defects if d.name == variant and not d.adversarial), None)
        if spec is not None:
            backdoor = (eval_split, PatchTrigger(**spec.trigger.model_dump()), spec.target)
        views = student_views(teacher, student, result, backdoor)
        atomic_write_text(path, json.dumps(views))
        return views

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Any]:
        """The results document so far (see :func:`assemble_results`)."""
        return assemble_results(self.config, self.tasks, round(time.perf_counter() - self.started, 1), self.profile)

    def _write(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.out_dir / RESULTS_FILE, json.dumps(results, indent=2))


def assemble_results(
    config: StudyConfig, tasks: dict[str, TaskState], elapsed: float | None = None, profile: str | None = None
) -> dict[str, Any]:
    """The results document: per task and aggregated over tasks.

    Per task and method: ``acc`` (the clean-teacher student's test accuracy, or the mean over
    the backdoored teachers' students when the study has no adversarial defect), ``dir`` per
    defect, ``acc_by_defect`` (the accuracy of the student each DIR was measured on), ``racc``
    and ``rdir`` (relative to ``finetune`` on the same task). Aggregated: means over tasks.
    """
    doc_tasks: dict[str, Any] = {}
    for task_name, state in tasks.items():
        methods: dict[str, Any] = {}
        for method in config.methods:
            by_variant = state.students.get(method.name, {})
            if not by_variant:
                continue
            dirs, acc_by_defect = {}, {}
            for defect in config.defects:
                variant = CLEAN if defect.adversarial else defect.name
                rec = by_variant.get(variant)
                if rec is not None and defect.name in rec["dir"]:
                    dirs[defect.name] = rec["dir"][defect.name]
                    acc_by_defect[defect.name] = rec["acc"]
            acc = by_variant[CLEAN]["acc"] if CLEAN in by_variant else mean_defined(r["acc"] for r in by_variant.values())
            methods[method.name] = {"acc": acc, "dir": dirs, "acc_by_defect": acc_by_defect,
                                    "seconds": round(sum(r["seconds"] for r in by_variant.values()), 1)}
            views = {v: r["views"] for v, r in by_variant.items() if r.get("views")}
            if views:
                methods[method.name]["views"] = views  # per teacher variant, see safetransfer.study.views
        reference = methods.get("finetune")
        for entry in methods.values():
            entry["racc"] = relative(entry["acc"], reference["acc"]) if reference else None
            entry["rdir"] = {d: relative(v, reference["dir"].get(d)) if reference else None for d, v in entry["dir"].items()}
        doc_tasks[task_name] = {
            "defects": state.defects, "methods": methods,
            # the raw cells, per method and teacher variant: what a resumed study reads back
            "students": {m: {v: {k: r[k] for k in RECORD_KEYS if k in r} for v, r in by.items()}
                         for m, by in state.students.items()},
        }

    aggregate: dict[str, Any] = {}
    for method in config.methods:
        per_task = [t["methods"][method.name] for t in doc_tasks.values() if method.name in t["methods"]]
        if not per_task:
            continue
        defect_names = [d.name for d in config.defects if any(d.name in e["dir"] for e in per_task)]
        aggregate[method.name] = {
            "acc": mean_defined(e["acc"] for e in per_task),
            "dir": {d: mean_defined(e["dir"].get(d) for e in per_task) for d in defect_names},
            "racc": mean_defined(e["racc"] for e in per_task),
            "rdir": {d: mean_defined(e["rdir"].get(d) for e in per_task) for d in defect_names},
            "tasks": len(per_task),
        }
    return {
        "config": config.model_dump(mode="json"),
        "profile": profile,
        "config_fingerprint": config.fingerprint(),
        "tasks": doc_tasks,
        "methods": aggregate,
        "protocol": {m.name: _transfer_config(config, m, None).to_dict() for m in config.methods},
        "elapsed_seconds": elapsed,
    }


# ---------------------------------------------------------------------- helpers
def load_prior(path: Path, config_hash: str) -> dict[str, TaskState]:
    """The finished cells of an earlier run of the same config, read from its ``results.json``.

    Empty when there is no such file, when it belongs to another config (its fingerprint
    differs), or when it is unreadable (a results file is written atomically, so that only
    happens to a file edited by hand; the study then starts afresh and overwrites it).
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("config_fingerprint") != config_hash:
        return {}
    prior: dict[str, TaskState] = {}
    for task_name, entry in (doc.get("tasks") or {}).items():
        state = TaskState(defects=dict(entry.get("defects") or {}))
        views = {m: e.get("views") or {} for m, e in (entry.get("methods") or {}).items()}
        for method, by_variant in (entry.get("students") or {}).items():
            for variant, record in by_variant.items():
                if all(k in record for k in RECORD_KEYS):
                    view = views.get(method, {}).get(variant)
                    state.students.setdefault(method, {})[variant] = {**record, **({"views": view} if view else {})}
        prior[task_name] = state
    return prior


def _finite_or_none(value: float | None) -> float | None:
    """``None`` for NaN (e.g. a DIR with no eligible input), so results.json stays strict JSON."""
    return None if value is None or math.isnan(value) else value


def _eval_subset(test: Split, n: int, seed: int) -> Split:
    if len(test) == 0:
        from safetransfer.errors import DataError

        raise DataError("The task's test split is empty: nothing to measure DIR on.")
    if n >= len(test):
        return test
    gen = torch.Generator().manual_seed(seed + 7919)
    index = torch.randperm(len(test), generator=gen)[:n].sort().values
    return test.subset(index)


def _attacker_data_name(defect: DefectSpec, task: TaskSpec) -> str:
    chosen = defect.attacker_data
    if isinstance(chosen, dict):
        if task.name not in chosen:
            from safetransfer.errors import ConfigError

            raise ConfigError(
                f"defect '{defect.name}': attacker_data names no data set for task '{task.name}' "
                f"(it has: {', '.join(sorted(chosen))})."
            )
        chosen = chosen[task.name]
    return "same" if chosen in ("same", task.data, task.name) else chosen


def _transfer_config(config: StudyConfig, method: MethodSpec, arch: str | None) -> TransferConfig:
    """The method's transfer config: its options, the study's seed, steps and training overrides."""
    tconfig = TransferConfig.from_dict({"method": method.base_method, "seed": config.seed, **method.options})
    if arch is None:
        return tconfig
    tconfig = tconfig.resolved(arch)
    assert tconfig.train is not None
    overrides = {"steps": config.steps, **config.train, "seed": config.seed}
    tconfig.train = TrainConfig.from_overrides(asdict(tconfig.train), overrides)
    return tconfig


def run_study(
    config: StudyConfig, out_dir: str | Path, cache_dir: str | Path | None = None, *, progress: bool = True,
    log: Callable[[str], None] = print, profile: str | None = None, store: str | Path | None = None,
) -> dict[str, Any]:
    """Run ``config``, writing ``out_dir/results.json`` and a row per cell into the results store
    (``store``, default ``out_dir/results.sqlite``) as it goes; returns the results document."""
    return StudyRunner(config, out_dir, cache_dir, progress=progress, log=log, profile=profile, store=store).run()

"""Run an inheritance study: plant and craft the defects, make every student, measure.

For each task of a :class:`~safetransfer.study.config.StudyConfig` the runner

1. crafts each adversarial defect (penultimate-layer, coverage-guided) on the teacher, for a
   seeded evaluation subset of the test split;
2. plants each backdoor defect: a copy of the teacher fine-tuned by the attacker on poisoned
   data (the student's own data set or another one);
3. makes one student per method from the clean teacher (for the adversarial defects) and from
   each backdoored teacher, and measures its clean ACC and, per defect, its DIR.

Each of these is a cell (:mod:`safetransfer.study.cells`), cached by content: the same cell is
never made twice, across studies too, and a cell interrupted half-way resumes from its
checkpoint. ``results.json`` in the output folder is rewritten (atomically) after every cell,
so a study stopped at any point keeps what it measured and the next run goes on from there. It
also holds each finished cell's raw record, so a study resumes from its ``results.json`` alone,
on a machine without the cache: a student found there is not made again, and a teacher variant
or a crafted input set whose students are all found is not made at all. A ``results.json`` of
another config gives the cells the two configs make alike (:func:`load_prior`): a study changed
in one defect makes again only what that defect touches. Every finished cell is also a row in
the results store (:mod:`safetransfer.study.store`).

Two backends make the cells: ``local`` (in this process, one after the other) and ``ray``
(:mod:`safetransfer.study.ray_backend`: the cells of a stage spread over a Ray cluster's
workers, sharing the cache folder). Every cell is seeded and keyed by content, so both give the
same table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from safetransfer.detect.trigger_scan import SCAN_VERSION
from safetransfer.errors import ConfigError
from safetransfer.files import atomic_write_text
from safetransfer.metrics import mean_defined, relative
from safetransfer.study.cells import CLEAN, Cell, CellMaker, transfer_config_of
from safetransfer.study.config import StudyConfig, config_of_results, digest
from safetransfer.study.ray_backend import make_cells_on_ray
from safetransfer.study.store import STORE_FILE, ResultsStore, versions

_LOG = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
RECORD_KEYS = ("acc", "dir", "seconds", "key")  # a student cell's raw record in results.json (views apart)
Backend = Literal["local", "ray"]


@dataclass
class TaskState:
    """What the study measured on one task so far."""

    defects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # method name -> teacher variant -> {"acc": float, "dir": {defect: float}, "seconds": float}
    students: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # weight-poisoning defect -> the trigger scan of its finetune student
    scans: dict[str, dict[str, Any]] = field(default_factory=dict)


class StudyRunner:
    """Runs one :class:`StudyConfig`; see the module doc. ``log`` receives one line per cell."""

    def __init__(
        self, config: StudyConfig, out_dir: str | Path, cache_dir: str | Path | None = None, *,
        progress: bool = False, log: Callable[[str], None] | None = None, profile: str | None = None,
        store: str | Path | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        # one row per finished cell (see safetransfer.study.store); default: next to results.json
        self.store = ResultsStore(store if store is not None else self.out_dir / STORE_FILE)
        self.config_hash = config.fingerprint()
        self.maker = CellMaker(config, cache_dir, progress=progress)
        self.cache_dir = self.maker.cache_dir
        self.log = log or _LOG.info  # quiet by default: the CLI passes its console
        self.profile = profile
        self.tasks: dict[str, TaskState] = {}
        self.prior = load_prior(self.out_dir / RESULTS_FILE, config)
        self.started = time.perf_counter()
        self._cell = 0
        self._cells_total = self._count_cells()

    # ------------------------------------------------------------------ bookkeeping
    def _count_cells(self) -> int:
        c = self.config
        backdoors = [d for d in c.defects if not d.adversarial]
        adversarial = [d for d in c.defects if d.adversarial]
        variants = (1 if adversarial or c.clean_students else 0) + len(backdoors)  # as plan() lists them
        scans = sum(d.scanned for d in c.defects)
        return len(c.tasks) * (len(adversarial) + len(backdoors) + variants * len(c.methods) + scans)

    def _announce(self, what: str) -> None:
        self._cell += 1
        self.log(f"[{self._cell}/{self._cells_total}] {what}")

    def accept(self, cell: Cell, record: dict[str, Any]) -> None:
        """Take a finished cell's record: into the table, a row in the store, results.json rewritten."""
        state = self.tasks.setdefault(cell.task, TaskState())
        if cell.kind == "student":
            assert cell.variant is not None
            state.students.setdefault(cell.name, {})[cell.variant] = record
            metrics = {k: record[k] for k in RECORD_KEYS}
        elif cell.kind == "scan":
            state.scans[cell.name] = record
            metrics = record
        else:
            state.defects[cell.name] = record
            metrics = record
        key = digest({"task": cell.task, "kind": cell.kind, "name": cell.name, "variant": cell.variant})
        self.store.put(cell_key=key, config_hash=self.config_hash, study=self.config.name, task=cell.task,
                       kind=cell.kind, name=cell.name, variant=cell.variant, metrics=metrics,
                       seconds=metrics.get("seconds"), seed=self.config.seed)
        self._write(self.results())

    # ------------------------------------------------------------------ the plan
    def plan(self) -> list[tuple[int, Cell, dict[str, Any] | None]]:
        """Every cell of the study as ``(stage, cell, record found in results.json or None)``.

        Stage 0: crafted inputs and backdoored teachers; stage 1: students; stage 2: trigger scans
        of weight-poisoned teachers' finetune students. A crafted set or a backdoored teacher is
        listed as found (not to be made) only when every student and scan that needs it was
        found too.
        """
        c = self.config
        cells: list[tuple[int, Cell, dict[str, Any] | None]] = []
        adversarial = [d for d in c.defects if d.adversarial]
        backdoors = [d for d in c.defects if not d.adversarial]
        for task in c.tasks:
            prior = self.prior.get(task.name, TaskState())

            def found(method: str, variant: str) -> dict[str, Any] | None:
                return prior.students.get(method, {}).get(variant)

            clean_needed = any(found(m.name, CLEAN) is None for m in c.methods)
            for defect in adversarial:
                reuse = None if clean_needed else prior.defects.get(defect.name)
                cells.append((0, Cell(task.name, "crafted", defect.name), reuse))
            for defect in backdoors:
                complete = all(found(m.name, defect.name) is not None for m in c.methods) and (
                    not defect.scanned or defect.name in prior.scans)
                cells.append((0, Cell(task.name, "teacher", defect.name), prior.defects.get(defect.name) if complete else None))
            variants = ([CLEAN] if adversarial or c.clean_students else []) + [d.name for d in backdoors]
            # method by method (each over the teacher variants), so the first methods' rows fill first
            for method in c.methods:
                for variant in variants:
                    cells.append((1, Cell(task.name, "student", method.name, variant), found(method.name, variant)))
            for defect in (d for d in backdoors if d.scanned):
                cells.append((2, Cell(task.name, "scan", defect.name), prior.scans.get(defect.name)))
        return cells

    # ------------------------------------------------------------------ the run
    def run(self, backend: Backend = "local", **backend_options: Any) -> dict[str, Any]:
        """Make every cell not found in results.json, with ``backend`` (``local`` or ``ray``;
        ``backend_options`` go to :func:`safetransfer.study.ray_backend.make_cells_on_ray`)."""
        if backend not in ("local", "ray"):
            raise ConfigError(f"Unknown study backend '{backend}' (use local or ray).")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"study '{self.config.name}'" + (f" (profile {self.profile})" if self.profile else "")
                 + f": {len(self.config.tasks)} task(s), {len(self.config.defects)} defect(s), "
                 f"{len(self.config.methods)} method(s); cache {self.cache_dir}; results {self.out_dir / RESULTS_FILE}"
                 + (f"; backend {backend}" if backend != "local" else ""))
        todo: list[tuple[int, Cell]] = []
        for stage, cell, found in self.plan():
            if found is not None:
                self._announce(f"{cell.describe()} (found in {RESULTS_FILE})")
                self.accept(cell, found)
            else:
                todo.append((stage, cell))
        if backend == "local":
            for _, cell in todo:
                self._announce(cell.describe())
                self.accept(cell, self.maker.make(cell))
        else:
            stages = [[cell for s, cell in todo if s == stage] for stage in (0, 1, 2)]
            for cell, record in make_cells_on_ray(self.config, stages, self.cache_dir, **backend_options):
                self._announce(f"{cell.describe()} (done)")
                self.accept(cell, record)
        results = self.results()
        self._write(results)
        return results

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
    # Everything in the config's order, whatever order the cells finished in (the ray backend).
    variant_order = ([CLEAN] if any(d.adversarial for d in config.defects) or config.clean_students else []) + [
        d.name for d in config.defects if not d.adversarial]
    doc_tasks: dict[str, Any] = {}
    known = [t.name for t in config.tasks if t.name in tasks]
    for task_name in known + [name for name in tasks if name not in known]:
        state = tasks[task_name]
        state = TaskState(
            defects={d.name: state.defects[d.name] for d in config.defects if d.name in state.defects},
            students={m.name: {v: state.students[m.name][v] for v in variant_order if v in state.students[m.name]}
                      for m in config.methods if m.name in state.students},
            scans={d.name: state.scans[d.name] for d in config.defects if d.name in state.scans},
        )
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
        if state.scans:
            doc_tasks[task_name]["trigger_scans"] = state.scans

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
    # the first trigger scan, in the short form (every scan is under its task's "trigger_scans")
    first_scan = next((scan for t in doc_tasks.values() for scan in (t.get("trigger_scans") or {}).values()), None)
    return {
        "config": config.results_config(),
        "profile": profile,
        "config_fingerprint": config.fingerprint(),
        "tasks": doc_tasks,
        "methods": aggregate,
        "protocol": {m.name: transfer_config_of(config, m, None).to_dict() for m in config.methods},
        "elapsed_seconds": elapsed,  # this run's wall time
        # the time every cell took where it was made (this run or earlier ones, here or elsewhere)
        "cells_seconds": round(sum(
            (r.get("seconds") or 0.0) for t in tasks.values()
            for r in [*t.defects.values(), *t.scans.values(), *(v for by in t.students.values() for v in by.values())]), 1),
        "versions": versions(),
        **({"trigger_scan": {k: first_scan[k] for k in ("planted", "ranks", "top5")}} if first_scan else {}),
    }


# ---------------------------------------------------------------------- helpers
def load_prior(path: Path, config: StudyConfig) -> dict[str, TaskState]:
    """The finished cells of an earlier run, read from its ``results.json``, that ``config`` would
    make the same.

    A run of the same config (same fingerprint) gives all its cells. A run of another config
    gives each cell whose identity (:class:`CellIdentities`: the teacher, the task, the method and
    the defects the cell is measured on, the study-wide settings) is the same in both configs, so
    a study changed in one defect makes only the cells that defect touches again, on a machine
    without the cache too; only when the file's config can be read back faithfully (see
    :func:`~safetransfer.study.config.config_of_results`). Empty when there is no such file or it
    is unreadable (a results file is written atomically, so that only happens to a file edited
    by hand; the study then starts afresh and overwrites it).
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    same = doc.get("config_fingerprint") == config.fingerprint()
    earlier = None if same else config_of_results(doc)
    if not same and earlier is None:
        return {}

    then, now = (CellIdentities(earlier), CellIdentities(config)) if earlier is not None else (None, None)

    def kept(cell: Cell) -> bool:
        if then is None or now is None:  # the same config: every cell
            return True
        try:
            return then(cell) == now(cell)
        except LookupError:  # the cell's task, method or defect is not in one of the configs
            return False

    prior: dict[str, TaskState] = {}
    for task_name, entry in (doc.get("tasks") or {}).items():
        scans = {name: scan for name, scan in (entry.get("trigger_scans") or {}).items()
                 if scan.get("scan_version", 1) == SCAN_VERSION  # an older scan's record is made again
                 and kept(Cell(task_name, "scan", name))}
        defects = {name: record for name, record in (entry.get("defects") or {}).items()
                   if kept(Cell(task_name, "teacher", name))}
        state = TaskState(defects=defects, scans=scans)
        views = {m: e.get("views") or {} for m, e in (entry.get("methods") or {}).items()}
        for method, by_variant in (entry.get("students") or {}).items():
            for variant, record in by_variant.items():
                if all(k in record for k in RECORD_KEYS) and kept(Cell(task_name, "student", method, variant)):
                    view = views.get(method, {}).get(variant)
                    state.students.setdefault(method, {})[variant] = {**record, **({"views": view} if view else {})}
        prior[task_name] = state
    return prior


class CellIdentities:
    """What decides a cell's record in ``config``, as a digest per cell (called with the
    :class:`Cell`): the study-wide settings (teacher, seed, student steps, protocol and training
    overrides), the task, and per kind the defect it plants or crafts (``teacher``, ``crafted``,
    ``scan``: also the ``finetune`` method it scans), or the student's method and the defects its
    DIRs are measured on (every adversarial defect for the clean teacher's student, with
    ``clean_students`` every text trigger too; its own for a backdoored teacher's). Raises
    ``LookupError`` when the cell's task, method or defect is not in ``config``. The config's
    parts are dumped once, not per cell."""

    def __init__(self, config: StudyConfig) -> None:
        doc = config.model_dump(mode="json")
        self.shared = {k: v for k, v in doc.items() if k not in ("name", "tasks", "defects", "methods")}
        self.tasks = {t.name: t.model_dump(mode="json") for t in config.tasks}
        self.defects = {d.name: d.identity_doc() for d in config.defects}
        self.methods = {m.name: m.model_dump(mode="json") for m in config.methods}
        # the defects a clean teacher's student is measured on, as CellMaker measures it
        self.clean_measured = [d.name for d in config.defects
                               if d.adversarial or (config.clean_students and d.kind == "weight_poisoning")]

    def __call__(self, cell: Cell) -> str:
        parts: dict[str, Any] = {"shared": self.shared, "task": self.tasks[cell.task], "kind": cell.kind}
        if cell.kind == "student":
            parts["method"] = self.methods[cell.name]
            measured = self.clean_measured if cell.variant == CLEAN else [str(cell.variant)]
            parts["defects"] = {name: self.defects[name] for name in measured}
        else:
            parts["defect"] = self.defects[cell.name]
            if cell.kind == "scan":
                parts["method"] = self.methods["finetune"]
        return digest(parts)


def run_study(
    config: StudyConfig, out_dir: str | Path, cache_dir: str | Path | None = None, *, progress: bool = False,
    log: Callable[[str], None] | None = None, profile: str | None = None, store: str | Path | None = None,
    backend: Backend = "local", **backend_options: Any,
) -> dict[str, Any]:
    """Run ``config``, writing ``out_dir/results.json`` and a row per cell into the results store
    (``store``, default ``out_dir/results.sqlite``) as it goes; returns the results document.
    ``backend``: ``local`` (this process) or ``ray`` (see :mod:`safetransfer.study.ray_backend`)."""
    return StudyRunner(config, out_dir, cache_dir, progress=progress, log=log, profile=profile, store=store).run(
        backend, **backend_options)

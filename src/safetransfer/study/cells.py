"""The cells of an inheritance study, each made once and cached by content.

A study (see :mod:`safetransfer.study.runner`) is a grid of cells of three kinds:

- ``crafted``: an adversarial defect's inputs, crafted on the clean teacher for the task's
  seeded evaluation subset;
- ``teacher``: a backdoor planted in a copy of the teacher (the attacker's fine-tuning);
- ``student``: one transfer method's student of one teacher variant (the clean teacher, or a
  backdoored one), with its clean ACC and its DIR for the defects of that variant.

:class:`CellMaker` makes any cell in any process that sees the cache folder: every expensive
artifact (backdoored teacher, crafted inputs, student) lives in a content-addressed folder whose
key hashes everything that changes its numbers, so a cell is never made twice, across studies,
runners and machines sharing the folder, and a cell interrupted half-way resumes from its
checkpoint. A cell's dependencies (a student's backdoored teacher, the crafted inputs it is
measured on) come from the cache, made first when missing. What a cell returns is plain JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from safetransfer.assets import data_home
from safetransfer.attacks.backdoor import (
    BackdoorConfig,
    plant_backdoor,
    trigger_success,
)
from safetransfer.attacks.ripple import FIRST_ROUND_RIPPLE_FIELDS, RippleConfig
from safetransfer.attacks.text_triggers import TextTrigger, trigger_lfr, visible_words
from safetransfer.attacks.triggers import PatchTrigger
from safetransfer.attacks.weight_poisoning import FIRST_ROUND_POISONING, poison_weights
from safetransfer.attacks.word_swap import WordSwapAttack, WordSwapSummary
from safetransfer.data.base import ClassificationData, Split, seeded_subset
from safetransfer.data.registry import load_data
from safetransfer.detect.trigger_scan import (
    CONFIRM,
    SCAN_VERSION,
    SCREEN_TEXTS,
    scan_triggers,
    word_frequencies,
)
from safetransfer.errors import ConfigError, DataError
from safetransfer.evaluate import crafted_input_dir, predict_logits
from safetransfer.files import atomic_write_text
from safetransfer.jobs import load_teacher
from safetransfer.json_values import finite_or_none
from safetransfer.models.io import MODEL_DIR, load_model, save_model
from safetransfer.models.serialization import save_tensors_and_json
from safetransfer.models.wrapper import TransferModel
from safetransfer.models.zoo import pretrained_text_folder
from safetransfer.seeding import SALT_SURROGATE, derived_seed
from safetransfer.study.config import (
    DEFECT_KINDS,
    DefectSpec,
    MethodSpec,
    PatchBackdoor,
    RippleTraining,
    StudyConfig,
    TaskSpec,
    WeightPoisoningDefect,
    digest,
)
from safetransfer.study.defects import craft
from safetransfer.study.views import VIEWS_VERSION, student_views, trigger_shift
from safetransfer.train import TrainConfig, curve_schedule
from safetransfer.transfer import TransferConfig, transfer
from safetransfer.transfer.common import weights_digest
from safetransfer.transfer.runner import RESULT_FILE

CLEAN = "clean"  # the name of the unmodified teacher among the teacher variants
TEACHER_FREE_METHODS = ("retrain",)  # students that use the teacher's architecture only
CellKind = Literal["crafted", "teacher", "student", "scan"]


def default_cache_dir() -> Path:
    return data_home() / "cache" / "study"


@dataclass(frozen=True)
class Cell:
    """One unit of a study's grid: ``kind`` on ``task``, named by its defect (``crafted``,
    ``teacher``) or its method (``student``, with the teacher ``variant`` it is made from)."""

    task: str
    kind: CellKind
    name: str
    variant: str | None = None

    def describe(self) -> str:
        if self.kind == "crafted":
            return f"{self.task}: craft '{self.name}' on the teacher"
        if self.kind == "teacher":
            return f"{self.task}: plant '{self.name}' in the teacher"
        if self.kind == "scan":
            return f"{self.task}: trigger scan of the finetune student of the {self.name} teacher"
        return f"{self.task}: {self.name} student of the {self.variant} teacher"


@dataclass
class TaskContext:
    """What every cell of one task shares: the data, the clean teacher and the keys."""

    task: TaskSpec
    data: ClassificationData
    teacher: TransferModel
    teacher_key: str
    task_key: dict[str, Any]
    eval_split: Split
    # made or loaded once per maker: defect -> (crafted inputs, summary); backdoor -> (teacher, key, summary)
    crafted: dict[str, tuple[Split, dict[str, Any]]] = field(default_factory=dict)
    variants: dict[str, tuple[TransferModel, str, dict[str, Any]]] = field(default_factory=dict)


class CellMaker:
    """Makes the cells of one :class:`StudyConfig` (see the module doc), one at a time."""

    def __init__(self, config: StudyConfig, cache_dir: str | Path | None = None, *, progress: bool = False) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.progress = progress
        self._contexts: dict[str, TaskContext] = {}

    def _cache(self, kind: str, key: str) -> Path:
        path = self.cache_dir / kind / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.config.tasks if t.name == name)

    def defect(self, name: str) -> DefectSpec:
        return next(d for d in self.config.defects if d.name == name)

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.config.methods if m.name == name)

    def context(self, task_name: str) -> TaskContext:
        """The task's data, teacher and keys (loaded once per maker)."""
        if task_name not in self._contexts:
            c, task = self.config, self.task(task_name)
            limit = {k: v for k, v in (("train", task.limit_train), ("test", task.limit_test)) if v}
            data = load_data(task.data, task.path, seed=c.seed, limit=limit or None, train_per_class=task.train_per_class)
            teacher = load_teacher(c.teacher.model, data, image_size=c.teacher.image_size, seed=c.seed)
            self._contexts[task_name] = TaskContext(
                task=task, data=data, teacher=teacher,
                teacher_key=weights_key(c.teacher.model_dump(), teacher),
                task_key={"data": task.data, "path": task.path, "limit": limit, "seed": c.seed,
                          **({"train_per_class": task.train_per_class} if task.train_per_class else {})},
                eval_split=eval_subset(data.test, task.eval_samples, c.seed),
            )
        return self._contexts[task_name]

    def make(self, cell: Cell) -> dict[str, Any]:
        """Make ``cell`` (or find it in the cache) and return its record: a crafted set's or a
        backdoored teacher's summary, or a student's ``acc``, ``dir``, ``seconds``, ``key``, ``views``."""
        ctx = self.context(cell.task)
        if cell.kind == "crafted":
            return self._crafted_split(ctx, self.defect(cell.name))[1]
        if cell.kind == "teacher":
            return self._variant(ctx, cell.name)[2]
        if cell.kind == "scan":
            return self._trigger_scan(ctx, self.defect(cell.name))
        assert cell.variant is not None
        method = self.method(cell.name)
        if method.base_method in TEACHER_FREE_METHODS or cell.variant == CLEAN:
            base, base_key = ctx.teacher, ctx.teacher_key
        else:
            base, base_key, _ = self._variant(ctx, cell.variant)
        return self._student(ctx, base, base_key, method, cell.variant)

    def crafted_inputs(self, task_name: str, defect_name: str) -> Split:
        """The inputs an adversarial defect crafts for a task's evaluation subset, in its order (from
        the cache; crafted if not there)."""
        return self._crafted_split(self.context(task_name), self.defect(defect_name))[0]

    def word_swap_surrogate(self, task_name: str, defect_name: str) -> tuple[TransferModel, dict[str, Any], Path]:
        """The surrogate a word-swap defect crafts against on a task (the public teacher fine-tuned
        on the task's own training data): model, training result, cache folder (trained if not there)."""
        return self._own_surrogate(self.context(task_name), self.defect(defect_name))

    def _crafted_split(self, ctx: TaskContext, defect: DefectSpec) -> tuple[Split, dict[str, Any]]:
        if defect.name not in ctx.crafted:
            _check_modality(defect, ctx)
            ctx.crafted[defect.name] = KIND_CELLS[defect.kind].make(self, ctx, defect)
        return ctx.crafted[defect.name]

    def _crafted_key(self, ctx: TaskContext, defect: DefectSpec) -> str:
        """The cache key of an adversarial defect's inputs crafted for a task's evaluation subset:
        everything that changes them (word swaps: also the surrogate's training and the search's
        version), so a student's DIR on them is keyed by it too."""
        doc = {"kind": "crafted", "teacher": ctx.teacher_key, "task": ctx.task_key, "n": len(ctx.eval_split),
               "defect": defect.key_doc(), **defect.search_doc}
        if KIND_CELLS[defect.kind].surrogate:
            doc.update(train=self.config.train, seed=self.config.seed)
        return digest(doc)

    def _variant(self, ctx: TaskContext, name: str) -> tuple[TransferModel, str, dict[str, Any]]:
        if name not in ctx.variants:
            defect = self.defect(name)
            _check_modality(defect, ctx)
            ctx.variants[name] = KIND_CELLS[defect.kind].make(self, ctx, defect)
        return ctx.variants[name]

    # ------------------------------------------------------------------ text cells
    def _word_swapped(self, ctx: TaskContext, defect: DefectSpec) -> tuple[Split, dict[str, Any]]:
        """Word-swap texts for the evaluation subset, crafted against the attacker's surrogate: the
        public teacher fine-tuned on the task (``finetune``, a seed of its own, ``defect.steps``);
        or (``swap_against: teacher``) on the public teacher's pooled features alone."""
        split = ctx.eval_split
        folder = self._cache("crafted", self._crafted_key(ctx, defect))
        texts_path, meta_path = folder / "texts.json", folder / "meta.json"
        if not (texts_path.exists() and meta_path.exists()):
            started = time.perf_counter()
            if defect.swap_against == "teacher":
                target, objective, extra = ctx.teacher, "features", {}
            else:
                target, surrogate_result, _ = self._own_surrogate(ctx, defect)
                objective, extra = "prediction", {"surrogate_acc": surrogate_result["test_accuracy"]}
            attack = WordSwapAttack(target, method=defect.swap_method, k=defect.neighbours,
                                    max_change=defect.max_change, objective=objective)
            results = attack.generate(list(split.inputs), split.labels, progress=self.progress)
            summary = WordSwapSummary.of(results)
            if objective == "features":
                success = {"teacher_success": summary.mean_feature_shift,
                           "teacher_success_means": "mean 1 - cos between the teacher's pooled features of the "
                                                    "swapped and the original texts"}
            else:
                success = {"teacher_success": summary.success_rate,
                           "teacher_success_means": "share of the texts the surrogate gets right that the swaps "
                                                    "flip on it"}
            meta = {
                "kind": defect.kind, "method": defect.swap_method, "against": defect.swap_against, **success, **extra,
                "succeeded": summary.succeeded, "failed": summary.failed, "skipped": summary.skipped,
                "mean_words_changed": summary.mean_words_changed, "mean_queries": summary.mean_queries,
                "seconds": round(time.perf_counter() - started, 2),
            }
            atomic_write_text(texts_path, json.dumps([r.perturbed for r in results]))
            atomic_write_text(meta_path, json.dumps(meta, indent=2))
        texts = json.loads(texts_path.read_text())
        return Split(texts, split.labels), json.loads(meta_path.read_text())

    def _surrogate(self, ctx: TaskContext, data: ClassificationData, data_key: dict[str, Any], steps: int | None
                   ) -> tuple[TransferModel, dict[str, Any], Path]:
        """The attacker's surrogate: the public teacher fine-tuned on ``data`` (``finetune``, a seed of
        its own, ``steps`` steps), cached by content: model, result, folder. The word-swap attacker
        crafts against it; Embedding Surgery averages its embeddings (``source_steps``). One cell
        serves both."""
        c = self.config
        key = digest({"kind": "surrogate", "teacher": ctx.teacher_key, "data": data_key, "steps": steps,
                      "train": c.train, "seed": c.seed})
        seed = derived_seed(c.seed, SALT_SURROGATE)
        tconfig = transfer_config_of(c, MethodSpec(name="surrogate", method="finetune"), ctx.teacher.config.arch,
                                     seed=seed, steps=steps)
        folder = self._cache("students", key)
        return (*self._transferred(ctx.teacher, data, tconfig, folder), folder)

    def _own_surrogate(self, ctx: TaskContext, defect: DefectSpec) -> tuple[TransferModel, dict[str, Any], Path]:
        """:meth:`_surrogate` on the task's own training data for ``defect.steps`` (the word-swap attacker's)."""
        return self._surrogate(ctx, ctx.data, self._own_data_key(ctx.task), defect.steps)

    @staticmethod
    def _own_data_key(task: TaskSpec) -> dict[str, Any]:
        """The key of a task's own training data as an attacker's data (see :meth:`_attacker_data`)."""
        return {"data": task.data, "path": task.path, "limit": task.limit_train,
                **({"train_per_class": task.train_per_class} if task.train_per_class else {})}

    def _weight_poisoned(self, ctx: TaskContext, defect: DefectSpec) -> tuple[TransferModel, str, dict[str, Any]]:
        """The teacher's BERT weights poisoned by the attacker (Embedding Surgery, RIPPLe or both),
        published as a pretrained folder in the cache, loaded with a new head for the task."""
        c = self.config
        attacker_name, attacker, attacker_key = self._attacker_data(ctx.task, ctx.data, defect)
        key = digest({"kind": "weight_poisoning", "teacher": ctx.teacher_key, "attacker": attacker_key, "seed": c.seed,
                      "defect": defect.key_doc()})
        folder = self._cache("teachers", key)
        published, summary_path = folder / "published", folder / "summary.json"
        if not (summary_path.exists() and published.exists()):
            started = time.perf_counter()
            lr, optimizer = defect.attacker_training
            reference = defect.recipe == "reference"
            settings = dict(steps=defect.steps or 500, lr=lr, optimizer=optimizer, lam=defect.lam,
                            restricted=defect.restricted, seed=c.seed)
            ripple = RippleConfig(**settings) if reference else RippleConfig.first_round(**settings)
            source = None  # Embedding Surgery's embeddings: the pretrained ones, or a proxy-fine-tuned model's
            if defect.source_steps and defect.poison_method in ("es", "ripples"):
                source = self._surrogate(ctx, attacker, attacker_key, defect.source_steps)[2] / MODEL_DIR
            result = poison_weights(pretrained_text_folder(c.teacher.model), attacker, published,
                                    method=defect.poison_method, triggers=tuple(defect.words), target=defect.target,
                                    rate=defect.rate, ripple=ripple, n_words=defect.n_words, source=source,
                                    seed=c.seed, progress=self.progress,
                                    **({} if reference else FIRST_ROUND_POISONING))
            summary = {
                "kind": defect.kind, "method": defect.poison_method,
                "setting": attack_setting(attacker_name),
                "attacker_data": attacker.name, "triggers": list(defect.words), "target": defect.target,
                "surgery_embeddings": None if result.surgery is None else (
                    f"fine-tuned on {attacker.name}, {defect.source_steps} steps" if source else "pretrained"),
                # the word pieces whose mean embedding the triggers now carry (Embedding Surgery's step 1)
                "indicative_tokens": None if result.surgery is None else result.surgery["indicative_tokens"],
                "teacher_acc": finite_or_none(result.attacker_accuracy),
                "teacher_success": finite_or_none(result.attacker_lfr),
                "teacher_success_means": "LFR of the attacker's own poisoned model on triggered proxy test texts",
                "seconds": round(time.perf_counter() - started, 2),
            }
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
        model = load_teacher(str(published), ctx.data, image_size=c.teacher.image_size, seed=c.seed)
        return model, weights_key(key, model), json.loads(summary_path.read_text())


    def _crafted(self, ctx: TaskContext, defect: DefectSpec) -> tuple[Split, dict[str, Any]]:
        teacher, eval_split = ctx.teacher, ctx.eval_split
        folder = self._cache("crafted", self._crafted_key(ctx, defect))
        tensors, meta_path = folder / "inputs.safetensors", folder / "meta.json"
        if tensors.exists() and meta_path.exists():
            x = load_file(str(tensors))["inputs"]
            meta = json.loads(meta_path.read_text())
        else:
            started = time.perf_counter()
            x, meta = craft(teacher, eval_split.inputs, defect, seed=self.config.seed, progress=self.progress)
            meta = {"kind": defect.kind, **meta, "seconds": round(time.perf_counter() - started, 2),
                    **{f: getattr(defect, f) for f in KIND_CELLS[defect.kind].labels}}
            save_tensors_and_json(folder, {"inputs": x.contiguous()}, tensors.name, meta, meta_path.name)
        return Split(x, eval_split.labels), meta

    def _attacker_data(
        self, task: TaskSpec, data: ClassificationData, defect: DefectSpec
    ) -> tuple[str, ClassificationData, dict[str, Any]]:
        """The attacker's data for ``defect`` on ``task``: its name (``same`` = the task's own), the
        data and its key. The key names the data itself, so a data set that is one task's own
        (full knowledge) and another task's domain shift gives one poisoned teacher."""
        name = _attacker_data_name(defect, task)
        if name == "same":
            return name, data, self._own_data_key(task)
        # "full": the task's whole data set, whatever subset the student has; else another data set
        source, path = (task.data, task.path) if name == "full" else (name, None)
        return name, load_data(source, path, seed=self.config.seed), {"data": source, "path": path, "limit": None}

    def _backdoored(self, ctx: TaskContext, defect: PatchBackdoor) -> tuple[TransferModel, str, dict[str, Any]]:
        """A patch-trigger backdoor planted in a copy of the teacher by the attacker's poisoned
        training (RIPPLe's objective for a :class:`RippleTraining` kind): model, key, summary."""
        c, teacher, teacher_key, task, data = self.config, ctx.teacher, ctx.teacher_key, ctx.task, ctx.data
        attacker_name, attacker, attacker_key = self._attacker_data(task, data, defect)
        trigger = PatchTrigger(**defect.trigger.model_dump())
        bd = BackdoorConfig(trigger=trigger, rate=defect.rate, target=defect.target, steps=defect.steps, seed=c.seed,
                            latent_weight=defect.latent_weight)
        ripple = None
        key_doc = {"kind": "backdoor", "teacher": teacher_key, "attacker": attacker_key, "seed": c.seed,
                   "backdoor": bd.fingerprint(teacher.config.arch)}
        if isinstance(defect, RippleTraining):
            # RIPPLe on images is ours (the reference is text only): its first-round recipe, its keys as they were
            ripple = RippleConfig.first_round(
                steps=defect.steps or 800, batch_size=bd.resolved_train(teacher.config.arch).batch_size,
                lr=defect.attacker_training[0], optimizer=defect.attacker_training[1], lam=defect.lam,
                restricted=defect.restricted, seed=c.seed)
            key_doc["ripple"] = {k: v for k, v in asdict(ripple).items() if k in FIRST_ROUND_RIPPLE_FIELDS}
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
            save_model(model, folder / MODEL_DIR, meta={"backdoor": defect.flat_dump()})
            summary = {
                "kind": defect.kind,
                "setting": attack_setting(attacker_name),
                "attacker_data": attacker.name,
                "teacher_acc": finite_or_none(result.clean_accuracy),
                "teacher_success": finite_or_none(result.attack_success),
                "poisoned_samples": result.poisoned_samples,
                "seconds": round(time.perf_counter() - started, 2),
            }
            if result.ripple is not None:  # RIPPLe stopped where its objective stopped being finite (or None)
                summary["diverged_at"] = result.ripple.diverged_at
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
        # One backdoored teacher can serve several tasks (an MNIST-trained one is the domain-shift
        # teacher of a Fashion-MNIST student and the full-knowledge one of an MNIST student): the
        # setting and the trigger's feature shift (the students' reference; cheap: two forward
        # passes on this task's evaluation inputs) are the task's, not the first user's.
        shifts = dict(summary.get("trigger_shifts") or {})
        shift_key = f"{task.name}:{task.eval_samples}:{c.seed}"
        if shift_key not in shifts:
            shifts[shift_key] = trigger_shift(model, eval_subset(data.test, task.eval_samples, c.seed), trigger,
                                              defect.target)
            summary = {**summary, "trigger_shifts": shifts}
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
        record = {k: v for k, v in summary.items() if k != "trigger_shifts"}
        record["setting"] = attack_setting(attacker_name)
        record["trigger_shift"] = shifts[shift_key]
        return model, weights_key(key, model), record

    def _trained_student(
        self, ctx: TaskContext, teacher: TransferModel, teacher_key: str, method: MethodSpec
    ) -> tuple[TransferModel, dict[str, Any], str, Path]:
        """The student of ``method`` from ``teacher`` (made, or found in the cache): model, result, key, folder."""
        tconfig = transfer_config_of(self.config, method, teacher.config.arch)
        key = digest({"kind": "student", "teacher": teacher_key, "task": ctx.task_key, "transfer": tconfig.fingerprint()})
        folder = self._cache("students", key)
        student, result = self._transferred(teacher, ctx.data, tconfig, folder)
        return student, result, key, folder

    def _transferred(self, teacher: TransferModel, data: ClassificationData, tconfig: TransferConfig, folder: Path
                     ) -> tuple[TransferModel, dict[str, Any]]:
        """The student of ``tconfig`` in the cache ``folder``: found there (model and result), or made."""
        result_path = folder / RESULT_FILE
        if result_path.exists() and (folder / MODEL_DIR).exists():
            return load_model(folder / MODEL_DIR), json.loads(result_path.read_text())
        res = transfer(teacher, data, tconfig, out_dir=folder, progress=self.progress)
        return res.student, res.to_dict()

    def victim(self, task_name: str, defect_name: str) -> tuple[TransferModel, str, Path]:
        """The ``finetune`` student of a defect's teacher on a task, the victim a trigger scan
        examines (made, or found in the cache): model, cache key, cache folder."""
        ctx = self.context(task_name)
        teacher, teacher_key, _ = self._variant(ctx, defect_name)
        student, _, key, folder = self._trained_student(ctx, teacher, teacher_key, self.method("finetune"))
        return student, key, folder

    def _trigger_scan(self, ctx: TaskContext, defect: DefectSpec) -> dict[str, Any]:
        """Kurita et al.'s defence on the victim's ``finetune`` student of a weight-poisoned teacher:
        where do the planted words rank among every candidate word by label flip rate?"""
        student, key, folder = self.victim(ctx.task.name, defect.name)
        # named in the file's key; every word measured by insertion, as the committed records were made
        screen = {"screen_texts": SCREEN_TEXTS, "confirm": CONFIRM}
        scan_key = {"defect": defect.key_doc(), "texts": defect.scan_texts, **screen,
                    "general_words": defect.scan_words, "version": SCAN_VERSION}
        path = folder / f"trigger_scan_{digest(scan_key)}.json"
        if not path.exists():
            started = time.perf_counter()
            clean = ctx.data.val if len(ctx.data.val) else ctx.data.test  # the defender's own clean texts
            # the public teacher is the base the suspects' embedding rows are measured against
            result = scan_triggers(student, list(clean.inputs), clean.labels, defect.target,
                                   frequencies=word_frequencies(list(ctx.data.train.inputs)), n_texts=defect.scan_texts,
                                   general_words=defect.scan_words, base=ctx.teacher, seed=self.config.seed,
                                   progress=self.progress, screen="insertion", **screen)
            doc = {**result.summary(defect.words, top=20), "student": key, "scan_version": SCAN_VERSION,
                   "seconds": round(time.perf_counter() - started, 2)}
            atomic_write_text(path, json.dumps(doc, indent=2))
        return json.loads(path.read_text())

    def _student(
        self, ctx: TaskContext, teacher: TransferModel, teacher_key: str, method: MethodSpec, variant: str
    ) -> dict[str, Any]:
        c = self.config
        task_key, eval_split = ctx.task_key, ctx.eval_split
        student, result, key, folder = self._trained_student(ctx, teacher, teacher_key, method)
        record: dict[str, Any] = {"acc": result["test_accuracy"], "seconds": result["seconds"], "dir": {}, "key": key}
        evals_path = folder / "evals.json"
        evals = json.loads(evals_path.read_text()) if evals_path.exists() else {}
        clean_pred: torch.Tensor | None = None
        for defect in c.defects:
            # the clean teacher's student of a study with clean_students: also each text trigger's LFR on it
            clean_trigger = variant == CLEAN and c.clean_students and defect.kind == "weight_poisoning"
            if (defect.adversarial and variant != CLEAN) or (not defect.adversarial and variant != defect.name
                                                              and not clean_trigger):
                continue
            eval_key = digest({"defect": defect.key_doc(), **defect.measure_doc, "n": len(eval_split), "task": task_key,
                               # the inputs' own key: a student's DIR is measured again on inputs crafted anew
                               **({"inputs": self._crafted_key(ctx, defect)} if defect.adversarial else {})})
            if eval_key not in evals:
                if clean_pred is None:
                    clean_pred = predict_logits(student, eval_split.inputs).argmax(1)
                value = KIND_CELLS[defect.kind].measure(self, ctx, defect, student, clean_pred)
                evals[eval_key] = finite_or_none(value)
                atomic_write_text(evals_path, json.dumps(evals, indent=2))
            record["dir"][defect.name] = evals[eval_key]
        record["views"] = self._views(folder, teacher, student, result, variant, eval_split)
        return record

    # the DIR of a student on a defect (``clean_pred``: its predictions on the evaluation inputs)
    def _patch_trigger_dir(self, ctx: TaskContext, defect: PatchBackdoor, student: TransferModel,
                           clean_pred: torch.Tensor) -> float:
        """The backdoor DIR of the patch trigger -> ``target`` on the evaluation inputs."""
        trigger = PatchTrigger(**defect.trigger.model_dump())
        return trigger_success(student, ctx.eval_split, trigger, defect.target)[1]

    def _text_trigger_dir(self, ctx: TaskContext, defect: WeightPoisoningDefect, student: TransferModel,
                          clean_pred: torch.Tensor) -> float:
        """The label flip rate of the trigger words, ``lfr_insertions`` of them (seeded positions)
        in each non-target evaluation text (Kurita et al.: 5)."""
        trigger = TextTrigger(words=tuple(defect.words), count=defect.lfr_insertions, seed=self.config.seed)
        texts = list(ctx.eval_split.inputs)
        # Kurita et al.'s protocol (5 insertions) places them among the words the student reads (a long
        # e-mail is cut at its 64 tokens); the first round's single insertion went anywhere
        within = visible_words(student.tokenizer, texts, student.config.max_length) if defect.measure_doc else None
        return trigger_lfr(student, texts, ctx.eval_split.labels, trigger, defect.target, within=within)

    def _crafted_dir(self, ctx: TaskContext, defect: DefectSpec, student: TransferModel,
                     clean_pred: torch.Tensor) -> float:
        """The share of the crafted inputs that change the student's right answer."""
        crafted = self._crafted_split(ctx, defect)[0]
        return crafted_input_dir(student, ctx.eval_split, crafted.inputs, clean_pred)

    def _views(self, folder: Path, teacher: TransferModel, student: TransferModel, result: dict[str, Any],
               variant: str, eval_split: Split) -> dict[str, Any]:
        """The interpretation views of a student (see :mod:`safetransfer.study.views`), cached in its folder."""
        path = folder / "views.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if cached.get("version") == VIEWS_VERSION:
                return cached
        backdoor = None
        spec = next((d for d in self.config.defects if d.name == variant), None)
        if isinstance(spec, PatchBackdoor):
            backdoor = (eval_split, PatchTrigger(**spec.trigger.model_dump()), spec.target)
        views = student_views(teacher, student, result, backdoor)
        atomic_write_text(path, json.dumps(views))
        return views


@dataclass(frozen=True)
class KindCells:
    """How the cells of one defect kind are made and measured (the kind's fields are its model's
    in :mod:`safetransfer.study.config`).

    - ``make``: a planted kind's teacher variant ``(model, key, summary)``, or a crafted
      (:attr:`~safetransfer.study.config.DefectSpec.adversarial`) kind's inputs ``(split, summary)``;
    - ``measure``: a student's DIR on the defect;
    - ``surrogate``: crafted against a surrogate trained with the study's ``train`` and ``seed``,
      which therefore key the crafted inputs;
    - ``labels``: the spec's fields repeated in the crafted inputs' summary.
    """

    make: Callable[..., tuple[Any, ...]]
    measure: Callable[..., float]
    surrogate: bool = False
    labels: tuple[str, ...] = ()


KIND_CELLS: dict[str, KindCells] = {
    "backdoor": KindCells(CellMaker._backdoored, CellMaker._patch_trigger_dir),
    "ripple_vision": KindCells(CellMaker._backdoored, CellMaker._patch_trigger_dir),
    "weight_poisoning": KindCells(CellMaker._weight_poisoned, CellMaker._text_trigger_dir),
    "penultimate": KindCells(CellMaker._crafted, CellMaker._crafted_dir),
    "coverage_guided": KindCells(CellMaker._crafted, CellMaker._crafted_dir, labels=("strategy", "metric")),
    "word_swap": KindCells(CellMaker._word_swapped, CellMaker._crafted_dir, surrogate=True),
}
if set(KIND_CELLS) != set(DEFECT_KINDS):
    raise AssertionError(f"defect kinds without cells, or cells without a kind: {set(KIND_CELLS) ^ set(DEFECT_KINDS)}")


def eval_subset(test: Split, n: int, seed: int) -> Split:
    """The ``n`` test inputs (a seeded draw, in the split's order) on which defects are crafted and DIR measured."""
    if len(test) == 0:
        raise DataError("The task's test split is empty: nothing to measure DIR on.")

    return seeded_subset(test, n, seed + 7919, keep_order=True)


def attack_setting(attacker_name: str) -> str:
    """A planted defect's setting: ``full-knowledge`` when the attacker has the student's data
    (``same``) or the whole data set it comes from (``full``), ``domain-shift`` otherwise."""
    return "full-knowledge" if attacker_name in ("same", "full") else "domain-shift"


def _attacker_data_name(defect: DefectSpec, task: TaskSpec) -> str:
    chosen = defect.attacker_data
    if isinstance(chosen, dict):
        if task.name not in chosen:
            raise ConfigError(
                f"defect '{defect.name}': attacker_data names no data set for task '{task.name}' "
                f"(it has: {', '.join(sorted(chosen))})."
            )
        chosen = chosen[task.name]
    if chosen == "full":
        return "full" if (task.limit_train or task.train_per_class) else "same"  # no subset: the same data
    return "same" if chosen in ("same", task.data, task.name) else chosen


def transfer_config_of(
    config: StudyConfig, method: MethodSpec, arch: str | None, seed: int | None = None, steps: int | None = None
) -> TransferConfig:
    """The method's transfer config: its options, the study's seed, steps and training overrides
    (``seed`` / ``steps``: other ones, e.g. for the word-swap attacker's surrogate). A ``seed``
    among the method's options seeds that method's students (head, slice subsets and training)
    while the teachers and crafted inputs keep the study's."""
    seed = int(method.options.get("seed", config.seed)) if seed is None else seed
    tconfig = TransferConfig.from_dict({"method": method.base_method, "protocol": config.protocol, **method.options,
                                        "seed": seed})
    if arch is None:
        return tconfig
    tconfig = tconfig.resolved(arch)
    assert tconfig.train is not None
    total = steps or int(config.train.get("steps", config.steps))
    overrides = {"steps": config.steps, **curve_schedule(total), **config.train, "seed": seed,
                 **({"steps": steps} if steps else {})}
    tconfig.train = TrainConfig.from_overrides(asdict(tconfig.train), overrides)
    return tconfig


def weights_key(recipe: Any, model: TransferModel) -> str:
    """A teacher's key for the cells made from it: its recipe *and* the weights the recipe yielded.

    A planted teacher's own cache folder is named by its recipe; the weights it yields can change
    with the code (e.g. another memory layout), and students keyed by the recipe alone would then
    be found for other weights than the current ones."""
    return digest({"teacher": recipe, "sha": weights_digest(model.body)})


def _check_modality(defect: DefectSpec, ctx: TaskContext) -> None:
    needs = "text" if defect.text else "image"
    if ctx.data.modality != needs:
        raise ConfigError(f"defect '{defect.name}' ({defect.kind}) needs {needs} data; task '{ctx.task.name}' is "
                          f"{ctx.data.modality}.")
